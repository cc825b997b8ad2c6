"""A real `bentoml serve` over HTTP on loopback, with the model packaged by the pipeline."""

import base64
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mmops import pipeline
from mmops.config import get_settings
from mmops.domains import load_domain
from mmops.serving.client import record_payload, serve_command, wait_ready
from tests.conftest import free_port

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(trained_project: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {**os.environ, "MMOPS_DOMAIN": "industrial", "MMOPS_HOME": str(trained_project)}
    log = (trained_project / "serve-test.log").open("wb")
    proc = subprocess.Popen(serve_command(port), env=env, cwd=trained_project, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=180)
        yield url, trained_project
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _records(root: Path, n: int) -> tuple[list[dict], list[dict]]:
    os.environ["MMOPS_HOME"] = str(root)
    manifest = pipeline.load_manifest("industrial", get_settings())
    rows = manifest.split("test")[:n]
    pack = load_domain("industrial")
    return rows, [record_payload(pack, root / "data", r) for r in rows]


def test_predict_on_held_out_records(service: tuple[str, Path], use_project: Path) -> None:
    url, root = service
    rows, records = _records(root, 8)
    resp = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert [a["id"] for a in answers] == [r["key"] for r in rows]
    for a in answers:
        assert a["label"] in ("standing", "walking", "running", "badminton")
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert a["model_version"].startswith("mmops-industrial:")
        assert a["missing_modalities"] == []
    log = (root / "var" / "predictions" / "industrial.jsonl").read_text().splitlines()
    assert len(log) >= 8 and "accel.x_mean" in log[-1]


def test_a_record_may_lack_a_modality(service: tuple[str, Path], use_project: Path) -> None:
    url, root = service
    _, records = _records(root, 1)
    only_accel = {"id": "partial", "inputs": {"accel": records[0]["inputs"]["accel"]}}
    resp = httpx.post(f"{url}/predict", json={"records": [only_accel]}, timeout=60)
    assert resp.status_code == 200
    assert resp.json()[0]["missing_modalities"] == ["gyro"]


@pytest.mark.parametrize("inputs,message", [
    ({"accel": [[0.0, 1.0]] * 10}, "every row needs 3 values"),
    ({"accel": [[0.0, 1.0, float("nan")]] * 10}, None),
    ({"sonar": "ping"}, "unknown modality"),
    ({"accel": "not rows"}, "expected a list"),
    ({}, "no inputs"),
])
def test_client_mistakes_are_4xx(service: tuple[str, Path], inputs: dict, message: str | None) -> None:
    url, _ = service
    body = {"records": [{"id": "bad", "inputs": inputs}]}
    if message is None:  # NaN is not valid JSON: send it raw the way a sloppy client would
        resp = httpx.post(f"{url}/predict", content=b'{"records": [{"inputs": {"accel": [[0, 1, NaN], [1, 2, 3]]}}]}',
                          headers={"content-type": "application/json"}, timeout=30)
    else:
        resp = httpx.post(f"{url}/predict", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    if message:
        assert message in resp.text


def test_monitor_reads_the_prediction_log(service: tuple[str, Path], use_project: Path) -> None:
    url, root = service
    _, records = _records(root, 16)
    assert httpx.post(f"{url}/predict", json={"records": records}, timeout=60).status_code == 200
    result = pipeline.monitor("industrial", "log")
    assert result["n_current"] >= 16 and 0.0 <= result["drift_share"] <= 1.0
    html = Path(result["html"]).read_text()
    assert "accel.x_mean" in html and len(html) > 100_000  # the per-column drift widgets are rendered


def test_bad_base64_image_is_400(trained_project: Path) -> None:
    """The security model over the in-process schema check (the same function the service calls)."""
    from mmops.errors import BadInputError
    from mmops.serving.schemas import decode_record

    pack = load_domain("security")
    with pytest.raises(BadInputError, match="not valid base64"):
        decode_record(pack, {"inputs": {"camera": "!!!"}})
    with pytest.raises(BadInputError, match="not a readable image"):
        decode_record(pack, {"inputs": {"camera": base64.b64encode(b"GIF89a-no").decode()}})


def test_concurrent_clients_get_their_own_answers(service: tuple[str, Path], use_project: Path) -> None:
    """Adaptive batching merges requests; every client must still get exactly its own records back."""
    import concurrent.futures as cf

    url, root = service
    _, records = _records(root, 16)

    def call(i: int) -> str:
        batch = [dict(records[(i + j) % len(records)], id=f"{i}-{j}") for j in range(1 + i % 4)]
        try:  # generous: a shared 2-core CI machine serves 16 clients at once
            resp = httpx.post(f"{url}/predict", json={"records": batch}, timeout=180)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        return "ok" if [a["id"] for a in resp.json()] == [b["id"] for b in batch] else "other answers"

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(96)))
    bad = [r for r in results if r != "ok"]
    assert not bad, f"{len(bad)} of {len(results)} requests failed: {sorted(set(bad))[:5]}"
