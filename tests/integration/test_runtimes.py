"""The serving runtimes (mmops/runtimes): a model packaged for ONNX Runtime, and for int8, passes the parity gate
on the test split, says so in its model card, and a real `bentoml serve` answers with it as it answers with
eager torch; a runtime that moves the test accuracy is refused at packaging, with the figures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_project
from tests.integration.test_serve import _records, _serving

pytestmark = [pytest.mark.slow, pytest.mark.serve]

DOMAIN = "industrial"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """industrial trained, evaluated and packaged for eager torch, in a project of its own."""
    from mmops import pipeline

    root = make_project(tmp_path_factory.mktemp("runtimes") / "proj", {DOMAIN: "industrial-imu"})
    before = os.environ.get("MMOPS_HOME")
    os.environ["MMOPS_HOME"] = str(root)
    try:
        pipeline.pull_domain(DOMAIN)
        for stage in ("ingest", "label", "validate", "build", "train", "evaluate"):
            pipeline.STAGES[stage](DOMAIN)
        pipeline.package(DOMAIN, build_bento=False)
        yield root
    finally:
        os.environ.pop("MMOPS_HOME") if before is None else os.environ.__setitem__("MMOPS_HOME", before)


def _answers(url: str, records: list[dict]) -> list[dict]:
    resp = httpx.post(f"{url}/predict", json={"records": records}, timeout=120)
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def test_onnx_and_int8_pass_the_gate_and_answer_as_eager_torch_does(packaged: Path) -> None:
    import bentoml

    from mmops import pipeline

    root = packaged
    eager_tag = json.loads((root / "artifacts" / DOMAIN / "package.json").read_text())["model_tag"]
    _, records = _records(root, 16)
    # and records alone that lack a modality: a batch without any gyroscope series (no lengths for it)
    lone = [{"id": f"{r['id']}-accel-only", "inputs": {"accel": r["inputs"]["accel"]}} for r in records[:3]]
    with _serving(root, DOMAIN, "serve-eager.log") as url:
        assert httpx.get(f"{url}/metadata", timeout=30).json()["runtime"] == "torch"
        eager = _answers(url, records) + [a for r in lone for a in _answers(url, [r])]
    for runtime, close in (("onnx", 1e-4), ("int8", 0.05)):
        tag = pipeline.package(DOMAIN, build_bento=False, runtime=runtime).model_tag
        stored = Path(bentoml.models.get(tag).path)
        assert (stored / {"onnx": "model.onnx", "int8": "model.int8.onnx"}[runtime]).stat().st_size > 0
        figures = json.loads((stored / "card.json").read_text())["runtime"]
        assert figures["runtime"] == runtime and abs(figures["compiled"] - figures["eager"]) <= 0.005, figures
        assert 0 <= figures["max_probability_diff"] <= close and figures["n"] == 16, figures
        assert f"{runtime} (ONNX Runtime" in (stored / "card.md").read_text()
        with _serving(root, DOMAIN, f"serve-{runtime}.log") as url:  # package.json now names the new model
            meta = httpx.get(f"{url}/metadata", timeout=30).json()
            assert (meta["runtime"], meta["model_version"]) == (runtime, tag)
            answers = _answers(url, records) + [a for r in lone for a in _answers(url, [r])]
        assert [a["label"] for a in answers] == [a["label"] for a in eager]
        assert [a["missing_modalities"] for a in answers[-3:]] == [["gyro"]] * 3
        for a, e in zip(answers, eager, strict=True):
            assert a["probabilities"] == pytest.approx(e["probabilities"], abs=close)
    # the same checkpoint packaged for eager torch again: the model store's eager model, not a new one
    assert pipeline.package(DOMAIN, build_bento=False).model_tag == eager_tag


def test_a_runtime_that_moves_the_test_accuracy_is_refused_with_the_figures(packaged: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import pipeline
    from mmops.errors import ValidationFailedError
    from mmops.runtimes import parity
    from mmops.runtimes.onnx import OnnxModel

    class Reversed(OnnxModel):
        """An export gone wrong: the classes' logits in reverse order."""

        def forward_with_embeddings(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            logits, embs, present = super().forward_with_embeddings(*args, **kwargs)
            return logits.flip(1), embs, present

    before = (packaged / "artifacts" / DOMAIN / "package.json").read_text()
    monkeypatch.setattr(parity, "OnnxModel", Reversed)
    with pytest.raises(ValidationFailedError, match=r"scores test accuracy [\d.]+ against eager torch's [\d.]+ on 16 "
                                                    r"records .*not packaged"):
        pipeline.package(DOMAIN, build_bento=False, runtime="onnx")
    assert (packaged / "artifacts" / DOMAIN / "package.json").read_text() == before  # nothing packaged
