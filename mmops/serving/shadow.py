"""Shadow: a challenger beside the champion on mirrored traffic, with Seldon Core 2's mirror semantics: every
answer comes from the champion; the challenger sees the same records, its answers are logged beside the
champion's and never returned, and its failures stay here (counted and logged, never a client's error).

The challenger runs in a process of its own (`python -m mmops.serving.shadow`), at the lowest CPU priority
(SCHED_IDLE, else nice 19), on one torch thread, computing at most `duty` of the time (DUTY): on a busy
machine the champion's calls come first, and the two share no interpreter lock (a low-priority thread in the
model service would hold the champion up whenever it held the GIL). The model service hands each answered
batch (the records as they came, the champion's labels and time) to `Shadow.offer`, which returns at once; a
thread writes it to the process as a JSON line. The queue is bounded: when the challenger cannot keep up,
batches are dropped, counted and said in the log (`dropped_before` on the next line), never queued without
bound.

The shadow log's format is owned here: `<prediction log dir>/shadow/<domain>[@<replica>].jsonl`, one line per
record: `ts`, `record_id`, `champion` and `shadow` (model versions), `champion_label`, `shadow_label` (None
where the challenger failed, with `error`), `champion_ms` and `shadow_ms` (the batch's model time per
record), `dropped_before`. `report` reads it back: agreement, latencies and, for records whose ground truth
came in, both models' accuracies. Reference: docs/serving.md (Releasing a challenger).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mmops import faults
from mmops.serving.predlog import PredictionLog, log_files, log_name

log = logging.getLogger("mmops.serving")

CAPACITY = 8  # batches waiting for the challenger; beyond it a mirrored batch is dropped (and counted)
# the share of the time the shadow process may compute: on a machine whose CPUs the champion keeps busy
# (or whose two vCPUs are one core's hyperthreads, where even an idle-priority process slows its sibling),
# what bounds the shadow's cost to the champion's clients; beyond it, mirrored batches are dropped (counted)
DUTY = 0.25
LOADER = "mmops.serving.store:labeler"  # tag -> (model version, records -> labels), in the shadow process


def shadow_dir(prediction_log_dir: Path) -> Path:
    return prediction_log_dir / "shadow"


class Mirrored(NamedTuple):
    ts: float
    records: list[dict[str, Any]]  # as the client sent them (validated): JSON to the shadow process
    champion: str
    champion_labels: list[str | None]
    champion_ms: float  # the champion's model time per record in this batch

    @property
    def ids(self) -> list[str | None]:
        return [r.get("id") for r in self.records]


class Shadow:
    """The challenger `tag`, in its own process, on mirrored batches; its log in `log_dir`/shadow/."""

    def __init__(self, tag: str, log_dir: Path, domain: str, duty: float = DUTY, loader: str = LOADER,
                 timeout: float = 300.0) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"duty {duty}: the share of the time the shadow may compute, in (0, 1]")
        path = shadow_dir(log_dir) / log_name(domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.errors = path.with_suffix(".stderr")  # the process's own messages (a failed load says why here)
        with self.errors.open("a") as err:
            self._proc = subprocess.Popen([sys.executable, "-m", "mmops.serving.shadow", tag, str(path), loader,
                                           str(duty)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                          bufsize=1)
        ready = _first_line(self._proc, timeout, self.errors)
        self.version = str(ready["ready"])
        self._q: queue.Queue[Mirrored | None] = queue.Queue(CAPACITY)
        self.mirrored = self.failed = self.dropped = 0
        self._dropped_unsaid = 0
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._write, name="mmops-shadow-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="mmops-shadow-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def offer(self, batch: Mirrored) -> None:
        """Hand a batch over without waiting; a full queue drops it (counted)."""
        try:
            self._q.put_nowait(batch)
        except queue.Full:
            with self._lock:
                self.dropped += len(batch.ids)
                self._dropped_unsaid += len(batch.ids)

    def _write(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (batch := self._q.get()) is not None:
                with self._lock:
                    dropped, self._dropped_unsaid = self._dropped_unsaid, 0
                stdin.write(json.dumps({**batch._asdict(), "dropped_before": dropped}) + "\n")
                stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:  # the process died: said, and nothing more sent
            log.error("the shadow process stopped taking batches: %s", exc)
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                counts = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.mirrored += int(counts.get("mirrored", 0))
                self.failed += int(counts.get("failed", 0))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"shadow": self.version, "mirrored": self.mirrored, "failed": self.failed,
                    "dropped": self.dropped, "pending": self._q.qsize(), "running": self._proc.poll() is None}

    def close(self, timeout: float = 30.0) -> dict[str, Any]:
        """Finish what is queued (within `timeout`), stop the process, its log flushed; the final counts."""
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._writer.join(timeout)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)
        return self.stats()


def _first_line(proc: subprocess.Popen, timeout: float, errors: Path) -> dict[str, Any]:
    """The shadow process's `{"ready": version}`, or its failure to load as an error."""
    from mmops.errors import MmopsError

    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    try:
        return dict(json.loads(result[0]))
    except (IndexError, ValueError, TypeError):
        proc.kill()
        proc.wait()
        said = errors.read_text(errors="replace").strip().splitlines() if errors.exists() else []
        raise MmopsError(f"the shadow model did not load: {said[-1] if said else 'no answer'} ({errors})") from None


