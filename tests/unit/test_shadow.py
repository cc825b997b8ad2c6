"""The shadow runner (mmops/serving/shadow.py) on a stand-in model: what it logs, what it drops when it cannot
keep up, that its failures stay in its log, and what the report makes of the log."""

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mmops.errors import NotFoundError
from mmops.serving.shadow import CAPACITY, Mirrored, Shadow, report, shadow_dir


class Model:
    """A task and its predictor in one: answers `label` for every record, or raises on records it is told to,
    and waits on `gate` before each batch (to hold the shadow busy)."""

    name = "stand-in"

    def __init__(self, label: str, fail_on: str | None = None) -> None:
        self.label, self.fail_on = label, fail_on
        self.gate = threading.Event()
        self.gate.set()

    def serve(self, predictor: Any, values: list[dict[str, Any]], embeddings: bool = False) -> list[dict[str, Any]]:
        self.gate.wait(30)
        if any(v.get("x") == self.fail_on for v in values):
            raise ValueError("this record breaks the challenger")
        return [{"label": self.label} for _ in values]

    def answer(self, raw: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        return {"label": raw["label"]}


def _batch(ids: list[str], champion_labels: list[str], x: str = "ok") -> Mirrored:
    return Mirrored(time.time(), list(ids), [{"x": x} for _ in ids], "mmops-d:champ", list(champion_labels), 2.0)


def _shadow(tmp_path: Path, model: Model) -> Shadow:
    return Shadow(model, model, {"model_version": "mmops-d:chall", "classes": ["a", "b"]}, tmp_path, "d")


def test_mirrored_records_are_logged_beside_the_champions_answers_and_reported(tmp_path: Path) -> None:
    model = Model("b", fail_on="bad")
    shadow = _shadow(tmp_path, model)
    shadow.offer(_batch(["r1", "r2"], ["a", "b"]))
    shadow.offer(_batch(["r3", "r4"], ["b", "b"]))
    shadow.offer(_batch(["r5"], ["a"], x="bad"))  # the challenger fails here: logged, never raised
    final = shadow.close()
    assert final == {"shadow": "mmops-d:chall", "mirrored": 5, "failed": 1, "dropped": 0, "pending": 0}
    lines = [json.loads(x) for x in (shadow_dir(tmp_path) / "d.jsonl").read_text().splitlines()]
    assert [(r["record_id"], r["champion_label"], r["shadow_label"]) for r in lines] == [
        ("r1", "a", "b"), ("r2", "b", "b"), ("r3", "b", "b"), ("r4", "b", "b"), ("r5", "a", None)]
    assert "this record breaks the challenger" in lines[-1]["error"]
    truth = {"r1": "a", "r2": "b", "r3": "a", "r5": "a"}  # r4's truth never came in; r5 only the champion answered
    got = report(tmp_path, "d", truth)
    assert (got["mirrored"], got["failed"], got["dropped"], got["agreement"]) == (5, 1, 0, 0.75)
    assert got["with_ground_truth"] == 3 and got["champion_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["shadow_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["champion_ms"]["p50"] == 2.0 and got["shadow_ms"]["p50"] is not None
    assert got["champions"] == ["mmops-d:champ"] and got["errors"][0].startswith("ValueError")


def test_a_shadow_that_cannot_keep_up_drops_batches_counts_them_and_says_so_in_its_log(tmp_path: Path) -> None:
    model = Model("a")
    model.gate.clear()  # the challenger is stuck on its first batch
    shadow = _shadow(tmp_path, model)
    offered = CAPACITY + 6
    started = time.perf_counter()
    for i in range(offered):
        shadow.offer(_batch([f"r{i}"], ["a"]))
    assert time.perf_counter() - started < 0.5, "offering never waits for the challenger"
    model.gate.set()
    final = shadow.close()
    # one batch in the challenger's hands, CAPACITY queued: the rest dropped, counted, and said in the log
    assert final["dropped"] >= offered - CAPACITY - 1 and final["mirrored"] + final["dropped"] == offered
    assert report(tmp_path, "d", {})["dropped"] == final["dropped"]


def test_the_shadow_runs_below_the_champions_cpu_priority(tmp_path: Path) -> None:
    import os

    seen: list[int] = []

    class Spy(Model):
        def serve(self, predictor: Any, values: list[dict[str, Any]], embeddings: bool = False) -> list[dict[str, Any]]:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().serve(predictor, values)

    spy = Spy("a")
    shadow = _shadow(tmp_path, spy)
    shadow.offer(_batch(["r1"], ["a"]))
    shadow.close()
    assert seen == [19] and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19


def test_the_report_reads_one_challenger_and_says_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no shadow traffic logged for d"):
        report(tmp_path, "d", {})
    for version in ("mmops-d:one", "mmops-d:two"):
        model = Model("a")
        shadow = Shadow(model, model, {"model_version": version, "classes": ["a"]}, tmp_path, "d")
        shadow.offer(_batch(["r1", "r2"] if version.endswith("one") else ["r3"], ["a", "a"][:1 if "two" in version else 2]))
        shadow.close()
    with (shadow_dir(tmp_path) / "d.jsonl").open("a") as fh:
        fh.write('{"torn": \n')
    assert (report(tmp_path, "d", {})["shadow"], report(tmp_path, "d", {})["mirrored"]) == ("mmops-d:two", 1)
    older = report(tmp_path, "d", {}, shadow="mmops-d:one")
    assert (older["mirrored"], older["unreadable_lines"]) == (2, 1)
