"""Pure ASGI middleware: request ids, logs and metrics; API key; body size limit.

Pure ASGI (not `BaseHTTPMiddleware`) because each layer runs on every
request and must cost microseconds. Order, outermost first (see `main.py`):
observability -> API key -> concurrency limit -> body limit -> response budget -> routes.
Each policy is also a plain method (`begin`/`record`, `refusal`,
`acquire`/`release`, `declared_too_large`/`too_large`) that the inference
fast lane (`app.fastlane`) calls in the same order, so one object holds each
policy and its state (the in-flight count, the metric children) for both paths.
"""

import asyncio
import hashlib
import itertools
import logging
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    GENERIC_500,
    InternalError,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    error_response,
)
from app.limits import RESPONSE_BUDGET
from app.metrics import ServiceMetrics

logger = logging.getLogger("app.requests")

#: nginx's status for a request whose client hung up before it was answered.
CLIENT_CLOSED_REQUEST = 499

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """New request ids: 32 hex digits, a random per-process prefix then a counter.

    Unique within the process and, with a 64-bit random prefix, across the
    workers and restarts of a deployment; about a tenth of `uuid4().hex`'s
    cost on the hot path. Not secrets: they only name requests in logs.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        """The next id."""
        return f"{self._prefix}{next(self._counter):016x}"


def request_id_of(scope: Scope) -> str | None:
    """The request id the observability middleware gave this request."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class OpenPaths:
    """The paths a policy leaves alone: exact paths and path prefixes.

    Args:
        paths: Exact paths.
        prefixes: Path prefixes.
    """

    def __init__(self, paths: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        self._paths = frozenset(paths)
        self._prefixes = tuple(prefixes)

    def pass_through(self, scope: Scope) -> bool:
        """Whether the policy does not apply: not an HTTP request, or an open path."""
        if scope["type"] != "http":
            return True
        path = scope["path"]
        return path in self._paths or path.startswith(self._prefixes)


class ObservabilityMiddleware:
    """Give each request an id (echoed in `X-Request-ID`), log it as JSON, record its metrics.

    An incoming `X-Request-ID` of up to 128 safe characters is kept; otherwise
    a new one is made. Anything a route raises that no handler took becomes a
    generic 500 `{"error", "request_id"}`, with the traceback only in the log.
    Successful requests are logged at debug level, 4xx and 503 at info, other 5xx at error;
    a client that hung up mid-request is counted and logged (info) with status 499.

    The fast lane (`app.fastlane`) calls `begin`, `record` and `unhandled`
    directly, so both paths give ids, logs and metrics the same way.

    Args:
        app: The wrapped ASGI app.
        metrics: Where request counts and latencies go.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._ids = RequestIds()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def begin(self, scope: Scope) -> str:
        """The request's id (kept from `X-Request-ID` when safe, else new), stored in its scope."""
        incoming = header(scope, b"x-request-id")
        request_id = incoming.decode("latin-1") if incoming else ""
        if not (request_id and _REQUEST_ID.match(request_id)):
            request_id = self._ids.new()
        scope.setdefault("state", {})["request_id"] = request_id
        return request_id

    def record(self, scope: Scope, request_id: str, status: int, elapsed: float) -> None:
        """Count the finished request, observe its latency and log it."""
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"
        key = (label, scope["method"], status)
        children = self._children.get(key)
        if children is None:  # prometheus' labels() costs ~10 us: look each up once
            children = self._children[key] = (
                self.metrics.requests.labels(label, scope["method"], str(status)),
                self.metrics.latency.labels(label),
            )
        children[0].inc()
        children[1].observe(elapsed)
        # 503 (not ready yet) is expected while loading: info, like a 4xx.
        level = (
            logging.ERROR
            if status >= 500 and status != 503
            else logging.INFO
            if status >= 400
            else logging.DEBUG
        )
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": label,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    @staticmethod
    def unhandled(scope: Scope, request_id: str) -> Response:
        """Log the exception being handled (traceback in the log only); the generic 500."""
        logger.exception(
            "unhandled error",
            extra={"request_id": request_id, "method": scope["method"], "path": scope["path"]},
        )
        return error_response(InternalError(GENERIC_500), request_id, scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.begin(scope)
        id_header = (b"x-request-id", request_id.encode())
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The route's handler answers these with 499; one raised outside a route
            # (a middleware reading the body) lands here: the same status, never a 500.
            status = CLIENT_CLOSED_REQUEST
        except Exception:
            response = self.unhandled(scope, request_id)
            if not started:
                await response(scope, receive, send_with_id)
        finally:
            self.record(scope, request_id, status, time.perf_counter() - start)


class ApiKeyMiddleware:
    """Require the API key on every path but the open ones (health, metrics, docs, the page).

    The key comes in `X-API-Key: <key>` or `Authorization: Bearer <key>`; it is
    compared in constant time (SHA-256 digests of both, so neither content nor
    length leaks through timing).

    Args:
        app: The wrapped ASGI app.
        api_key: The configured key.
        open_paths: Exact paths served without a key.
        open_prefixes: Path prefixes served without a key.
    """

    def __init__(
        self,
        app: ASGIApp,
        api_key: str,
        open_paths: Iterable[str],
        open_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()
        self._open = OpenPaths(open_paths, open_prefixes)

    def _presented(self, scope: Scope) -> bytes | None:
        key = header(scope, b"x-api-key")
        if key is not None:
            return key
        authorization = header(scope, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        return None

    def refusal(self, scope: Scope) -> Unauthorized | None:
        """Why a request to a key-protected path is refused (no key, wrong key), or None."""
        presented = self._presented(scope)
        if presented is None:
            return Unauthorized(
                "Missing API key: send it in the X-API-Key header or as "
                "'Authorization: Bearer <key>'."
            )
        if secrets.compare_digest(hashlib.sha256(presented).digest(), self._digest):
            return None
        return Unauthorized("Wrong API key.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, then run the request (or answer 401)."""
        refused = None if self._open.pass_through(scope) else self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        await error_response(refused, request_id_of(scope), scope["path"])(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """Run at most `max_in_flight` requests at once; queue `max_queued` more; refuse the rest.

    A request counts from its start until the route has handed its whole
    response to the socket: uvicorn's `send` waits while the socket's write
    buffer is full, so a client that never reads its answer keeps its request
    counted. The bound on in-flight requests is thus also a bound on the
    memory held by unread responses (`max_in_flight` x `MAX_RESPONSE_BYTES`).
    A queued request waits before its body is read, so it holds only its
    connection. Beyond the queue: 503 with `Retry-After: 1`. Idle keep-alive
    connections do not count (uvicorn's `limit_concurrency` would count
    them); open paths (health, metrics, docs) are never queued or refused, so
    probes keep answering under overload.

    Args:
        app: The wrapped ASGI app.
        max_in_flight: Requests running at once (`MAX_CONCURRENT_REQUESTS`).
        max_queued: Requests waiting for a slot (`MAX_QUEUED_REQUESTS`).
        open_paths: Exact paths never counted or refused.
        open_prefixes: Path prefixes never counted or refused.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        max_queued: int = 0,
        open_paths: Iterable[str] = (),
        open_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._open = OpenPaths(open_paths, open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request when there is room (after waiting in the queue), else answer 503."""
        if self._open.pass_through(scope):
            await self.app(scope, receive, send)
            return
        try:
            await self.acquire()
        except Overloaded as exc:
            await error_response(exc, request_id_of(scope), scope["path"])(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.release()

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue when all are taken; pair with `release`.

        Raises:
            Overloaded: Every slot and queue place is taken (503, `Retry-After: 1`).
        """
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queued:
            raise Overloaded(
                f"The service is busy: {self.max_in_flight} requests are in flight and "
                f"{len(self._waiters)} queued (MAX_CONCURRENT_REQUESTS, "
                "MAX_QUEUED_REQUESTS); retry shortly."
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a finishing request hands its slot over (in_flight unchanged)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give the slot to the first live waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1


class ResponseBudgetMiddleware:
    """Make `MAX_RESPONSE_BYTES` the budget of every answer built for this request.

    Sets `app.limits.RESPONSE_BUDGET` for the request's context, which
    `NumpyJSONResponse` checks before encoding.

    Args:
        app: The wrapped ASGI app.
        max_bytes: The budget (`MAX_RESPONSE_BYTES`).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with the budget set."""
        token = RESPONSE_BUDGET.set(self.max_bytes)
        try:
            await self.app(scope, receive, send)
        finally:
            RESPONSE_BUDGET.reset(token)


class BodyLimitMiddleware:
    """Answer 413 for bodies over `max_bytes`, before reading them whole.

    A declared `Content-Length` over the limit is refused at once, without
    reading a byte; otherwise the bytes are counted as they arrive and the
    read fails with `PayloadTooLarge` as soon as the count passes the limit.

    Args:
        app: The wrapped ASGI app.
        max_bytes: The limit (`MAX_BODY_BYTES`).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def declared_too_large(self, scope: Scope) -> PayloadTooLarge | None:
        """The 413 for a declared `Content-Length` over the limit, or None."""
        declared = header(scope, b"content-length")
        # Length-checked before int(): Python refuses to convert more than 4300 digits.
        if (
            declared is not None
            and declared.isdigit()
            and (len(declared) > 18 or int(declared) > self.max_bytes)
        ):
            return self.too_large(int(declared) if len(declared) <= 18 else None)
        return None

    def too_large(self, size: int | None) -> PayloadTooLarge:
        what = f"Request body of {size} bytes" if size is not None else "Request body"
        return PayloadTooLarge(
            f"{what} is over the limit of {self.max_bytes} bytes (MAX_BODY_BYTES); "
            "split the batch into smaller requests."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self.declared_too_large(scope)
        if declared is not None:
            await error_response(declared, request_id_of(scope), scope["path"])(
                scope, receive, send
            )
            return
        received = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self.too_large(None)
            return message

        await self.app(scope, counting_receive, send)
