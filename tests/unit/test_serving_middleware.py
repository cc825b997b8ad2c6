"""The service's ASGI middleware (bearer auth, body limit) and its off-request-path prediction log, in process."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmops.serving.middleware import ASGIApp, BearerAuth, BodyLimit, Receive, Scope, Send
from mmops.serving.predlog import PredictionLog


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the number of body bytes it received."""
    size, more = 0, True
    while more:
        msg = await receive()
        size += len(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = json.dumps({"path": scope["path"], "bytes": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call(app: ASGIApp, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def test_no_token_configured_lets_everything_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMOPS_API_TOKEN", raising=False)
    assert call(BearerAuth(echo), "POST", "/predict", content=b"{}").status_code == 200


@pytest.mark.parametrize("header,status", [
    (None, 401), ("Bearer wrong", 401), ("tok-123", 401), ("Basic tok-123", 401), ("Bearer tok-123", 200),
    ("bearer  tok-123 ", 200),
])
def test_bearer_token(header: str | None, status: int) -> None:
    app = BearerAuth(echo, token="tok-123")
    resp = call(app, "POST", "/predict", content=b"{}", headers={"Authorization": header} if header else {})
    assert resp.status_code == status
    if status == 401:
        assert "bearer token" in resp.json()["error"] and "tok-123" not in resp.text


def test_two_tokens_are_accepted_while_one_is_rotated_out() -> None:
    """MMOPS_API_TOKEN="new old" during a rotation: both work; then "new": the old one is refused."""
    during = BearerAuth(echo, token="tok-new  tok-old")
    after = BearerAuth(echo, token="tok-new")
    for token, during_status, after_status in (("tok-new", 200, 200), ("tok-old", 200, 401), ("tok", 401, 401),
                                               ("tok-new tok-old", 401, 401)):
        headers = {"Authorization": f"Bearer {token}"}
        assert call(during, "POST", "/predict", content=b"{}", headers=headers).status_code == during_status, token
        assert call(after, "POST", "/predict", content=b"{}", headers=headers).status_code == after_status, token
    assert "tok-old" not in repr(vars(during))


def test_probes_stay_open_and_the_token_is_not_kept() -> None:
    app = BearerAuth(echo, token="tok-123")
    for path in ("/readyz", "/livez", "/healthz", "/metrics"):
        assert call(app, "GET", path).status_code == 200
    assert call(app, "GET", "/metadata").status_code == 401
    assert "tok-123" not in repr(vars(app))


def stream(*parts: bytes) -> AsyncIterator[bytes]:
    """A chunked body (no Content-Length)."""
    async def gen() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    return gen()


def test_body_limit_declared_and_streamed() -> None:
    app = BodyLimit(echo, max_bytes=1000)
    assert call(app, "POST", "/predict", content=b"x" * 1000).json()["bytes"] == 1000
    over = call(app, "POST", "/predict", content=b"x" * 1001)
    assert over.status_code == 413 and "1001 bytes" in over.json()["error"]
    assert call(app, "POST", "/predict", content=stream(b"x" * 600, b"x" * 600)).status_code == 413
    ok = call(app, "POST", "/predict", content=stream(b"x" * 400, b"x" * 500))
    assert ok.status_code == 200 and ok.json()["bytes"] == 900  # replayed whole to the app


def test_prediction_log_writes_off_the_caller_and_counts_what_it_drops(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    log = PredictionLog(tmp_path / "p" / "d.jsonl")
    for i in range(50):
        log.put([json.dumps({"i": i, "j": j}) for j in range(3)])
    log.flush()
    lines = (tmp_path / "p" / "d.jsonl").read_text().splitlines()
    assert [json.loads(x)["i"] for x in lines] == [i for i in range(50) for _ in range(3)]  # in order, all
    assert log.stats() == {"written": 150, "dropped": 0, "failed": 0, "pending": 0}
    # the first request's lines woke the writer; the rest arrived while it lingered, and went out in one write
    assert log.appends <= 3, log.appends
    log.close()

    stalled = PredictionLog(tmp_path / "q.jsonl", max_pending=2)
    stalled.close()  # the writer is gone: nothing drains the queue any more
    with caplog.at_level(logging.WARNING, "mmops.serving"):
        for _ in range(5):
            stalled.put(["{}"])
    assert stalled.stats()["dropped"] == 3 and stalled.stats()["pending"] == 2
    assert "3 lines dropped" in caplog.text or "1 lines dropped" in caplog.text


def test_a_torn_last_line_costs_only_itself(tmp_path: Path) -> None:
    """A writer killed mid-append leaves a line without its newline; the next one ends it before appending."""
    target = tmp_path / "d.jsonl"
    target.write_text('{"i": 0}\n{"i": 1, "emb')  # the torn write of a killed service
    log = PredictionLog(target)
    log.put([json.dumps({"i": 2})])
    log.flush()
    log.close()
    lines = target.read_text().splitlines()
    assert lines == ['{"i": 0}', '{"i": 1, "emb', '{"i": 2}'] and log.torn == 1
    again = PredictionLog(target)  # a clean end: nothing to mend
    again.close()
    assert again.torn == 0 and target.read_text().splitlines() == lines


def test_prediction_log_survives_an_unwritable_file(tmp_path: Path) -> None:
    target = tmp_path / "d.jsonl"
    log = PredictionLog(target)
    target.mkdir()  # appending to a directory fails with OSError
    log.put(["{}", "{}"])
    log.flush()
    assert log.stats()["failed"] == 2 and log._thread.is_alive()
    log.close()


def test_warnings_say_what_the_model_did_not_see_as_trained() -> None:
    from mmops.domains import load_domain
    from mmops.serving.schemas import RecordIn, decode_record, record_warnings

    pack = load_domain("medical")
    ecg = pack.modality("ecg")
    rows = [[0.1 * i] * len(ecg.channels) for i in range(ecg.length // 2)]  # type: ignore[union-attr]
    text = "Seen by Dr. Smith on 03/04/2021. Heart size normal, lungs are clear, no effusion."
    rec = RecordIn.model_validate({"id": "r", "inputs": {"report": text, "ecg": rows}})
    values, _ = decode_record(pack, rec)
    warnings = record_warnings(pack, rec, values)
    assert "Smith" not in values["report"]
    assert warnings == ["missing modalities ['fundus']: predicted from ['report', 'ecg'] alone",
                        "report: PHI redacted before the model and the log saw the text",
                        f"ecg: {len(rows)} samples, the model reads {ecg.length} (zero-padded and masked)"]  # type: ignore[union-attr]
    clean = RecordIn.model_validate({"inputs": {"report": "Heart size normal, lungs are clear, no effusion seen."}})
    assert record_warnings(pack, clean, decode_record(pack, clean)[0]) == [
        "missing modalities ['ecg', 'fundus']: predicted from ['report'] alone"]


def test_prediction_log_serializes_in_its_thread_and_counts_bad_entries(tmp_path: Path) -> None:
    import threading

    threads: set[str] = set()

    def serialize(entry: object) -> str:
        threads.add(threading.current_thread().name)
        return json.dumps({"v": 1 / entry})  # type: ignore[operator]

    log = PredictionLog(tmp_path / "d.jsonl", serialize)
    log.put([1, 2, 0, 4])  # 1/0 fails: that entry is counted, the others are written
    log.flush()
    assert [json.loads(x)["v"] for x in (tmp_path / "d.jsonl").read_text().splitlines()] == [1.0, 0.5, 0.25]
    assert log.stats()["failed"] == 1 and threads == {"mmops-prediction-log"}
    log.close()


def test_prediction_log_prepares_each_batch_at_once_and_bounds_what_it_holds(tmp_path: Path) -> None:
    """The writer hands everything that arrived to `prepare` in one call (the inputs' statistics, computed
    over a batch); entries are dropped, counted, once the inputs waiting exceed the byte bound."""
    batches: list[int] = []

    def prepare(items: list[int]) -> list[int]:
        batches.append(len(items))
        if 13 in items:
            raise ValueError("a bug in a statistic")
        return [i * 10 for i in items]

    log = PredictionLog(tmp_path / "d.jsonl", lambda e: json.dumps({"v": e}), prepare=prepare, linger=0.2)
    log.put([1])
    time.sleep(0.05)  # the writer took [1] and lingers: the next two puts arrive meanwhile
    log.put([2, 3])
    log.put([4])
    log.flush()
    assert [json.loads(x)["v"] for x in (tmp_path / "d.jsonl").read_text().splitlines()] == [10, 20, 30, 40]
    assert batches == [1, 3]
    log.put([13, 14])  # prepare fails: the batch's lines are counted as failed, the writer goes on
    log.flush()
    log.put([5])
    log.flush()
    assert log.stats()["failed"] == 2 and log.stats()["written"] == 5 and log._thread.is_alive()
    log.close()

    held = PredictionLog(tmp_path / "q.jsonl", max_pending_bytes=1000)
    held.close()  # nothing drains the queue any more
    held.put(["{}"], nbytes=600)
    held.put(["{}"], nbytes=300)
    held.put(["{}", "{}"], nbytes=200)  # 1100 bytes: over
    assert held.stats()["dropped"] == 2 and held.stats()["pending"] == 2
    alone = PredictionLog(tmp_path / "r.jsonl", max_pending_bytes=1000)
    alone.close()
    alone.put(["{}"], nbytes=5000)  # into an empty queue it goes, whatever its size (never refuse all records)
    assert alone.stats()["dropped"] == 0 and alone.stats()["pending"] == 1


def test_log_statistics_over_a_batch_equal_each_records_own(tmp_path: Path) -> None:
    """with_stats computes a modality's statistics over all the batch's records at once (series of one length
    stacked); each record's figures are those it has alone, and a modality a record lacks is not in its line."""
    import numpy as np

    from mmops.domains import load_domain
    from mmops.modalities import summary_stats
    from mmops.serving.predlog import Entry, read_line, to_line, with_stats

    pack = load_domain("industrial")
    accel = pack.modality("accel")
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(n, len(accel.channels))).astype(np.float32) for n in (64, 64, 40, 64)]  # type: ignore[union-attr]
    series[1][:20] = series[1][0]  # a stuck stretch
    items = [Entry(1.0, f"r{i}", "v1", "a" * 64, {}, "x", [0.25, 0.75],
                   {"accel": np.round(rng.normal(size=8).astype(np.float32), 4)}, inputs={"accel": s})
             for i, s in enumerate(series)]
    items.append(Entry(2.0, "r4", "v1", "a" * 64, {}, "x", [0.5, 0.5], {}, inputs={}))
    entries = with_stats(pack, items)
    for entry, s in zip(entries, series, strict=False):
        assert entry.stats == {"accel": summary_stats(s, accel)}
    assert entries[-1].stats == {}
    back = read_line(to_line(entries[0]))
    assert back is not None and back.features == {f"accel.{k}": v for k, v in entries[0].stats["accel"].items()}
    emb = back.embeddings["accel"]  # float32, rounded: written as its shortest decimals
    assert emb == [round(float(x), 4) for x in items[0].embeddings["accel"]] and len(emb) == 8
