"""Domain errors and the one place where they become HTTP responses.

Routes and the model layer raise these; `error_response` turns one into the
body and status code of the protocol the request spoke:

| error | native | TF Serving (`/v1`) | v2 (`/v2`) |
|---|---|---|---|
| `InvalidInput` | 422 | 400 | 400 |
| `PayloadTooLarge` | 413 | 413 | 413 |
| `UnsupportedMediaType` | 415 | 415 | 415 |
| `ModelNotFound` | 404 | 404 | 404 |
| `ModelNotReady` | 503 | 503 | 503 |
| `Overloaded` | 503 | 503 | 503 |
| `Unauthorized` | 401 | 401 | 401 |
| `Unimplemented` | 501 | 501 | 501 |
| `ResponseTooLarge` | 413 | 413 | 413 |
| `ClientClosedRequest` | 499 | 499 | 499 |

Native bodies are `{"error": msg, "request_id": id}`; the compatibility
protocols answer `{"error": msg}`, the shape their clients parse. A message
never carries a traceback or a filesystem path.
"""

from enum import StrEnum

import orjson
from starlette.responses import Response


class Protocol(StrEnum):
    """Which API a request spoke, decided by its path."""

    NATIVE = "native"
    TFSERVING = "tfserving"
    V2 = "v2"


def protocol_of(path: str) -> Protocol:
    """The protocol a path belongs to (`/v1/...` TF Serving, `/v2...` v2, else native)."""
    if path.startswith("/v1/"):
        return Protocol.TFSERVING
    if path == "/v2" or path.startswith("/v2/"):
        return Protocol.V2
    return Protocol.NATIVE


class ServiceError(Exception):
    """Base of every error the service reports to its caller.

    Args:
        message: What went wrong and what to do about it, for a person.
    """

    status: int = 500
    protocol_status: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def status_for(self, protocol: Protocol) -> int:
        """The HTTP status code for this error on the given protocol."""
        if protocol is not Protocol.NATIVE and self.protocol_status is not None:
            return self.protocol_status
        return self.status


class InvalidInput(ServiceError):
    """The request is malformed: shape, type, value or field (TF Serving's InvalidArgument)."""

    status = 422
    protocol_status = 400


class PayloadTooLarge(ServiceError):
    """The body or the batch is over its configured limit."""

    status = 413


class UnsupportedMediaType(ServiceError):
    """The request's Content-Type is not one the route reads."""

    status = 415


class ModelNotFound(ServiceError):
    """No such model, version or route (TF Serving's NotFound)."""

    status = 404


class ModelNotReady(ServiceError):
    """The model exists but has no loaded version yet (TF Serving's Unavailable)."""

    status = 503


class Overloaded(ServiceError):
    """Too many requests in flight (`MAX_CONCURRENT_REQUESTS`); the client should retry."""

    status = 503


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    status = 401


class Unimplemented(ServiceError):
    """A protocol operation this service does not offer (e.g. TF Serving's `:classify`)."""

    status = 501


class ResponseTooLarge(ServiceError):
    """The answer would be over the per-request response budget (`MAX_RESPONSE_BYTES`)."""

    status = 413


class ClientClosedRequest(ServiceError):
    """The client hung up before the request was read (nginx's 499): not a server error."""

    status = 499


class InternalError(ServiceError):
    """Anything unexpected; the message stays generic."""

    status = 500


GENERIC_500 = "Internal server error; the request id identifies it in the service's logs."


def error_body(message: str, request_id: str | None, protocol: Protocol) -> bytes:
    """The JSON error body for a protocol."""
    if protocol is Protocol.NATIVE:
        return orjson.dumps({"error": message, "request_id": request_id or ""})
    return orjson.dumps({"error": message})


def error_parts(exc: ServiceError, path: str) -> tuple[int, dict[str, str] | None, Protocol]:
    """The status, extra headers and protocol of a domain error's response to `path`."""
    protocol = protocol_of(path)
    headers = (
        {"WWW-Authenticate": 'Bearer realm="diffround"'}
        if isinstance(exc, Unauthorized)
        else {"Retry-After": "1"}
        if isinstance(exc, Overloaded)
        else None
    )
    return exc.status_for(protocol), headers, protocol


def error_response(exc: ServiceError, request_id: str | None, path: str) -> Response:
    """The HTTP response for a domain error, in the shape of the request's protocol."""
    status, headers, protocol = error_parts(exc, path)
    return Response(
        error_body(exc.message, request_id, protocol),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
