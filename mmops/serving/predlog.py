"""The prediction log: its format, owned here for the service that writes it and the monitor that reads it
(the files' names, one line's fields: `Entry` written by `to_line`, read back by `read_line`), and its
writer, which keeps it off the request path.

A service appends to `<domain>.jsonl`, or to `<domain>@<replica>.jsonl` when MMOPS_REPLICA names it;
`mmops monitor` reads them all as one stream. One line per answered record: `ts`, `record_id`,
`model_version`, `checkpoint_sha256`, `features` (the input's statistics, `<modality>.<stat>`), `prediction`,
`probabilities`, `embeddings` (per modality).

A request hands what it answered (`Entry`, with the decoded inputs, not yet their statistics) to a bounded queue
and returns; one daemon thread computes the inputs' statistics for everything that arrived at once
(`with_stats`: one numpy reduction over the sensor series of one length, instead of one per record), turns
them into JSON lines (`serialize`, orjson) and appends them to the file in batches, at most every LINGER_S:
none of it runs on the event loop. The queue is bounded in entries and in the bytes of the inputs it holds
(MAX_PENDING_BYTES: images wait there too). When the writer cannot keep up and the queue is full, lines are
dropped rather than slowing every request, and never silently: the count is kept (`/metadata` shows it) and a
warning is logged each time the count crosses a power of two. `close()` drains the queue (the service calls
it on shutdown).

A process killed mid-append (kill -9, a crash) can leave a last line without its newline. The next writer
first ends that torn line, so the torn entry stays one unreadable line (the monitor counts and skips it)
instead of swallowing the first line appended after it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

log = logging.getLogger("mmops.serving")

_STOP = object()
# The writer appends at most this often, whatever arrived meanwhile in one write. Each wake-up hands the
# interpreter lock to the writer and back, and on a busy machine the event loop's thread waits to be scheduled
# again: with the log on, the lock sat idle 5 % more of the time (py-spy --gil, security at 32 clients).
# Waking for every request cost the industrial model 0.80x of its log-off throughput; every 50 ms, security
# 0.85x-0.91x; every 200 ms, 0.85x-0.96x (ad hoc, 2 CPUs, 2026-12-07).
LINGER_S = 0.2
MAX_PENDING_BYTES = 256 * 2**20  # of decoded inputs waiting for the writer


def log_name(domain: str, worker: int | None = None) -> str:
    """`<domain>.jsonl`, or `<domain>@<replica>.jsonl` when MMOPS_REPLICA names this replica (a pod name):
    replicas sharing a volume each append to their own file; `mmops monitor` reads them all. `worker`: one
    of a service's several workers (MMOPS_SERVE_WORKERS), which also appends to a file of its own
    (`<domain>@w2.jsonl`, `<domain>@<replica>-w2.jsonl`)."""
    replica = re.sub(r"[^A-Za-z0-9_.-]", "_", os.environ.get("MMOPS_REPLICA", "").strip())[:128]
    replica = replica if replica.strip("._") else ""
    if worker is not None:
        replica = f"{replica}-w{worker}" if replica else f"w{worker}"
    return f"{domain}@{replica}.jsonl" if replica else f"{domain}.jsonl"


def log_files(log_dir: Path, domain: str) -> list[Path]:
    """A domain's prediction logs: `<domain>.jsonl` of a single service, and `<domain>@<replica>.jsonl` of
    each replica of a scaled-out one (on a shared volume: one writer per file)."""
    return [p for p in [log_dir / f"{domain}.jsonl", *sorted(log_dir.glob(f"{domain}@*.jsonl"))] if p.is_file()]


def flatten_features(per_modality: dict[str, dict[str, float]]) -> dict[str, float]:
    """An input's statistics per modality as the log's (and the reference's) feature columns."""
    return {f"{m}.{k}": float(v) for m, stats in sorted(per_modality.items()) for k, v in sorted(stats.items())}


class Entry(NamedTuple):
    """One answered record, as the service hands it to the writer (serialized off the request path). The
    service hands over the decoded `inputs` with empty `stats`; the writer computes them (`with_stats`)."""

    ts: float  # epoch seconds
    record_id: str | None
    model_version: str
    checkpoint_sha256: str
    stats: dict[str, dict[str, float]]  # the input's statistics per modality
    prediction: str
    probabilities: list[float]
    embeddings: dict[str, Any]  # per modality: a list of numbers, or the model's float32 array
    outputs: dict[str, float] | None = None  # the task's numbers monitoring watches (an anomaly score)
    inputs: dict[str, Any] | None = None  # modality -> decoded value, until its statistics are computed


def to_line(entry: Entry) -> str:
    """One answered record as a log line (without its newline). Embeddings may be numpy arrays (the model's
    float32, rounded): orjson writes them as their shortest decimals."""
    line = {"ts": entry.ts, "record_id": entry.record_id, "model_version": entry.model_version,
            "checkpoint_sha256": entry.checkpoint_sha256, "features": flatten_features(entry.stats),
            "prediction": entry.prediction, "probabilities": [round(p, 5) for p in entry.probabilities],
            "embeddings": entry.embeddings}
    if entry.outputs:
        line["outputs"] = entry.outputs
    return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")


def held_bytes(inputs: dict[str, Any]) -> int:
    """What an entry's decoded inputs hold in memory, about (arrays' bytes, texts' length)."""
    return sum(int(getattr(v, "nbytes", 0)) or (len(v) if isinstance(v, str | bytes) else 0) for v in inputs.values())


def with_stats(pack: Any, items: list[Entry]) -> list[Entry]:
    """The writer's step for `pack`'s domain: each entry's `stats` from its `inputs` (then dropped), each
    modality's over all the entries that have it, at once (ModalityKind.stats_many)."""
    from mmops.modalities import kind_of

    inputs = [a.inputs or {} for a in items]
    stats: list[dict[str, dict[str, float]]] = [{} for _ in items]
    for name in pack.modality_names:
        idx = [i for i, given in enumerate(inputs) if name in given]
        if idx:
            spec = pack.modality(name)
            for i, st in zip(idx, kind_of(spec).stats_many([inputs[i][name] for i in idx], spec), strict=True):
                stats[i][name] = st
    return [a._replace(stats=st, inputs=None) for a, st in zip(items, stats, strict=True)]


class Logged(NamedTuple):
    """What the monitor reads back from a line. Fields a line lacks (lines of older versions, hand-written
    ones) are None or empty."""

    ts: float | None
    record_id: str | None
    checkpoint_sha256: str | None
    features: dict[str, Any]  # `<modality>.<stat>` -> value
    prediction: str | None
    embeddings: dict[str, Any]  # modality -> vector
    outputs: dict[str, float]  # the task's numbers (an anomaly score); empty for a classifier
    confidence: float | None = None  # the answered class's probability (a classifier's; mmops.estimation)


def _confidence(probabilities: Any) -> float | None:
    """The probability of the answered class (the largest), or None where there are none (an anomaly
    detector's answers) or they are not numbers."""
    if not isinstance(probabilities, list) or len(probabilities) < 2:
        return None
    if not all(isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) for p in probabilities):
        return None
    return float(max(probabilities))


