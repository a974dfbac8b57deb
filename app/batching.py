"""Dynamic batching: coalesce concurrent requests for one model version into one call.

One `Batcher` belongs to one model version and one signature, so a batch
never mixes models or versions. A small call runs on the event loop
(docs: PERFORMANCE_FACTS.md: a thread hand-off costs more than the ~150 us
call, and a thread gains nothing with one core per worker), so "no wait"
(`max_wait_s == 0`) batching means: while one call runs, requests queue up;
the next call takes all of them, up to `max_rows` rows.

A call of `offload_rows` rows or more (a large `/grad`, say: 4096 rows take
hundreds of milliseconds) runs in a worker thread instead: TensorFlow
releases the GIL while it computes, so the loop keeps answering health
probes and small requests meanwhile (docs/reliability.md, "Event loop").

A request with more rows than `max_rows` runs alone, in one call (it is not split).
Inputs and results are dicts of arrays whose first axis is rows (a
signature's named inputs and outputs); callers only share a batcher when
their non-batch shapes and dtypes match, so stacking them is always valid.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
Tensors = dict[str, np.ndarray]

#: Calls of at least this many rows run in a worker thread, not on the event loop.
#: At 256 rows the default model's `grad` call takes ~10 ms, where the ~100 us of a
#: thread hand-off no longer matters; below, the call is shorter than a probe's budget.
OFFLOAD_ROWS = 256


@dataclass(slots=True)
class _Pending(Generic[T]):
    rows: Tensors
    count: int
    future: "asyncio.Future[T]"


def stack(parts: list[Tensors]) -> Tensors:
    """Concatenate several callers' inputs along the row axis, input by input."""
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def row_count(rows: Tensors) -> int:
    """Rows in a dict of batch-major arrays (all share the first dimension)."""
    return len(next(iter(rows.values()))) if rows else 0


class Batcher(Generic[T]):
    """Coalesce `submit` calls into calls of `fn` on stacked rows; each caller gets its rows back.

    Args:
        fn: The model call: named batch-major arrays -> a result whose leading axis is rows.
        split: Cuts the result of a call back into one caller's rows (`split(result, start, stop)`).
        max_rows: Most rows per call (1 turns batching off: every request calls `fn` directly).
        max_wait_s: How long the first queued request waits for company (0: no wait).
        observe: Called with (rows, requests) after each model call, for metrics.
        offload_rows: Calls of at least this many rows run in a worker thread
            (`OFFLOAD_ROWS`); smaller ones on the event loop.
    """

    def __init__(
        self,
        fn: Callable[[Tensors], T],
        split: Callable[[T, int, int], T],
        *,
        max_rows: int,
        max_wait_s: float = 0.0,
        observe: Callable[[int, int], None] | None = None,
        offload_rows: int = OFFLOAD_ROWS,
    ) -> None:
        self._fn = fn
        self._split = split
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._observe = observe or (lambda rows, requests: None)
        self._offload_rows = offload_rows
        self._queue: deque[_Pending[T]] = deque()
        self._queued_rows = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, rows: Tensors) -> T:
        """Run the model on `rows` (alone or with other callers' rows); return this caller's part.

        Args:
            rows: Named arrays sharing their first dimension n >= 1.

        Returns:
            The result for exactly these rows, in their order.
        """
        if self._max_rows <= 1:
            count = row_count(rows)
            if count >= self._offload_rows:
                result = await asyncio.get_running_loop().run_in_executor(None, self._fn, rows)
            else:
                result = self._fn(rows)
            self._observe(count, 1)
            return result
        return await self.enqueue(rows)

    @property
    def batches(self) -> bool:
        """Whether calls are coalesced (`max_rows` > 1), so `enqueue` may be used."""
        return self._max_rows > 1

    def enqueue(self, rows: Tensors) -> "asyncio.Future[T]":
        """Queue `rows` for the next model call and return at once (batching on only).

        Two calls enqueued before either is awaited run in the same turn of the
        event loop. Cancelling the future before its call leaves its rows out.

        Returns:
            A future of the result for exactly these rows, in their order.
        """
        count = row_count(rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Pending(rows, count, future))
        self._queued_rows += count
        if not self._scheduled:
            self._scheduled = True
            if self._max_wait_s > 0 and self._queued_rows < self._max_rows:
                self._timer = loop.call_later(self._max_wait_s, self._drain)
            else:
                loop.call_soon(self._drain)
        elif self._timer is not None and self._queued_rows >= self._max_rows:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._drain)
        return future

    def _take(self) -> list[_Pending[T]]:
        batch: list[_Pending[T]] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the caller went away (cancelled): skip its rows
                self._queue.popleft()
                self._queued_rows -= head.count
                continue
            if batch and rows + head.count > self._max_rows:
                break
            self._queue.popleft()
            self._queued_rows -= head.count
            batch.append(head)
            rows += head.count
        return batch

    def _drain(self) -> None:
        self._scheduled = False
        self._timer = None
        batch = self._take()
        if self._queue:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)
        if not batch:
            return
        stacked = batch[0].rows if len(batch) == 1 else stack([p.rows for p in batch])
        total = sum(p.count for p in batch)
        if total >= self._offload_rows:
            call = asyncio.get_running_loop().run_in_executor(None, self._fn, stacked)
            call.add_done_callback(lambda done: self._deliver(batch, total, done))
            return
        try:
            result = self._fn(stacked)
        except Exception as exc:  # every caller of the failed call gets the error
            self._fail(batch, exc)
            return
        self._resolve(batch, total, result)

    def _deliver(self, batch: list[_Pending[T]], total: int, done: Any) -> None:
        """Hand an off-loop call's outcome to its callers (runs on the loop)."""
        exc = asyncio.CancelledError() if done.cancelled() else done.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._resolve(batch, total, done.result())

    @staticmethod
    def _fail(batch: list[_Pending[T]], exc: BaseException) -> None:
        for pending in batch:  # every caller of the failed call gets the error
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _resolve(self, batch: list[_Pending[T]], total: int, result: T) -> None:
        self._observe(total, len(batch))
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(result)
            return
        start = 0
        for pending in batch:
            stop = start + pending.count
            if not pending.future.done():
                pending.future.set_result(self._split(result, start, stop))
            start = stop


def split_dict(result: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """`split` for a dict-of-arrays result."""
    return {name: value[start:stop] for name, value in result.items()}
