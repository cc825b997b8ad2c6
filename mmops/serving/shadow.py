"""Shadow: a challenger beside the champion on mirrored traffic, with Seldon Core 2's mirror semantics: every
answer comes from the champion; the challenger sees the same records, its answers are logged beside the
champion's and never returned, and its failures stay here (counted and logged, never a client's error).

The model service hands each answered batch (its decoded records, the champion's labels and time) to
`Shadow.offer`, which returns at once. One daemon thread, at the lowest CPU priority (nice 19, so that on a
busy machine the champion's calls come first), runs the challenger on it and appends one line per record
to the shadow log. The queue is bounded: when the challenger cannot keep up, batches are dropped, counted
and said in the log (`dropped_before` on the next line), never queued without bound.

The shadow log's format is owned here: `<prediction log dir>/shadow/<domain>[@<replica>].jsonl`, one line per
record: `ts`, `record_id`, `champion` and `shadow` (model versions), `champion_label`, `shadow_label` (None
where the challenger failed, with `error`), `champion_ms` and `shadow_ms` (the batch's model time per
record), `dropped_before`. `report` reads it back: agreement, latencies and, for records whose ground truth
came in, both models' accuracies. Reference: docs/serving.md (Releasing a challenger).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mmops import faults
from mmops.serving.predlog import PredictionLog, log_files, log_name

log = logging.getLogger("mmops.serving")

CAPACITY = 8  # batches waiting for the challenger; beyond it a mirrored batch is dropped (and counted)


def shadow_dir(prediction_log_dir: Path) -> Path:
    return prediction_log_dir / "shadow"


class Mirrored(NamedTuple):
    ts: float
    ids: list[str | None]
    values: list[dict[str, Any]]  # decoded records, as the champion got them
    champion: str
    champion_labels: list[str | None]
    champion_ms: float  # the champion's model time per record in this batch


class Shadow:
    """The challenger (`task`, `predictor`, `meta` as ModelRunner loads a model) run on mirrored batches."""

    def __init__(self, task: Any, predictor: Any, meta: dict[str, Any], log_dir: Path, domain: str) -> None:
        self.task, self.predictor, self.meta = task, predictor, meta
        self.log = PredictionLog(shadow_dir(log_dir) / log_name(domain), json.dumps)
        self._q: queue.Queue[Mirrored | None] = queue.Queue(CAPACITY)
        self.mirrored = self.failed = self.dropped = 0
        self._dropped_unsaid = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mmops-shadow", daemon=True)
        self._thread.start()

    @property
    def version(self) -> str:
        return str(self.meta["model_version"])

    def offer(self, batch: Mirrored) -> None:
        """Hand a batch over without waiting; a full queue drops it (counted)."""
        try:
            self._q.put_nowait(batch)
        except queue.Full:
            with self._lock:
                self.dropped += len(batch.ids)
                self._dropped_unsaid += len(batch.ids)

    def _run(self) -> None:
        try:  # Linux: a thread's own priority (its tid); threads it starts inherit it
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError) as exc:
            log.warning("shadow runs at normal priority: %s", exc)
        while (batch := self._q.get()) is not None:
            self._mirror(batch)

    def _mirror(self, batch: Mirrored) -> None:
        started = time.perf_counter()
        error = None
        try:
            faults.point("serve.shadow")
            labels = labels_of(self.task, self.task.serve(self.predictor, batch.values, embeddings=False), self.meta)
        except Exception as exc:  # the challenger's failure is this log's to say, never a client's
            labels, error = [None] * len(batch.ids), f"{type(exc).__name__}: {exc}"[:300]
        per_record = (time.perf_counter() - started) * 1000 / max(len(batch.ids), 1)
        with self._lock:
            self.mirrored += len(batch.ids)
            self.failed += len(batch.ids) if error else 0
            dropped, self._dropped_unsaid = self._dropped_unsaid, 0
        lines = [{"ts": batch.ts, "record_id": rid, "champion": batch.champion, "shadow": self.version,
                  "champion_label": cl, "shadow_label": sl, "champion_ms": round(batch.champion_ms, 3),
                  "shadow_ms": round(per_record, 3), **({"error": error} if error else {})}
                 for rid, cl, sl in zip(batch.ids, batch.champion_labels, labels, strict=True)]
        lines[0]["dropped_before"] = dropped
        self.log.put(lines)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"shadow": self.version, "mirrored": self.mirrored, "failed": self.failed,
                    "dropped": self.dropped, "pending": self._q.qsize()}

    def close(self, timeout: float = 30.0) -> dict[str, Any]:
        """Finish what is queued (within `timeout`), stop, and flush the log; the final counts."""
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self.log.close()
        return self.stats()


def labels_of(task: Any, answers: list[dict[str, Any]], meta: dict[str, Any]) -> list[str | None]:
    """Each raw answer's label as the API would give it (None: no label, e.g. an output that is not a number)."""
    from mmops.errors import BadInputError

    labels: list[str | None] = []
    for a in answers:
        try:
            labels.append(str(task.answer({**a, **meta}, meta["classes"])["label"]))
        except BadInputError:
            labels.append(None)
    return labels


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