def _lowest_priority() -> None:
    """This process runs only on CPU time nothing else wants: Linux's SCHED_IDLE where it is allowed (a nice-19
    process still takes about 1.5 % of a core from each busy champion thread, and preempts it on wakeup),
    else nice 19."""
    os.nice(19)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.warning("shadow at nice 19 only (no SCHED_IDLE: %s)", exc)


def _serve(loader: str, tag: str, path: Path, duty: float = 1.0) -> None:
    """The shadow process: load `tag`, then answer batches from stdin until it closes."""
    _lowest_priority()
    module, _, name = loader.partition(":")
    version, label = getattr(importlib.import_module(module), name)(tag)
    shadow_log = PredictionLog(path, json.dumps)
    print(json.dumps({"ready": version}), flush=True)
    for line in sys.stdin:
        sent = json.loads(line)
        dropped = sent.pop("dropped_before", 0)
        batch = Mirrored(**sent)
        started, error = time.perf_counter(), None
        try:
            faults.point("serve.shadow")
            labels = label(batch.records)
        except Exception as exc:  # the challenger's failure is this log's to say, never a client's
            labels, error = [None] * len(batch.ids), f"{type(exc).__name__}: {exc}"[:300]
        per_record = (time.perf_counter() - started) * 1000 / max(len(batch.ids), 1)
        lines = [{"ts": batch.ts, "record_id": rid, "champion": batch.champion, "shadow": version,
                  "champion_label": cl, "shadow_label": sl, "champion_ms": round(batch.champion_ms, 3),
                  "shadow_ms": round(per_record, 3), **({"error": error} if error else {})}
                 for rid, cl, sl in zip(batch.ids, batch.champion_labels, labels, strict=True)]
        lines[0]["dropped_before"] = dropped
        shadow_log.put(lines)
        print(json.dumps({"mirrored": len(lines), "failed": len(lines) if error else 0}), flush=True)
        if duty < 1:  # rest in proportion: computing at most `duty` of the time (batches meanwhile are dropped)
            time.sleep(per_record * len(lines) / 1000 * (1 - duty) / duty)
    shadow_log.close()


def report(prediction_log_dir: Path, domain: str, truth: dict[str, str], since: float | None = None,
           shadow: str | None = None) -> dict[str, Any]:
    """What the shadow logs say (of one challenger version, default the latest logged): records mirrored,
    agreement with the champion, both models' time per record, failures, drops and, on records whose ground
    truth came in, both accuracies."""
    from mmops.errors import NotFoundError

    rows, unreadable = [], 0
    for path in log_files(shadow_dir(prediction_log_dir), domain):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                if since is None or float(row["ts"]) >= since:
                    rows.append(row)
            except (ValueError, KeyError, TypeError):
                unreadable += 1
    shadow = shadow or (rows[-1]["shadow"] if rows else None)
    rows = [r for r in rows if r.get("shadow") == shadow]
    if not rows:
        raise NotFoundError(f"no shadow traffic logged for {domain}" + (f" by {shadow}" if shadow else "") +
                            "; start one with `mmops shadow start`")
    answered = [r for r in rows if r.get("shadow_label") is not None]
    labeled = [r for r in answered if r.get("record_id") in truth]

    def accuracy(key: str) -> float | None:
        return round(float(np.mean([r[key] == truth[r["record_id"]] for r in labeled])), 4) if labeled else None

    def ms(key: str, q: float, of: list[dict[str, Any]]) -> float | None:
        return round(float(np.percentile([r[key] for r in of], q)), 2) if of else None

    return {"domain": domain, "shadow": shadow, "champions": sorted({r["champion"] for r in rows}),
            "mirrored": len(rows), "failed": len(rows) - len(answered),
            "dropped": sum(int(r.get("dropped_before", 0)) for r in rows), "unreadable_lines": unreadable,
            "agreement": round(float(np.mean([r["shadow_label"] == r["champion_label"] for r in answered])), 4)
            if answered else None,
            "champion_ms": {"p50": ms("champion_ms", 50, rows), "p95": ms("champion_ms", 95, rows)},
            "shadow_ms": {"p50": ms("shadow_ms", 50, answered), "p95": ms("shadow_ms", 95, answered)},
            "with_ground_truth": len(labeled), "champion_accuracy": accuracy("champion_label"),
            "shadow_accuracy": accuracy("shadow_label"),
            "errors": sorted({r["error"] for r in rows if r.get("error")})[:5],
            "first": min(r["ts"] for r in rows), "last": max(r["ts"] for r in rows)}


if __name__ == "__main__":  # the shadow process: python -m mmops.serving.shadow TAG LOG_PATH LOADER DUTY
    _serve(sys.argv[3], sys.argv[1], Path(sys.argv[2]), float(sys.argv[4]))
