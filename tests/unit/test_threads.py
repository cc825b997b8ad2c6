"""The served model's torch thread count (mmops/serving/threads.py): calibrated on the first batches, apart for
small and larger batches, kept where threads pay, fixed by MMOPS_TORCH_THREADS, left alone off the CPU."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch

from mmops.serving.threads import CALIBRATION, SMALL, WARMUP, Threads, fixed_threads


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def model(ms_per_record: Callable[[int, int], float]) -> tuple[list[int], Callable[[int], int]]:
    """A stand-in model call that takes `ms_per_record(torch's thread count, records)` per record, and the
    counts it ran on."""
    seen: list[int] = []

    def call(records: int) -> int:
        n = torch.get_num_threads()
        seen.append(n)
        time.sleep(ms_per_record(n, records) * records / 1000)
        return records

    return seen, call


@pytest.mark.parametrize(("one", "every", "kept"), [(2.0, 1.0, 3), (1.0, 1.0, 1), (1.0, 2.0, 1)])  # a tie: one (MARGIN)
def test_threads_are_kept_only_where_they_pay(one: float, every: float, kept: int) -> None:
    chooser = Threads("cpu", every=3)
    seen, call = model(lambda n, _: one if n == 1 else every)
    for _ in range(WARMUP + CALIBRATION):
        assert chooser.stats()["torch_threads"]["4+"] is None  # still calibrating
        chooser.run(lambda: call(SMALL), SMALL)
    assert seen == [3] * WARMUP + [1, 3] * (CALIBRATION // 2)  # after the warm-up, alternately, as many each
    assert chooser.stats()["torch_threads"] == {"1-3": None, "4+": kept}
    chooser.run(lambda: call(SMALL), SMALL)
    assert seen[-1] == kept
    ms = chooser.stats()["calibration_ms_per_record"]["4+"]
    assert ms["1"] == pytest.approx(one, rel=0.5) and ms["3"] == pytest.approx(every, rel=0.5)
    chooser.reset()  # another model: calibrated again
    assert chooser.stats()["torch_threads"] == {"1-3": None, "4+": None}


def test_small_and_large_batches_are_chosen_apart() -> None:
    """Threads that gain nothing on a lone record may pay on a batch of 16 (a heavy model's)."""
    chooser = Threads("cpu", every=2)
    seen, call = model(lambda n, records: 1.0 if n == 1 or records == 1 else 0.4)
    for _ in range(WARMUP + CALIBRATION):
        chooser.run(lambda: call(1), 1)
        chooser.run(lambda: call(16), 16)
    assert chooser.stats()["torch_threads"] == {"1-3": 1, "4+": 2}
    chooser.run(lambda: call(1), 1)
    chooser.run(lambda: call(16), 16)
    assert seen[-2:] == [1, 2]


def test_a_fixed_count_is_used_at_once_and_a_gpu_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMOPS_TORCH_THREADS", "2")
    assert fixed_threads() == 2
    chooser = Threads("cpu", fixed_threads(), every=3)
    seen, call = model(lambda n, _: 0.1)
    chooser.run(lambda: call(1), 1)
    chooser.run(lambda: call(8), 8)
    assert seen == [2, 2] and chooser.stats()["fixed"] is True
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv("MMOPS_TORCH_THREADS", bad)
        with pytest.raises(ValueError, match="MMOPS_TORCH_THREADS"):
            fixed_threads()
    monkeypatch.setenv("MMOPS_TORCH_THREADS", "auto")
    assert fixed_threads() is None
    torch.set_num_threads(3)
    on_gpu = Threads("cuda", None, every=3)
    seen, call = model(lambda n, _: 0.1)
    for _ in range(WARMUP + CALIBRATION + 2):
        on_gpu.run(lambda: call(SMALL), SMALL)
    assert set(seen) == {3} and on_gpu.stats()["torch_threads"] == {"1-3": None, "4+": None}
    one_core = Threads("cpu", None, every=1)  # one thread per worker: nothing to calibrate
    assert one_core.stats()["torch_threads"] == {"1-3": 1, "4+": 1}
