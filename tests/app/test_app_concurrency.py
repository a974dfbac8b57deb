"""The concurrency bound on its own: a slot each, a queue, then 503; open paths never wait."""

from __future__ import annotations

import asyncio

from app.middleware import ConcurrencyLimitMiddleware


def test_requests_run_up_to_the_bound_queue_then_get_503() -> None:
    started: list[str] = []

    async def main() -> tuple[list[str], dict[str, int]]:
        gate = asyncio.Event()

        async def app(scope, receive, send) -> None:
            started.append(scope["path"])
            if scope["path"] != "/healthz":
                await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limited = ConcurrencyLimitMiddleware(
            app, max_in_flight=2, max_queued=1, open_paths=["/healthz"]
        )
        statuses: dict[str, int] = {}

        async def call(path: str) -> None:
            async def receive() -> dict:
                return {"type": "http.request", "body": b""}

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    statuses[path] = message["status"]

            await limited({"type": "http", "path": path, "headers": []}, receive, send)

        tasks = [asyncio.ensure_future(call(f"/r{i}")) for i in range(4)]
        await asyncio.sleep(0.01)
        assert started == ["/r0", "/r1"]  # two run, one queues, one is refused
        assert statuses == {"/r3": 503}
        await call("/healthz")  # open paths pass even now
        assert statuses["/healthz"] == 200
        gate.set()
        await asyncio.gather(*tasks)
        assert limited.in_flight == 0
        return started, statuses

    started_paths, statuses = asyncio.run(main())
    assert started_paths == ["/r0", "/r1", "/healthz", "/r2"]
    assert statuses == {"/r0": 200, "/r1": 200, "/r2": 200, "/r3": 503, "/healthz": 200}


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def main() -> int:
        gate = asyncio.Event()

        async def app(scope, receive, send) -> None:
            await gate.wait()

        limited = ConcurrencyLimitMiddleware(app, max_in_flight=1, max_queued=2)

        async def call() -> None:
            await limited({"type": "http", "path": "/x", "headers": []}, None, None)

        first = asyncio.ensure_future(call())
        waiting = asyncio.ensure_future(call())
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await first
        return limited.in_flight

    assert asyncio.run(main()) == 0