def read_line(line: str) -> Logged | None:
    """A log line read back, or None when it is not one (torn by a killed writer, corrupt, or of another
    shape): the caller counts it and goes on."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    features, embeddings = entry.get("features", {}), entry.get("embeddings") or {}
    if not isinstance(features, dict) or not isinstance(embeddings, dict):
        return None
    ts, rid, sha, pred = (entry.get(k) for k in ("ts", "record_id", "checkpoint_sha256", "prediction"))
    outputs = entry.get("outputs") or {}
    outputs = {k: v for k, v in outputs.items() if isinstance(v, int | float) and not isinstance(v, bool)} if (
        isinstance(outputs, dict)) else {}
    return Logged(float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None,
                  rid if isinstance(rid, str) else None, sha if isinstance(sha, str) and sha else None,
                  features, None if pred is None else str(pred), embeddings, outputs,
                  _confidence(entry.get("probabilities")))


class PredictionLog:
    """`prepare` (optional): what the writer does to each batch of entries before serializing them one by one
    (`with_stats`)."""

    def __init__(self, path: Path, serialize: Callable[[Any], str] = str, max_pending: int = 100_000,
                 linger: float = LINGER_S, prepare: Callable[[list[Any]], list[Any]] | None = None,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.path = path
        self.linger = linger
        self.serialize, self.prepare = serialize, prepare
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._q: queue.Queue[object] = queue.Queue(max_pending)
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0  # of the puts in the queue
        self._bytes_lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.appends = 0  # writes to the file (each of everything that arrived since the last)
        self._warn_at = 1
        self.torn = self._end_torn_line()
        self._thread = threading.Thread(target=self._run, name="mmops-prediction-log", daemon=True)
        self._thread.start()

    def _end_torn_line(self) -> int:
        try:
            with self.path.open("rb+") as fh:
                if fh.seek(0, 2) == 0:
                    return 0
                fh.seek(-1, 2)
                if fh.read(1) == b"\n":
                    return 0
                fh.write(b"\n")
        except FileNotFoundError:
            return 0
        except OSError as exc:  # unwritable: the writer will say so on its first append
            log.error("cannot check the end of %s: %s", self.path, exc)
            return 0
        log.warning("%s ended in a torn line (a writer was killed mid-append): ended it; it stays unreadable",
                    self.path)
        return 1

    def put(self, entries: list[Any], nbytes: int = 0) -> None:
        """Never blocks: a full queue (in entries, or in `nbytes`, what the entries hold) drops (and counts)
        the entries."""
        try:
            with self._bytes_lock:
                if self._pending_bytes + nbytes > self.max_pending_bytes and self._pending_bytes:
                    raise queue.Full
                self._q.put_nowait((entries, nbytes))
                self._pending_bytes += nbytes
        except queue.Full:
            self.dropped += len(entries)
            if self.dropped >= self._warn_at:
                log.warning("prediction log writer behind: %d lines dropped so far", self.dropped)
                while self._warn_at <= self.dropped:
                    self._warn_at *= 2

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            while True:  # everything already waiting goes out in one write
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            puts = cast(list[tuple[list[Any], int]], [item for item in batch if item is not _STOP])
            entries = [e for item, _ in puts for e in item]
            with self._bytes_lock:
                self._pending_bytes -= sum(n for _, n in puts)
            if self.prepare is not None and entries:
                try:
                    entries = self.prepare(entries)
                except Exception as exc:  # a bug in a statistic costs these lines, counted and said, not the writer
                    self.failed += len(entries)
                    log.error("cannot prepare %d prediction log entries: %s", len(entries), exc)
                    entries = []
            lines = []
            for entry in entries:
                try:
                    lines.append(self.serialize(entry))
                except Exception as exc:  # one bad entry costs its line, counted, not the writer
                    self.failed += 1
                    log.error("cannot serialize a prediction log entry: %s", exc)
            if lines:
                try:
                    with self.path.open("a", encoding="utf-8") as fh:
                        fh.write("\n".join(lines) + "\n")
                    self.written += len(lines)
                    self.appends += 1
                except OSError as exc:  # a full disk must not take the service down: count and say so
                    self.failed += len(lines)
                    log.error("cannot append %d lines to %s: %s", len(lines), self.path, exc)
            for _ in batch:
                self._q.task_done()
            if stop:
                return
            time.sleep(self.linger)  # what arrives meanwhile goes out in the next write

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is on disk (tests, shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._q.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                "pending": self._q.qsize()}
