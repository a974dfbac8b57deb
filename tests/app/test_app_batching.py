"""The dynamic batcher on its own: order, limits, errors, cancelled callers, named inputs."""

import asyncio
import gc

import numpy as np
import pytest

from app.batching import Batcher, split_dict
from app.config import Settings
from app.dataplane import DataPlane
from app.errors import InvalidInput
from app.predictor import ModelCallError


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


def test_large_calls_run_off_the_loop_and_small_ones_on_it() -> None:
    """Calls of `offload_rows` rows or more run in a worker thread; the loop stays free."""
    import threading
    import time

    loop_thread: list[int] = []
    call_threads: dict[int, int] = {}

    def fn(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = rows["x"]
        call_threads[len(x)] = threading.get_ident()
        if len(x) >= 8:
            time.sleep(0.3)  # a long model call (TensorFlow releases the GIL as sleep does)
        return {"y": x * 2.0}

    async def main() -> tuple[list[np.ndarray], int]:
        loop_thread.append(threading.get_ident())
        batcher = Batcher(fn, split_dict, max_rows=64, offload_rows=8)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        big = np.arange(16, dtype=np.float32).reshape(8, 2)
        results = await asyncio.gather(batcher.submit({"x": big}))
        small = await batcher.submit({"x": np.ones((1, 2), np.float32)})
        ticker.cancel()
        return [results[0]["y"], small["y"]], ticks

    (big_result, small_result), ticks = asyncio.run(main())
    np.testing.assert_array_equal(big_result, np.arange(16, dtype=np.float32).reshape(8, 2) * 2)
    np.testing.assert_array_equal(small_result, np.full((1, 2), 2.0, np.float32))
    assert call_threads[8] != loop_thread[0]
    assert call_threads[1] == loop_thread[0]
    assert ticks >= 10  # the loop ran its timer during the 0.3 s call


def test_an_off_loop_failure_reaches_every_caller() -> None:
    def fn(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ValueError("boom")

    async def main() -> list[BaseException | dict]:
        batcher = Batcher(fn, split_dict, max_rows=64, offload_rows=2)
        return await asyncio.gather(
            batcher.submit({"x": np.zeros((1, 2), np.float32)}),
            batcher.submit({"x": np.zeros((1, 2), np.float32)}),
            return_exceptions=True,
        )

    assert all(isinstance(r, ValueError) for r in asyncio.run(main()))


def _named_batcher(name: str, order: list[str], fail: bool = False, max_wait_s: float = 0.0):
    def fn(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order.append(name)
        if fail:
            raise ModelCallError(f"{name} refused")
        return {"y": rows["x"] + 1.0}

    return Batcher(fn, split_dict, max_rows=8, max_wait_s=max_wait_s)


class _Served:
    """The one method `DataPlane.run_both` uses: `start(signature, inputs)`."""

    def __init__(self, **batchers: Batcher) -> None:
        self.batchers = batchers

    def start(self, signature: str, inputs: dict[str, np.ndarray]):
        return self.batchers[signature].enqueue(inputs)


def _collecting(loop: asyncio.AbstractEventLoop) -> list[dict]:
    """Errors asyncio would log (e.g. "Future exception was never retrieved")."""
    logged: list[dict] = []
    loop.set_exception_handler(lambda _, context: logged.append(context))
    return logged


def test_enqueued_calls_of_two_batchers_run_in_the_same_turn_of_the_loop() -> None:
    order: list[str] = []
    first, second = _named_batcher("first", order), _named_batcher("second", order)

    async def go():
        a = first.enqueue({"x": np.zeros((1, 2), np.float32)})
        b = second.enqueue({"x": np.ones((2, 2), np.float32)})
        assert not a.done() and not b.done() and order == []
        await asyncio.sleep(0)  # one turn of the loop runs both queued calls
        assert a.done() and b.done()
        return a.result(), b.result()

    a, b = asyncio.run(go())
    assert order == ["first", "second"]
    np.testing.assert_array_equal(a["y"], np.ones((1, 2)))
    np.testing.assert_array_equal(b["y"], np.full((2, 2), 2.0))


@pytest.mark.parametrize("failing", [("hard",), ("grad",), ("hard", "grad")])
def test_run_both_reports_a_refusal_as_invalid_input_and_leaves_nothing_unseen(failing) -> None:
    order: list[str] = []
    served = _Served(**{n: _named_batcher(n, order, fail=n in failing) for n in ("hard", "grad")})
    plane = DataPlane(None, Settings())  # type: ignore[arg-type]
    rows = {"x": np.zeros((1, 2), np.float32)}

    async def go():
        await plane.run_both(served, ("hard", rows), ("grad", rows))

    loop = asyncio.new_event_loop()
    handled = _collecting(loop)
    with pytest.raises(InvalidInput) as raised:
        loop.run_until_complete(go())
    message = str(raised.value)
    del raised  # its traceback holds run_both's frame, and with it both futures
    gc.collect()  # a future whose error nobody saw logs it when it is collected
    loop.close()
    assert message == f"The model refused the input: {failing[0]} refused"
    assert handled == []
    assert order == ["hard", "grad"]  # both were queued together and ran


def test_run_both_cancelled_leaves_the_queued_rows_out_of_the_next_call() -> None:
    order: list[str] = []
    served = _Served(
        hard=_named_batcher("hard", order, max_wait_s=0.05),
        grad=_named_batcher("grad", order, max_wait_s=0.05),
    )
    plane = DataPlane(None, Settings())  # type: ignore[arg-type]
    rows = {"x": np.zeros((1, 2), np.float32)}

    async def go():
        logged = _collecting(asyncio.get_running_loop())
        task = asyncio.create_task(plane.run_both(served, ("hard", rows), ("grad", rows)))
        await asyncio.sleep(0.01)  # both queued, waiting for company
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)  # the wait windows pass: nothing is left to call
        return logged

    assert asyncio.run(go()) == []
    assert order == []
