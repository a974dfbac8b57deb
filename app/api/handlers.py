"""Exception handlers: domain errors -> the protocol's error body, in one place."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.errors import (
    GENERIC_500,
    ClientClosedRequest,
    InternalError,
    InvalidInput,
    ModelNotFound,
    ServiceError,
    error_response,
)
from app.middleware import request_id_of

logger = logging.getLogger(__name__)


def _request_id(request: Request) -> str | None:
    return request_id_of(request.scope)


async def service_error(request: Request, exc: Exception) -> Response:
    """A domain error -> its status and body."""
    assert isinstance(exc, ServiceError)
    return error_response(exc, _request_id(request), request.url.path)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the service's error shape."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error: ServiceError = ModelNotFound("No such endpoint; the API is described at /docs.")
    elif exc.status_code == 405:
        error = ServiceError("This endpoint does not accept that HTTP method.")
        error.status = 405
    else:
        error = ServiceError(str(exc.detail) if exc.status_code < 500 else GENERIC_500)
        error.status = exc.status_code
    response = error_response(error, _request_id(request), request.url.path)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's parameter validation errors, as `InvalidInput` with the first problem named."""
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if problems:
        first = problems[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"Invalid {where}: {first.get('msg', 'invalid value')}."
    else:
        message = "Invalid request."
    return error_response(InvalidInput(message), _request_id(request), request.url.path)


async def client_disconnect(request: Request, exc: Exception) -> Response:
    """The client hung up mid-upload: status 499 (nginx's), logged at info, never a 500.

    Nobody reads the response; it exists so that the request is logged and
    counted with its own status.
    """
    assert isinstance(exc, ClientDisconnect)
    return error_response(
        ClientClosedRequest("The client closed the connection before the request was read."),
        _request_id(request),
        request.url.path,
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Anything else: a generic 500 with the request id; the traceback goes to the log only."""
    logger.exception("unhandled error", extra={"request_id": _request_id(request)}, exc_info=exc)
    return error_response(InternalError(GENERIC_500), _request_id(request), request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on `app`."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.add_exception_handler(Exception, unexpected_error)
