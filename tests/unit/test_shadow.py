"""The shadow (mmops/serving/shadow.py) with a stand-in model in its own process: what it logs, what it drops
when it cannot keep up, that its failures stay in its log, its CPU priority, and what the report makes of
the log."""

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mmops.errors import MmopsError, NotFoundError
from mmops.serving.shadow import CAPACITY, Mirrored, Shadow, report, shadow_dir

LOADER = "tests.unit.test_shadow:stand_in"


def stand_in(tag: str) -> tuple[str, Any]:
    """A model named by its tag, `<version>|<label>|<option>`: answers `label` for every record; option
    `fail`: raises on a record {"x": "bad"}; `sleep=S`: takes S seconds a batch; `nice`: answers its own
    CPU priority; `broken`: does not load."""
    version, label, option = (tag.split("|") + ["", ""])[:3]
    if option == "broken":
        raise RuntimeError("weights unreadable")

    def answer(records: list[dict[str, Any]]) -> list[str | None]:
        if option.startswith("sleep="):
            time.sleep(float(option.removeprefix("sleep=")))
        if option == "fail" and any(r.get("x") == "bad" for r in records):
            raise ValueError("this record breaks the challenger")
        if option == "nice":
            return [f"{os.getpriority(os.PRIO_PROCESS, 0)}/{os.sched_getscheduler(0)}" for _ in records]
        return [label for _ in records]

    return version, answer


def _batch(ids: list[str], champion_labels: list[str], x: str = "ok") -> Mirrored:
    return Mirrored(time.time(), [{"id": i, "x": x} for i in ids], "mmops-d:champ", list(champion_labels), 2.0)


def _lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (shadow_dir(tmp_path) / "d.jsonl").read_text().splitlines()]


def test_mirrored_records_are_logged_beside_the_champions_answers_and_reported(tmp_path: Path) -> None:
    shadow = Shadow("mmops-d:chall|b|fail", tmp_path, "d", duty=1.0, loader=LOADER)
    shadow.offer(_batch(["r1", "r2"], ["a", "b"]))
    shadow.offer(_batch(["r3", "r4"], ["b", "b"]))
    shadow.offer(_batch(["r5"], ["a"], x="bad"))  # the challenger fails here: logged, never raised
    final = shadow.close()
    assert {k: final[k] for k in ("shadow", "mirrored", "failed", "dropped", "running")} == {
        "shadow": "mmops-d:chall", "mirrored": 5, "failed": 1, "dropped": 0, "running": False}
    lines = _lines(tmp_path)
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
    shadow = Shadow("mmops-d:slow|a|sleep=0.5", tmp_path, "d", duty=1.0, loader=LOADER)
    offered = CAPACITY + 12
    started = time.perf_counter()
    for i in range(offered):
        shadow.offer(_batch([f"r{i}"], ["a"]))
    assert time.perf_counter() - started < 0.5, "offering never waits for the challenger"
    final = shadow.close(timeout=60)
    assert final["dropped"] > 0 and final["mirrored"] + final["dropped"] == offered
    assert report(tmp_path, "d", {})["dropped"] == final["dropped"]  # every drop said in the log


def test_the_shadow_computes_at_most_its_duty_of_the_time(tmp_path: Path) -> None:
    shadow = Shadow("mmops-d:slow|a|sleep=0.1", tmp_path, "d", duty=0.25, loader=LOADER)
    started = time.perf_counter()
    for i in range(12):  # ~0.1 s of work each, offered at once: computing a quarter of the time, it keeps few
        shadow.offer(_batch([f"r{i}"], ["a"]))
    final = shadow.close(timeout=60)
    took = time.perf_counter() - started
    assert final["mirrored"] + final["dropped"] == 12 and final["dropped"] >= 12 - CAPACITY - 1
    assert took >= final["mirrored"] * 0.1 / 0.25 * 0.8, (took, final)  # it rested ~3x its work
    with pytest.raises(ValueError, match="duty 0"):
        Shadow("x|a", tmp_path, "d", duty=0.0, loader=LOADER)


def test_the_shadow_runs_below_the_champions_cpu_priority(tmp_path: Path) -> None:
    shadow = Shadow("mmops-d:nice|a|nice", tmp_path, "d", loader=LOADER)
    shadow.offer(_batch(["r1"], ["a"]))
    shadow.close()
    assert _lines(tmp_path)[0]["shadow_label"] == f"19/{os.SCHED_IDLE}" and os.getpriority(os.PRIO_PROCESS, 0) < 19


def test_a_shadow_that_cannot_load_says_why(tmp_path: Path) -> None:
    with pytest.raises(MmopsError, match="did not load: RuntimeError: weights unreadable"):
        Shadow("mmops-d:x|a|broken", tmp_path, "d", loader=LOADER)


def test_the_report_reads_one_challenger_and_says_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no shadow traffic logged for d"):
        report(tmp_path, "d", {})
    for version, ids in (("mmops-d:one", ["r1", "r2"]), ("mmops-d:two", ["r3"])):
        shadow = Shadow(f"{version}|a", tmp_path, "d", loader=LOADER)
        shadow.offer(_batch(ids, ["a"] * len(ids)))
        shadow.close()
    with (shadow_dir(tmp_path) / "d.jsonl").open("a") as fh:
        fh.write('{"torn": \n')
    latest = report(tmp_path, "d", {})
    assert (latest["shadow"], latest["mirrored"]) == ("mmops-d:two", 1)
    older = report(tmp_path, "d", {}, shadow="mmops-d:one")
    assert (older["mirrored"], older["unreadable_lines"]) == (2, 1)
