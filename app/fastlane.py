"""The inference fast lane: the hot routes of every protocol as plain ASGI, beside FastAPI.

`POST /predict`, `POST /grad`, TF Serving's `:predict` and v2's `infer` are
answered here without Starlette's router, a `Request` object, FastAPI's
endpoint machinery or a stack of middleware coroutines (together about two
thirds of a trivial FastAPI route's cost, docs/benchmarks.md); everything else
(docs, OpenAPI, models, health, metrics, the page, and every other method on
these paths) goes through the middleware chain to the FastAPI app (`app.main`).

The lane is the same service, not a second one. It runs the same policy
objects as that chain, in the chain's order, as plain calls in one coroutine:
the request id, metrics and JSON log (`ObservabilityMiddleware.begin/record`),
the API key (`ApiKeyMiddleware.refusal`), the concurrency bound shared with
every other request (`ConcurrencyLimitMiddleware.acquire/release`) and the
body limit (`BodyLimitMiddleware`); the codecs enforce the response budget
themselves. It calls the same codecs over the same data plane and answers
with the same error bodies and status codes. FastAPI keeps the routes, so the
OpenAPI spec still documents them.
"""

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from app.api.common import parse_path_version
from app.codecs import native, tfserving, v2
from app.codecs.common import Encoded
from app.dataplane import DataPlane
from app.errors import (
    ClientClosedRequest,
    ServiceError,
    error_body,
    error_parts,
)
from app.middleware import (
    CLIENT_CLOSED_REQUEST,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    ObservabilityMiddleware,
    header,
)
from app.validation import check_json_content_type

Handler = Callable[[DataPlane, bytes, Scope, dict[str, str]], Awaitable[Encoded]]


@dataclass(frozen=True, slots=True)
class LaneRoute:
    """What `ObservabilityMiddleware` reads as the route: its path template (metrics label)."""

    path: str


def _header(scope: Scope, name: bytes) -> str | None:
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


# Each handler is a plain function returning the codec's coroutine (not a coroutine
# itself), so the lane's await chain, re-entered at every resumption, is one level shorter.
def _native_predict(plane: DataPlane, body: bytes, scope: Scope, _: dict) -> Awaitable[Encoded]:
    return native.predict(plane, body)


def _native_grad(plane: DataPlane, body: bytes, scope: Scope, _: dict) -> Awaitable[Encoded]:
    return native.grad(plane, body)


def _tfserving_predict(plane: DataPlane, body: bytes, _: Scope, p: dict) -> Awaitable[Encoded]:
    version = parse_path_version(p["version"]) if p.get("version") is not None else None
    return tfserving.predict(plane, body, p["name"], version)


def _v2_infer(plane: DataPlane, body: bytes, scope: Scope, p: dict) -> Awaitable[Encoded]:
    version = parse_path_version(p["version"]) if p.get("version") is not None else None
    return v2.infer(
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


async def read_body(receive: Receive, limit: BodyLimitMiddleware) -> bytes:
    """The whole request body, refused as soon as it grows past the body limit.

    Raises:
        PayloadTooLarge: Over `MAX_BODY_BYTES`.
        ClientDisconnect: The client hung up before sending all of it.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit.max_bytes:
            raise limit.too_large(None)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_encoded(send: Send, encoded: Encoded, request_id: str) -> None:
    """Send an answer as one `http.response.start` and one body message."""
    headers = [
        (b"content-type", encoded.media_type.encode("latin-1")),
        (b"content-length", b"%d" % len(encoded.body)),
        (b"x-request-id", request_id.encode("latin-1")),
    ]
    if encoded.headers:
        headers.extend(
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in encoded.headers.items()
        )
    start: Message = {"type": "http.response.start", "status": encoded.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": encoded.body})


def error_encoded(exc: ServiceError, request_id: str, path: str) -> Encoded:
    """A domain error as the answer `app.errors.error_response` gives (status, body, headers)."""
    status, headers, protocol = error_parts(exc, path)
    return Encoded(
        error_body(exc.message, request_id, protocol), headers=headers or {}, status=status
    )


MatchedRoute = tuple[LaneRoute, Handler, bool, dict[str, str]]


class FastLane:
    """Answer the hot inference routes with the service's own policies, in one coroutine.

    Args:
        plane: The data plane the codecs run on.
        observability: Request ids, metrics and logs (shared with the chain).
        api_key: The API key check, or None when no key is set.
        limiter: The concurrency bound (shared: one count for every request).
        body_limit: The body size limit.
    """

    def __init__(
        self,
        plane: DataPlane,
        observability: ObservabilityMiddleware,
        api_key: ApiKeyMiddleware | None,
        limiter: ConcurrencyLimitMiddleware,
        body_limit: BodyLimitMiddleware,
    ) -> None:
        self.plane = plane
        self.observability = observability
        self.api_key = api_key
        self.limiter = limiter
        self.body_limit = body_limit

    @staticmethod
    def match(scope: Scope) -> MatchedRoute | None:
        """The lane route a request takes, or None (then the chain and FastAPI answer it)."""
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

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, matched: MatchedRoute
    ) -> None:
        """Run one lane request: id, key, slot, body limit, codec, answer; then metrics and log.

        The order is the chain's (outermost first); the slot is held until the
        answer is handed to the socket, as the chain holds it. Anything
        unexpected becomes the generic 500 (traceback in the log only); a client
        that hung up is a 499.
        """
        observability = self.observability
        request_id = observability.begin(scope)
        scope["route"] = matched[0]
        path = scope["path"]
        start = time.perf_counter()
        status = 500
        started = False
        try:
            refused: ServiceError | None = None
            if self.api_key is not None:
                refused = self.api_key.refusal(scope)
            if refused is None:
                try:
                    await self.limiter.acquire()
                except ServiceError as exc:
                    refused = exc
            if refused is not None:
                encoded = error_encoded(refused, request_id, path)
                status, started = encoded.status, True
                await send_encoded(send, encoded, request_id)
                return
            try:
                encoded = await self._answer(scope, receive, request_id, matched)
                status, started = encoded.status, True
                await send_encoded(send, encoded, request_id)
            finally:
                self.limiter.release()
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
        except Exception:
            response = observability.unhandled(scope, request_id)
            if not started:
                response.raw_headers.append((b"x-request-id", request_id.encode("latin-1")))
                await response(scope, receive, send)
        finally:
            observability.record(scope, request_id, status, time.perf_counter() - start)

    async def _answer(
        self, scope: Scope, receive: Receive, request_id: str, matched: MatchedRoute
    ) -> Encoded:
        """The codec's answer, or the domain error it raised as an answer."""
        _, handler, json_only, params = matched
        try:
            too_large = self.body_limit.declared_too_large(scope)
            if too_large is not None:
                raise too_large
            if json_only:
                check_json_content_type(_header(scope, b"content-type"))
            body = await read_body(receive, self.body_limit)
            return await handler(self.plane, body, scope, params)
        except ServiceError as exc:
            return error_encoded(exc, request_id, scope["path"])
        except ClientDisconnect:
            closed = ClientClosedRequest(
                "The client closed the connection before the request was read."
            )
            return error_encoded(closed, request_id, scope["path"])
