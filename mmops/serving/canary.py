"""Canary: a share of the traffic, sticky by record id, answered by the challenger; ended at once, by the
service itself, when the challenger does worse than the champion by a configured bound.

A record goes to the canary when the sha256 of its id falls in the first `share` of the hash space: the same
id always gets the same model (a device, a patient, a camera that sends its id sees one model, not a mix),
and a record without an id always gets the champion. Each arm keeps its own counts: records, errors (the
model raised, or its output was not a number), the labels it answered and its model time per record.

The canary is judged after every batch it answers. It is ended (every record back on the champion; the
reason kept for `mmops canary status` and the audit log) when
- its error rate exceeds the champion's by more than `max_error_increase` (judged from 10 canary records on),
- its model time exceeds `max_latency_ratio` x what the champion takes for batches of the same sizes (the
  canary gets a share of each batch: smaller batches, dearer per record on any model; its first WARM_UP
  batches, while a freshly loaded model allocates, are not timed), or
- the labels it answers are distributed unlike the champion's: total variation distance above
  `max_prediction_shift` (both arms see the same population, split by a hash: what differs is the model),
the last two once each arm has answered `min_records`. A record the canary fails on is answered by the
champion, so a broken challenger costs its clients nothing but time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmops import faults

Answers = list[dict[str, Any]]


class Bounds(BaseModel):
    """How a canary is run and judged (params.yaml `release`, sent by `mmops canary start`)."""

    # strict: `"stop": 0` or a share of "0.1" is a client's mistake; bounds inclusive (OpenAPI 3.0 clients read
    # exclusiveMinimum as a flag)
    model_config = ConfigDict(strict=True, extra="forbid")

    share: float = Field(0.1, ge=0.001, le=0.5)
    min_records: int = Field(50, ge=1)
    max_error_increase: float = Field(0.02, ge=0, le=1)
    max_latency_ratio: float = Field(2.0, ge=1)
    max_prediction_shift: float = Field(0.25, ge=0.001, le=1)


def routed(record_id: str | None, share: float) -> bool:
    """Whether a record goes to the canary: sticky by id (its sha256), never without one."""
    if not record_id:
        return False
    return int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:8], "big") < share * 2**64


WARM_UP = 2  # a canary's first batches (a freshly loaded model allocates) are not timed against the champion


class Arm:
    def __init__(self) -> None:
        self.records = self.errors = self.batches = 0
        self.labels: Counter[str] = Counter()
        self.timed: deque[tuple[int, float]] = deque(maxlen=2000)  # (records, ms) of its latest batches

    def add(self, labels: list[str | None], ms: float) -> None:
        """A batch it answered: its labels (None: an error) and its model time in ms."""
        self.records += len(labels)
        self.errors += sum(label is None for label in labels)
        self.labels.update(label for label in labels if label is not None)
        self.batches += 1
        if self.batches > WARM_UP:
            self.timed.append((len(labels), ms))

    def error_rate(self) -> float:
        return self.errors / self.records if self.records else 0.0

    def expected_ms(self, sizes: np.ndarray) -> np.ndarray:
        """This arm's time for batches of `sizes` records: a line fitted to its own batches (time = setup +
        per-record cost; batch size matters on every runtime), or in proportion when all were one size."""
        n, ms = (np.array(v, dtype=float) for v in zip(*self.timed, strict=True))
        if len(np.unique(n)) >= 2:
            per_record, setup = np.polyfit(n, ms, 1)
            return np.maximum(setup, 0.0) + np.maximum(per_record, 0.0) * sizes
        return ms.mean() * sizes / n.mean()

    def stats(self) -> dict[str, Any]:
        per_record = [ms / n for n, ms in self.timed]
        return {"records": self.records, "errors": self.errors, "error_rate": round(self.error_rate(), 4),
                "p95_ms": round(float(np.percentile(per_record, 95)), 3) if per_record else None,
                "labels": dict(self.labels)}


def latency_ratio(canary: Arm, champion: Arm) -> float | None:
    """The canary's model time over what the champion takes for batches of the same sizes (the canary answers
    a share of each batch: smaller batches, which cost more per record on any model); None before both timed."""
    if not canary.timed or len(champion.timed) < 2:
        return None
    sizes = np.array([n for n, _ in canary.timed], dtype=float)
    expected = float(champion.expected_ms(sizes).sum())
    return sum(ms for _, ms in canary.timed) / expected if expected > 0 else None


def prediction_shift(a: Counter[str], b: Counter[str]) -> float:
    """Total variation distance between two arms' label distributions."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in a.keys() | b.keys())


