"""The inference fast lane: the hot routes of every protocol as plain ASGI, in front of FastAPI.

`POST /predict`, `POST /grad`, TF Serving's `:predict` and v2's `infer` are
answered here without Starlette's router, a `Request` object or FastAPI's
endpoint machinery (together about two thirds of a trivial FastAPI route's
cost, docs/benchmarks.md); everything else (docs, OpenAPI, models, health,
metrics, the page, and every other method on these paths) goes to the
FastAPI app. The lane is the same service, not a second one: it sits inside
the same middleware chain (request ids, JSON logs, Prometheus metrics, API
key, concurrency bound, body limit, response budget; see `app.main`), calls
the same codecs over the same data plane and answers with the same error
bodies and status codes. FastAPI keeps the routes, so the OpenAPI spec still
documents them.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.common import parse_path_version
from app.codecs import native, tfserving, v2
from app.codecs.common import Encoded
from app.dataplane import DataPlane
from app.errors import ClientClosedRequest, ServiceError, error_response
from app.middleware import request_id_of
from app.validation import check_json_content_type

Handler = Callable[[DataPlane, bytes, Scope, dict[str, str]], Awaitable[Encoded]]


@dataclass(frozen=True, slots=True)
class LaneRoute:
    """What `ObservabilityMiddleware` reads as the route: its path template (metrics label)."""

    path: str


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _native_predict(plane: DataPlane, body: bytes, scope: Scope, _: dict) -> Encoded:
    return await native.predict(plane, body)


async def _native_grad(plane: DataPlane, body: bytes, scope: Scope, _: dict) -> Encoded:
    return await native.grad(plane, body)


async def _tfserving_predict(plane: DataPlane, body: bytes, _: Scope, p: dict) -> Encoded:
    version = parse_path_version(p["version"]) if p.get("version") is not None else None
    return await tfserving.predict(plane, body, p["name"], version)


async def _v2_infer(plane: DataPlane, body: bytes, scope: Scope, p: dict) -> Encoded:
    version = parse_path_version(p["version"]) if p.get("version") is not None else None
    return await v2.infer(
        plane,
        body,
        _header(scope, b"inference-header-content-length"),
        _header(scope, b"content-type"),
        p["name"],
        version,
    )


# (pattern, route template, handler, whether a non-JSON Content-Type is a 415 up front)
_ROUTES: tuple[tuple[re.Pattern[str], LaneRoute, Handler, bool], ...] = (
    (re.compile(r"/predict"), LaneRoute("/predict"), _native_predict, True),
    (re.compile(r"/grad"), LaneRoute("/grad"), _native_grad, True),
    (
        re.compile(r"/v1/models/(?P<name>[^/]+):predict"),
        LaneRoute("/v1/models/{name}:predict"),
        _tfserving_predict,
        False,
    ),
    (
        re.compile(r"/v1/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+):predict"),
        LaneRoute("/v1/models/{name}/versions/{version}:predict"),
        _tfserving_predict,
        False,
    ),
    (
        re.compile(r"/v2/models/(?P<name>[^/]+)/infer"),
        LaneRoute("/v2/models/{name}/infer"),
        _v2_infer,
        False,
    ),
    (
        re.compile(r"/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/infer"),
        LaneRoute("/v2/models/{name}/versions/{version}/infer"),
        _v2_infer,
        False,
    ),
)
#: First characters of the lane's paths: anything else goes straight to FastAPI.
_PREFIXES = ("/predict", "/grad", "/v1/models/", "/v2/models/")


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the body limit is enforced by the middleware's `receive`).

    Raises:
        ClientDisconnect: The client hung up before sending all of it.
    """
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_encoded(send: Send, encoded: Encoded) -> None:
    """Send a codec's answer as one `http.response.start` and one body message."""
    headers = [
        (b"content-type", encoded.media_type.encode("latin-1")),
        (b"content-length", str(len(encoded.body)).encode("latin-1")),
    ]
    headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in encoded.headers.items()
    )
    start: Message = {"type": "http.response.start", "status": encoded.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": encoded.body})


class FastLane:
    """Answer the hot inference routes directly; hand everything else to `app`.

    Args:
        app: The FastAPI app (without the middleware, which wraps this object).
        plane: The data plane the codecs run on.
    """

    def __init__(self, app: ASGIApp, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane

    def match(self, scope: Scope) -> tuple[LaneRoute, Handler, bool, dict[str, str]] | None:
        """The lane route a request takes, or None (then FastAPI answers it)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = scope["path"]
        if not path.startswith(_PREFIXES):
            return None
        for pattern, route, handler, json_only in _ROUTES:
            found = pattern.fullmatch(path)
            if found is not None:
                return route, handler, json_only, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one request on the lane, or pass it to FastAPI."""
        matched = self.match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, handler, json_only, params = matched
        scope["route"] = route
        try:
            if json_only:
                check_json_content_type(_header(scope, b"content-type"))
            body = await read_body(receive)
            encoded = await handler(self.plane, body, scope, params)
        except ServiceError as exc:
            await error_response(exc, request_id_of(scope), scope["path"])(scope, receive, send)
            return
        except ClientDisconnect:
            closed = ClientClosedRequest(
                "The client closed the connection before the request was read."
            )
            await error_response(closed, request_id_of(scope), scope["path"])(scope, receive, send)
            return
        await send_encoded(send, encoded)
