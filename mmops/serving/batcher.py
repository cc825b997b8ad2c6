"""Batching of a blocking model call across the concurrent requests of one event loop, in the process that
answers them.

Requests queue while a batch runs (in a thread of its own: torch releases the interpreter lock while it
computes, so the event loop goes on parsing and decoding the next requests); when it returns, everything
queued, up to `max_items` records, runs as the next batch. There is no timer: a request that finds the model
idle runs at once, alone, and a batch is as large as the load made it while the previous one computed (what
Triton calls dynamic batching with no queue delay). A request larger than `max_items` runs as a batch of its
own; `max_items=0` runs every request alone (batching off). A batch that raises fails each request in it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
R2 = TypeVar("R2")


class Batcher(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], list[R]], max_items: int = 64, name: str = "model") -> None:
        self.call, self.max_items = call, max_items
        self._queue: deque[tuple[Sequence[T], asyncio.Future[list[R]]]] = deque()
        self._running: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)  # one model call at a time
        self.batches = 0  # model calls made, and the records they took: their ratio is the mean batch size
        self.items = 0

    async def __call__(self, items: Sequence[T]) -> list[R]:
        """The call's answers for `items`, in their order, computed in a batch with whatever else is queued."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    def _next(self) -> list[tuple[Sequence[T], asyncio.Future[list[R]]]]:
        """The queued requests of the next batch: the first, and those after it while they fit."""
        taken = [self._queue.popleft()]
        size = len(taken[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self.max_items:
            size += len(self._queue[0][0])
            taken.append(self._queue.popleft())
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                taken = [(items, f) for items, f in self._next() if not f.done()]  # a request given up: skipped
                if not taken:
                    continue
                flat = [item for items, _ in taken for item in items]
                self.batches, self.items = self.batches + 1, self.items + len(flat)
                try:
                    answers = await loop.run_in_executor(self._pool, self.call, flat)
                    if len(answers) != len(flat):
                        raise RuntimeError(f"{len(answers)} answers to a batch of {len(flat)}")
                except Exception as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                at = 0
                for items, future in taken:
                    if not future.done():  # the client went away while its batch ran
                        future.set_result(answers[at:at + len(items)])
                    at += len(items)
        finally:
            self._running = None

    async def alone(self, call: Callable[..., R2], *args: Any) -> R2:
        """`call(*args)` on the model's thread, between batches: what must not overlap a batch (an explanation
        hooks into the model's layers while it runs)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "records": self.items,
                "mean_batch": round(self.items / self.batches, 2) if self.batches else None}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
