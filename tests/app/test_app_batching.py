"""The dynamic batcher on its own: order, limits, errors, cancelled callers, named inputs."""

import asyncio

import numpy as np
import pytest

from app.batching import Batcher, split_dict


def _recording_batcher(max_rows: int, max_wait_s: float = 0.0):
    calls: list[int] = []

    def fn(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(rows["x"]))
        return {"y": rows["x"] * 2.0, "z": rows["x"][:, :1] + rows["w"]}

    return Batcher(fn, split_dict, max_rows=max_rows, max_wait_s=max_wait_s), calls


def _named(x: np.ndarray) -> dict[str, np.ndarray]:
    """Two named inputs sharing the row axis: `x` and `w` = the row index within the request."""
    return {"x": x, "w": np.arange(len(x), dtype=np.float32)[:, None]}


def test_concurrent_callers_are_coalesced_and_each_gets_its_own_rows() -> None:
    batcher, calls = _recording_batcher(max_rows=64)
    inputs = [np.full((1 + i % 3, 2), float(i), np.float32) for i in range(20)]

    async def go():
        return await asyncio.gather(*[batcher.submit(_named(x)) for x in inputs])

    results = asyncio.run(go())
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2.0)
        np.testing.assert_array_equal(result["z"], x[:, :1] + np.arange(len(x))[:, None])
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < len(inputs)


def test_a_call_never_exceeds_max_rows_unless_one_request_is_bigger() -> None:
    batcher, calls = _recording_batcher(max_rows=5)
    inputs = [np.zeros((n, 2), np.float32) for n in (2, 2, 2, 9, 1, 4, 3)]

    async def go():
        return await asyncio.gather(*[batcher.submit(_named(x)) for x in inputs])

    asyncio.run(go())
    assert all(c <= 5 or c == 9 for c in calls)
    assert 9 in calls  # the big request ran alone, unsplit
    assert sum(calls) == 23


def test_model_errors_reach_every_caller_of_that_call() -> None:
    def fn(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ValueError("model failed")

    batcher = Batcher(fn, split_dict, max_rows=8)

    async def go():
        return await asyncio.gather(
            *[batcher.submit(_named(np.zeros((1, 2), np.float32))) for _ in range(3)],
            return_exceptions=True,
        )

    results = asyncio.run(go())
    assert all(isinstance(r, ValueError) for r in results)


def test_cancelled_callers_are_skipped_and_the_rest_answered() -> None:
    batcher, calls = _recording_batcher(max_rows=8, max_wait_s=0.05)

    async def go():
        doomed = asyncio.ensure_future(batcher.submit(_named(np.ones((3, 2), np.float32))))
        kept = asyncio.ensure_future(batcher.submit(_named(np.full((1, 2), 5.0, np.float32))))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept

    np.testing.assert_array_equal(asyncio.run(go())["y"], np.full((1, 2), 10.0))
    assert calls == [1]


def test_wait_window_flushes_early_when_full() -> None:
    batcher, calls = _recording_batcher(max_rows=4, max_wait_s=10.0)

    async def go():
        start = asyncio.get_running_loop().time()
        await asyncio.gather(
            *[batcher.submit(_named(np.zeros((1, 2), np.float32))) for _ in range(4)]
        )
        return asyncio.get_running_loop().time() - start

    assert asyncio.run(go()) < 1.0
    assert calls == [4]


@pytest.mark.parametrize("max_rows", [1])
def test_max_rows_one_calls_the_model_once_per_request(max_rows: int) -> None:
    batcher, calls = _recording_batcher(max_rows=max_rows)

    async def go():
        await asyncio.gather(
            *[batcher.submit(_named(np.zeros((2, 2), np.float32))) for _ in range(5)]
        )

    asyncio.run(go())
    assert calls == [2] * 5
