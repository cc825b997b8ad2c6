"""The canary (mmops/serving/canary.py) on stand-in models: sticky routing by record id, answers from both
arms, a failing canary's records answered by the champion, and the service ending it past each bound."""

import math
from typing import Any

import pytest
from pydantic import ValidationError

from mmops.serving.canary import Bounds, Canary, prediction_shift, routed


class ModelClock:
    """The canary's clock for stand-in models: a model call spends what the test says, not wall time (the timing
    tests are exact on a loaded machine)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def _model(label: str, fail: bool = False, clock: ModelClock | None = None, seconds: float = 0.0):
    def serve(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if clock is not None:
            clock.spend(seconds)
        if fail:
            raise RuntimeError("the challenger broke")
        return [{"label": v.get("as", label), "model_version": f"mmops-d:{label}"} for v in values]

    return serve


def _labels(answers: list[dict[str, Any]]) -> list[str | None]:
    return [None if a["label"] == "nan" else a["label"] for a in answers]


def _champion(label: str = "a", clock: ModelClock | None = None, seconds: float = 0.0):
    serve = _model(label, clock=clock, seconds=seconds)

    def answer(values: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str | None]]:
        answers = serve(values)
        return answers, _labels(answers)

    return answer


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"device-{i}"} for i in range(start, start + n)]


def _ids(records: list[dict[str, Any]]) -> list[str | None]:
    return [r["id"] for r in records]


def test_routing_is_sticky_by_id_near_the_share_and_never_without_an_id() -> None:
    ids = [f"patient-{i}" for i in range(20_000)]
    chosen = [routed(i, 0.1) for i in ids]
    assert chosen == [routed(i, 0.1) for i in ids]  # the same id, the same arm, every time
    assert abs(sum(chosen) / len(ids) - 0.1) < 0.01
    assert all(routed(i, 0.2) for i, c in zip(ids, chosen, strict=True) if c)  # a larger share keeps the old ids
    assert not routed(None, 0.5) and not routed("", 0.5)


def test_each_arm_answers_its_records_in_order() -> None:
    canary = Canary("mmops-d:b", _model("b"), _labels, Bounds(share=0.5))
    records = _records(40)
    answers = canary.serve(_ids(records), [{} for _ in records], _champion("a"))
    assert [a["label"] for a in answers] == ["b" if routed(r["id"], 0.5) else "a" for r in records]
    stats = canary.stats()
    assert stats["canary_arm"]["records"] + stats["champion_arm"]["records"] == 40 and stats["live"]


def test_a_failing_canary_is_answered_for_by_the_champion_and_ended() -> None:
    canary = Canary("mmops-d:b", _model("b", fail=True), _labels, Bounds(share=0.5))
    for start in range(0, 200, 20):
        records = _records(20, start)
        answers = canary.serve(_ids(records), [{} for _ in records], _champion("a"))
        assert [a["label"] for a in answers] == ["a"] * 20  # no client saw the failure
    stats = canary.stats()
    assert not stats["live"] and "error rate 1.000 vs the champion's 0.000" in stats["ended"]
    assert stats["canary_arm"]["errors"] >= 10 and stats["canary_arm"]["records"] < 40  # ended early, then no more


def test_not_a_number_answers_count_as_errors() -> None:
    canary = Canary("mmops-d:nan", _model("nan"), _labels, Bounds(share=0.5, max_error_increase=0.1))
    records = _records(60)
    canary.serve(_ids(records), [{} for _ in records], _champion("a"))
    assert not canary.live and "error rate" in (canary.ended or "")


def test_a_slow_canary_is_ended_on_its_time_and_a_small_share_is_not_mistaken_for_slowness() -> None:
    clock = ModelClock()
    canary = Canary("mmops-d:b", _model("a", clock=clock, seconds=0.02), _labels,
                    Bounds(share=0.5, min_records=8, max_latency_ratio=2.0), clock=clock)
    for i in range(40):  # one record per batch, as a client sending alone would
        rec = _records(1, i)
        canary.serve(_ids(rec), [{}], _champion("a", clock=clock, seconds=0.001))
    ended = canary.ended or ""
    assert not canary.live and "model time 20.00x" in ended and "same sizes" in ended

    def per_call(setup: float, per_record: float):  # a model whose call costs setup + per record
        def serve(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
            clock.spend(setup + per_record * len(values))
            return [{"label": "a"} for _ in values]
        return serve

    same = per_call(0.004, 0.0002)  # both arms the same model: the canary's smaller batches cost more per record
    fair = Canary("mmops-d:same", same, _labels, Bounds(share=0.1, min_records=20, max_latency_ratio=1.5),
                  clock=clock)
    for start in range(0, 1200, 40):
        records = _records(40, start)
        fair.serve(_ids(records), [{} for _ in records], lambda vs: (same(vs), ["a"] * len(vs)))
    stats = fair.stats()
    assert stats["live"] and math.isclose(stats["latency_ratio"], 1.0, abs_tol=0.01), stats
    assert stats["canary_arm"]["p95_ms"] > 2 * stats["champion_arm"]["p95_ms"]  # what per-record times would say


def test_a_canary_answering_unlike_the_champion_is_ended_on_the_shift() -> None:
    canary = Canary("mmops-d:b", _model("b"), _labels, Bounds(share=0.5, min_records=20))
    records = _records(200)
    canary.serve(_ids(records), [{} for _ in records], _champion("a"))
    assert not canary.live and "label distribution is 1.00 away" in (canary.ended or "")
    # once ended, every record goes to the champion
    assert {a["label"] for a in canary.serve(_ids(records), [{} for _ in records], _champion("a"))} == {"a"}


def test_a_canary_within_its_bounds_stays_live() -> None:
    canary = Canary("mmops-d:b", _model("x"), _labels, Bounds(share=0.3, min_records=20))
    records = _records(300)
    values = [{"as": "a" if i % 3 else "b"} for i in range(300)]  # both models answer the record's own label
    canary.serve(_ids(records), values, lambda vs: (_model("y")(vs), _labels(_model("y")(vs))))
    stats = canary.stats()
    assert stats["live"] and stats["prediction_shift"] < 0.25 and stats["canary_arm"]["records"] >= 20


def test_prediction_shift_is_total_variation_and_bounds_are_checked() -> None:
    from collections import Counter

    assert prediction_shift(Counter(a=5, b=5), Counter(a=5, b=5)) == 0
    assert math.isclose(prediction_shift(Counter(a=10), Counter(a=5, b=5)), 0.5)
    assert prediction_shift(Counter(), Counter(a=1)) == 0
    with pytest.raises(ValidationError):
        Bounds(share=0.9)
