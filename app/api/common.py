"""What every router shares: dependencies, JSON responses, body reading, OpenAPI helpers."""

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.codecs.common import Encoded
from app.dataplane import DataPlane
from app.encoding import OFFLOAD_VALUES, array_footprint, encode_in_pieces
from app.errors import ModelNotFound
from app.limits import RESPONSE_BUDGET, check_response_bytes
from app.metrics import ServiceMetrics
from app.repository import ModelRepository
from app.validation import check_json_content_type


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, two thread hand-offs per request on the hot path (docs/benchmarks.md).
async def get_repository(request: Request) -> ModelRepository:
    """The app's model repository."""
    return request.app.state.repository


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's metrics."""
    return request.app.state.metrics


async def get_dataplane(request: Request) -> DataPlane:
    """The app's data plane."""
    return request.app.state.dataplane


RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


class NumpyJSONResponse(Response):
    """JSON via orjson, NumPy arrays serialised natively (float32 printed as float32).

    Before encoding, the answer's size is bounded from its arrays' shapes and
    dtypes and checked against the request's response budget
    (`MAX_RESPONSE_BYTES`): over it, `ResponseTooLarge` (413) is raised in the
    route, before a byte is built. A large answer (`OFFLOAD_VALUES` array
    values or more) is encoded when it is sent, in a worker thread and in
    pieces, so that the event loop keeps running meanwhile (app/encoding.py).
    """

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        values, bound = array_footprint(content)
        check_response_bytes(bound, RESPONSE_BUDGET.get())
        self._deferred = content if values >= OFFLOAD_VALUES else None
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        """Serialise `content` (a large one later, off the loop: see `__call__`)."""
        if self._deferred is not None:
            return b""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Encode a deferred answer in a worker thread, then send it."""
        if self._deferred is not None:
            content, self._deferred = self._deferred, None
            self.body = await asyncio.to_thread(encode_in_pieces, content)
            length = str(len(self.body)).encode("latin-1")
            self.raw_headers = [
                (key, length if key == b"content-length" else value)
                for key, value in self.raw_headers
            ]
        await super().__call__(scope, receive, send)


async def read_body(request: Request, *, check_content_type: bool = True) -> bytes:
    """Check the Content-Type and read the body (size-limited by the middleware).

    Args:
        request: The request.
        check_content_type: Refuse non-JSON Content-Types with 415 (TF Serving's
            routes skip this: TF Serving ignores the header, and `curl -d`
            sends a form type).

    Returns:
        The raw body.
    """
    if check_content_type:
        check_json_content_type(request.headers.get("content-type"))
    return await request.body()


def encoded_response(encoded: Encoded) -> Response:
    """A codec's answer as a Starlette response."""
    return Response(
        encoded.body,
        status_code=encoded.status,
        media_type=encoded.media_type,
        headers=encoded.headers or None,
    )


def parse_path_version(text: str) -> int:
    """A version from a URL path segment.

    Raises:
        ModelNotFound: Not a positive integer.
    """
    if text.isascii() and text.isdigit() and 0 < len(text) <= 18 and int(text) > 0:
        return int(text)
    raise ModelNotFound("No such version: versions are positive integers (1, 2, ...).")


# -- OpenAPI -------------------------------------------------------------

#: Schemas referenced by hand-written request bodies, merged into components by `main.py`.
EXTRA_SCHEMAS: dict[str, Any] = {}


def request_body(model: type[BaseModel], *, description: str = "") -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body that the route parses itself.

    Routes read their bodies with orjson (fast, and with their own messages),
    so the body is not a FastAPI parameter; this puts its schema in the spec.
    """
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    EXTRA_SCHEMAS.update(schema.pop("$defs", {}))
    EXTRA_SCHEMAS[model.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


class ErrorBody(BaseModel):
    """A native error: what went wrong, and the request's id (also in `X-Request-ID`)."""

    error: str
    request_id: str


class ProtocolErrorBody(BaseModel):
    """A TF Serving or v2 error, the shape their clients parse."""

    error: str


_DESCRIPTIONS = {
    400: "Invalid argument: the message names the problem",
    401: "Missing or wrong API key (only when API_KEY is set)",
    404: "Unknown model, version or route (or /grad disabled)",
    413: "Body over MAX_BODY_BYTES, batch over MAX_BATCH_ROWS or answer over MAX_RESPONSE_BYTES",
    415: "Content-Type is not JSON",
    422: "Invalid input: shape, non-numeric, NaN/Infinity, empty batch, unknown field",
    500: "Unexpected error (generic message; details only in the logs)",
    501: "Operation not offered",
    503: "Not ready (no model version loaded yet), or busy (MAX_QUEUED_REQUESTS waiting)",
}


def error_responses(*codes: int, protocol: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting error status codes and their body."""
    model = ProtocolErrorBody if protocol else ErrorBody
    return {code: {"model": model, "description": _DESCRIPTIONS[code]} for code in (*codes, 500)}
