"""A modality kind from outside mmops: tests/toy_kind.py registers `vector` (nothing in mmops/ knows it), and a
domain of it goes through every stage, each `mmops` command a process of its own, then a real `bentoml serve`
answers for it over HTTP. This is what "adding a kind is one module and one registration" means."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import REPO, run_mmops
from tests.domain_run import STAGES, project_with_pack, run_stages, served

pytestmark = [pytest.mark.serve, pytest.mark.slow]

DIM = 8
PLUGIN = {"MMOPS_PLUGINS": "tests.toy_kind", "PYTHONPATH": str(REPO)}
PACK = {
    "name": "toy",
    "description": "Feature vectors from another system, two classes (a plug-in modality kind)",
    "classes": ["normal", "fault"],
    "modalities": [{"name": "vec", "kind": "vector", "dim": DIM, "required": True}],
}


def _land(root: Path, n: int = 48) -> dict[str, str]:
    rng = np.random.default_rng(0)
    folder = root / "landing" / "toy" / "vec"
    folder.mkdir(parents=True)
    labels = {}
    for i in range(n):
        label = "fault" if i % 2 else "normal"
        vec = rng.normal(2.0 if label == "fault" else 0.0, 0.7, DIM)
        (folder / f"r{i:03d}.json").write_text(json.dumps([round(float(v), 5) for v in vec]))
        labels[f"r{i:03d}"] = label
    (folder / "bad.json").write_text("[1, 2, 3]")  # the wrong length: quarantined by the kind's own check
    (root / "landing" / "toy" / "labels.csv").write_text(
        "sample_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return labels


def test_a_plugin_kind_goes_from_landing_to_a_served_prediction(tmp_path: Path) -> None:
    root = project_with_pack(tmp_path, PACK)
    labels = _land(root)

    without = run_mmops(root, "ingest", "--domain", "toy")
    assert without.returncode != 0 and "unknown modality kind 'vector'" in without.stdout + without.stderr

    results = run_stages(root, "toy", STAGES[:-1], **PLUGIN)
    # the pack declares no users or sources: its model card is incomplete, and packaging refuses it by name
    refused = run_mmops(root, "package", "--domain", "toy", **PLUGIN)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "incomplete" in said and "intended_users" in said, said[-2000:]
    assert "training_data.sources" in said and "approval" not in said, said[-2000:]
    pack = {**PACK, "card": {"intended_users": "whoever tests plug-in kinds",
                             "sources": [{"name": "numpy's normal generator", "license": "BSD-3"}]}}
    (root / "domains" / "toy.yaml").write_text(yaml.safe_dump(pack, sort_keys=False))
    results.update(run_stages(root, "toy", ("evaluate", "package"), **PLUGIN))  # no retraining: a new card
    assert results["ingest"]["quarantined"] == 1 and results["ingest"]["ingested"] == len(labels), results["ingest"]
    assert "vector has 3 values, expected 8" in str(results["ingest"]["reasons"])
    assert results["evaluate"]["macro_f1"] >= 0.8, results["evaluate"]  # the classes lie 2.9 deviations apart

    tag = json.loads((root / "artifacts" / "toy" / "package.json").read_text())["model_tag"]
    with served(root, "toy", tag, **PLUGIN) as url:
        spec = httpx.get(f"{url}/docs.json", timeout=30).json()
        assert spec["components"]["schemas"]["RecordIn"]["properties"]["inputs"]["properties"]["vec"] == {
            "type": "array", "minItems": DIM, "maxItems": DIM,
            "items": {"type": "number", "minimum": -1e6, "maximum": 1e6}}
        records = [{"id": "n", "inputs": {"vec": [0.0] * DIM}}, {"id": "f", "inputs": {"vec": [2.0] * DIM}}]
        answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()] == ["normal", "fault"]
        # the bento carries the complete card: served as JSON, Markdown and HTML, and each answer says what the
        # model scored on its test split with the modalities it got (one here: the card's only subset)
        card = httpx.get(f"{url}/card", timeout=30).json()
        assert card["intended_users"] == "whoever tests plug-in kinds" and card["approval"]["decision"] == "promoted"
        assert [s["modalities"] for s in card["subsets"]] == [["vec"]]
        assert answer.json()[0]["expected"] == {"modalities": ["vec"], "metric": "accuracy", "n": card["subsets"][0][
            "n"], "value": card["subsets"][0]["metrics"]["accuracy"]}
        md = httpx.get(f"{url}/card", params={"format": "markdown"}, timeout=30)
        assert md.headers["content-type"].startswith("text/markdown") and "numpy's normal generator: BSD-3" in md.text
        page = httpx.get(f"{url}/card", params={"format": "html"}, timeout=30)
        assert page.text.startswith("<!doctype html>") and "numpy&#x27;s normal generator" in page.text
        bad = httpx.get(f"{url}/card", params={"format": "pdf"}, timeout=30)
        assert bad.status_code == 400 and "not one of" in bad.json()["error"], bad.text
        wrong = httpx.post(f"{url}/predict", json={"records": [{"inputs": {"vec": [1.0, True]}}]}, timeout=60)
        assert wrong.status_code == 400 and "JSON list of numbers" in wrong.json()["error"], wrong.text