class Canary:
    """The challenger (`serve(values) -> answers`, `labels(answers) -> labels`) on its share of the records;
    `clock` (seconds) times both arms' model calls."""

    def __init__(self, version: str, serve: Callable[[list[dict[str, Any]]], Answers],
                 labels: Callable[[Answers], list[str | None]], bounds: Bounds,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.version, self._serve, self._labels, self.bounds = version, serve, labels, bounds
        self._clock = clock
        self.champion, self.canary = Arm(), Arm()
        self.ended: str | None = None  # why the service ended it (None: running)
        self._lock = threading.Lock()

    @property
    def live(self) -> bool:
        return self.ended is None

    def serve(self, ids: list[str | None], values: list[dict[str, Any]],
              champion: Callable[[list[dict[str, Any]]], tuple[Answers, list[str | None]]]) -> Answers:
        """Answers for a batch (its records' `ids` and decoded `values`): the canary's share from the canary (the champion where it fails), the rest from
        the champion (`champion(values) -> (answers, labels)`); both arms counted, the canary judged."""
        mine = [i for i, r in enumerate(ids) if self.live and routed(r, self.bounds.share)]
        if not mine:
            return self._timed(self.champion, champion, values)
        chosen = set(mine)
        theirs = [i for i in range(len(ids)) if i not in chosen]
        out: list[dict[str, Any] | None] = [None] * len(ids)
        if theirs:
            for i, a in zip(theirs, self._timed(self.champion, champion, [values[i] for i in theirs]), strict=True):
                out[i] = a
        started = self._clock()
        try:
            faults.point("serve.canary")
            answers = self._serve([values[i] for i in mine])
            labels = self._labels(answers)
        except Exception:  # counted as errors; the champion answers these records
            answers, labels = [{} for _ in mine], [None for _ in mine]
        ms = (self._clock() - started) * 1000
        failed = [i for i, label in zip(mine, labels, strict=True) if label is None]
        with self._lock:
            self.canary.add(labels, ms)
            self._judge()
        fallback = iter(self._timed(self.champion, champion, [values[i] for i in failed]) if failed else [])
        for i, a, label in zip(mine, answers, labels, strict=True):
            out[i] = a if label is not None else next(fallback)
        return [a for a in out if a is not None]

    def _timed(self, arm: Arm, champion: Callable[[list[dict[str, Any]]], tuple[Answers, list[str | None]]],
               values: list[dict[str, Any]]) -> Answers:
        started = self._clock()
        answers, labels = champion(values)
        with self._lock:
            arm.add(labels, (self._clock() - started) * 1000)
        return answers

    def _judge(self) -> None:
        b, mine, theirs = self.bounds, self.canary, self.champion
        if self.ended is not None:
            return
        if mine.records >= 10 and mine.error_rate() - theirs.error_rate() > b.max_error_increase:
            self.ended = (f"error rate {mine.error_rate():.3f} vs the champion's {theirs.error_rate():.3f} "
                          f"(bound +{b.max_error_increase})")
        elif mine.records >= b.min_records and theirs.records >= b.min_records:
            slower = latency_ratio(mine, theirs)
            shift = prediction_shift(mine.labels, theirs.labels)
            if slower is not None and slower > b.max_latency_ratio:
                self.ended = (f"model time {slower:.2f}x the champion's on batches of the same sizes "
                              f"(bound {b.max_latency_ratio}x)")
            elif shift > b.max_prediction_shift:
                self.ended = (f"its answers' label distribution is {shift:.2f} away from the champion's (total "
                              f"variation; bound {b.max_prediction_shift})")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"canary": self.version, "live": self.live, "ended": self.ended,
                    "bounds": self.bounds.model_dump(), "champion_arm": self.champion.stats(),
                    "canary_arm": self.canary.stats(),
                    "prediction_shift": round(prediction_shift(self.canary.labels, self.champion.labels), 4),
                    "latency_ratio": _rounded(latency_ratio(self.canary, self.champion))}


def _rounded(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None
