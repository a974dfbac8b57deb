"""The HTTP limit: a plain ASGI callable returning a constant, no framework at all.

Not part of the service's API: the benchmark serves it from its own process
(`python -m bench.serve_asgi bench.raw_asgi_app:app`, the service's uvicorn
options) beside the trivial FastAPI route (`bench/floor_app.py`). What it
costs per request is what uvicorn + uvloop + httptools cost: no Starlette
routing, no `Request` object, no middleware. It answers `/predict` as the
floor does (the same constant body, the request body left unread) and
`/readyz`; anything else is a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

PREDICT_BODY = b'{"model":"floor","version":1,"outputs":{"bits":[[0,0,1,1]]},"decoded":[3]}'
READY_BODY = b'{"status":"ready"}'
NOT_FOUND_BODY = b'{"detail":"Not Found"}'


def _start(status: int, body: bytes) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


_RESPONSES = {
    ("POST", "/predict"): (_start(200, PREDICT_BODY), PREDICT_BODY),
    ("GET", "/readyz"): (_start(200, READY_BODY), READY_BODY),
}
_NOT_FOUND = (_start(404, NOT_FOUND_BODY), NOT_FOUND_BODY)


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """ASGI 3 entry point: HTTP requests and the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    start, body = _RESPONSES.get((scope["method"], scope["path"]), _NOT_FOUND)
    await send(start)
    await send({"type": "http.response.body", "body": body})
