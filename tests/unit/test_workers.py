"""Several workers in one service (mmops/serving/workers.py): what one worker publishes every other applies,
the publisher learns who did and who could not, and a restarted worker starts from what its peers serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmops.serving.workers import Peers, serve_workers


def test_a_published_change_reaches_every_worker_and_the_publisher_hears_back(tmp_path: Path) -> None:
    first, second, third = (Peers(tmp_path, i, 3) for i in (1, 2, 3))
    served: dict[int, list[str]] = {2: [], 3: []}

    def applier(index: int) -> object:
        def apply(state: dict) -> None:
            if state["model"] == "m:broken" and index == 3:
                raise ValueError("cannot load m:broken")
            served[index].append(state["model"])
        return apply

    for peer in (first, second, third):
        peer.ack(0)  # started, serving what the environment names
    second.watch(applier(2))
    third.watch(applier(3))
    try:
        generation = first.publish({"model": "m:2"})
        assert generation == 1 and first.wait(generation, timeout=10) == {}
        assert served == {2: ["m:2"], 3: ["m:2"]} and second.applied == third.applied == 1
        broken = first.publish({"model": "m:broken"})
        assert first.wait(broken, timeout=10) == {3: "ValueError: cannot load m:broken"}
        assert served[2][-1] == "m:broken"
        # a worker restarted by the process manager starts from the last published state, not its env's model
        assert Peers(tmp_path, 2, 3).state() == {"model": "m:broken", "generation": 2}
    finally:
        second.close()
        third.close()
    third_gone = first.publish({"model": "m:3"})  # nobody watches any more
    assert first.wait(third_gone, timeout=0.5) == {2: "did not apply it within 0 s", 3: "did not apply it within 0 s"}


def test_the_worker_count_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMOPS_SERVE_WORKERS", raising=False)
    assert serve_workers() == 1
    monkeypatch.setenv("MMOPS_SERVE_WORKERS", "3")
    assert serve_workers() == 3
    for bad in ("0", "-2", "two", "65"):
        monkeypatch.setenv("MMOPS_SERVE_WORKERS", bad)
        with pytest.raises(ValueError, match="MMOPS_SERVE_WORKERS"):
            serve_workers()
