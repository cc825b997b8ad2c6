"""The in-process batcher (mmops/serving/batcher.py): batches form from the requests that queue while a model call
runs, every request gets its own answers in order, a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mmops.serving.batcher import Batcher


class Model:
    """Doubles its inputs; each call blocks until released, so the test decides what queues meanwhile."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.gate.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * i for i in items]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_requests_queued_behind_a_running_call_form_the_next_batch_and_get_their_own_answers() -> None:
    async def run() -> None:
        model = Model()
        batcher = Batcher(model, max_items=64)
        first = asyncio.create_task(batcher([1]))
        await _until(lambda: len(model.calls) == 1)  # a lone request runs at once, alone
        rest = [asyncio.create_task(batcher([10 * k, 10 * k + 1])) for k in range(1, 6)]
        await asyncio.sleep(0.01)
        model.gate.set()
        assert await first == [2]
        assert [await t for t in rest] == [[20 * k, 20 * k + 2] for k in range(1, 6)]
        assert model.calls == [[1], [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]]
        assert batcher.stats() == {"batches": 2, "records": 11, "mean_batch": 5.5}
        batcher.close()

    asyncio.run(run())


def test_a_batch_holds_at_most_max_items_and_zero_runs_each_request_alone() -> None:
    async def run(max_items: int) -> list[list[int]]:
        model = Model()
        batcher = Batcher(model, max_items=max_items)
        blocker = asyncio.create_task(batcher([0]))
        await _until(lambda: len(model.calls) == 1)
        waiting = [asyncio.create_task(batcher([k, k])) for k in range(1, 5)]
        await asyncio.sleep(0.01)
        model.gate.set()
        await blocker
        assert [await t for t in waiting] == [[2 * k, 2 * k] for k in range(1, 5)]
        batcher.close()
        return model.calls

    assert asyncio.run(run(5)) == [[0], [1, 1, 2, 2], [3, 3, 4, 4]]
    assert asyncio.run(run(0)) == [[0], [1, 1], [2, 2], [3, 3], [4, 4]]


def test_a_failing_batch_fails_its_own_requests_only_and_a_request_given_up_is_skipped() -> None:
    async def run() -> None:
        model = Model(fail_on=7)
        batcher = Batcher(model, max_items=4)
        blocker = asyncio.create_task(batcher([0]))
        await _until(lambda: len(model.calls) == 1)
        gone = asyncio.create_task(batcher([5]))
        bad = [asyncio.create_task(batcher([k])) for k in (6, 7, 8)]
        good = asyncio.create_task(batcher([9, 9]))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away before its batch ran
        model.gate.set()
        assert await blocker == [0]
        for task in bad:
            with pytest.raises(ValueError, match="cannot take 7"):
                await task
        assert await good == [18, 18]
        assert model.calls == [[0], [6, 7, 8], [9, 9]]
        batcher.close()

    asyncio.run(run())


def test_a_call_alone_runs_on_the_models_thread_between_batches() -> None:
    async def run() -> None:
        model = Model()
        batcher = Batcher(model, max_items=8)
        threads: list[str] = []

        def explain(n: int) -> int:
            threads.append(threading.current_thread().name)
            model.calls.append([-n])  # where it ran, in the order of the model's calls
            return n

        blocker = asyncio.create_task(batcher([1]))
        await _until(lambda: len(model.calls) == 1)
        alone = asyncio.create_task(batcher.alone(explain, 7))
        await asyncio.sleep(0.01)
        assert not alone.done()  # waits for the batch in flight
        model.gate.set()
        assert await blocker == [2] and await alone == 7
        assert model.calls == [[1], [-7]] and threads[0].startswith("model")
        batcher.close()

    asyncio.run(run())
