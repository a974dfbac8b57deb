"""Dynamic batching: coalesce concurrent requests for one model version into one call.

One `Batcher` belongs to one model version and one signature, so a batch
never mixes models or versions. The model call runs on the event loop
(docs: PERFORMANCE_FACTS.md — a thread gains nothing with one core per worker,
and the loop is blocked for the ~150 us of a call anyway), so "no wait"
(`max_wait_s == 0`) batching means: while one call runs, requests queue up;
the next call takes all of them, up to `max_rows` rows.

A request with more rows than `max_rows` runs alone, in one call (it is not split).
Inputs and results are dicts of arrays whose first axis is rows (a
signature's named inputs and outputs); callers only share a batcher when
their non-batch shapes and dtypes match, so stacking them is always valid.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
Tensors = dict[str, np.ndarray]


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
    """

    def __init__(
        self,
        fn: Callable[[Tensors], T],
        split: Callable[[T, int, int], T],
        *,
        max_rows: int,
        max_wait_s: float = 0.0,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        self._fn = fn
        self._split = split
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._observe = observe or (lambda rows, requests: None)
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
        count = row_count(rows)
        if self._max_rows <= 1:
            result = self._fn(rows)
            self._observe(count, 1)
            return result
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
        return await future

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
        try:
            result = self._fn(stacked)
        except Exception as exc:  # every caller of the failed call gets the error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
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
