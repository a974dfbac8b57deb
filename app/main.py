"""The app factory: `create_app(settings)` wires routers, middleware, handlers and the model poller.

Nothing loads at import time: the models root is scanned in the lifespan,
in the background, so `/healthz` answers at once and `/readyz` turns 200
when a model version has loaded and answered its warm-up call.
"""

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import health, native, tfserving, ui, v2
from app.api.common import EXTRA_SCHEMAS, ErrorBody, ProtocolErrorBody
from app.api.handlers import install_error_handlers
from app.api.model_spec import add_served_models, served_key
from app.config import Settings, get_settings
from app.dataplane import DataPlane
from app.fastlane import FastLane
from app.main_version import VERSION
from app.metrics import ServiceMetrics
from app.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    ObservabilityMiddleware,
    ResponseBudgetMiddleware,
)
from app.predictor import limit_tensorflow_threads
from app.repository import ModelRepository

#: Paths served without the API key: health, metrics, docs, the diagnostics page.
OPEN_PATHS = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/ui",
    "/ui/",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
)
OPEN_PREFIXES = ("/ui/static/",)

DESCRIPTION = """Predictions of any TensorFlow SavedModel (hard, exactly rounded values for
models trained through differentiable rounding), and the relaxed values and
gradients of models exported by `diffround.export`, over the service's own
API, TensorFlow Serving's REST API (`/v1/...`) and the Open Inference
Protocol v2 (`/v2/...`).
When `API_KEY` is set, model endpoints need `X-API-Key: <key>` or
`Authorization: Bearer <key>`; health, metrics and docs stay open."""


def _document_validation_errors(schema: dict[str, Any]) -> None:
    """Replace FastAPI's default 422 body (`HTTPValidationError`) with the service's error body.

    Parameter validation errors go through the service's own handler, so the
    spec must say they come back as `ErrorBody` (native) or `ProtocolErrorBody`.
    """
    components = schema["components"]["schemas"]
    for path, operations in schema.get("paths", {}).items():
        protocol = path.startswith(("/v1/", "/v2"))
        body = "ProtocolErrorBody" if protocol else "ErrorBody"
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response is None:
                continue
            content = response.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                if protocol:
                    del operation["responses"]["422"]
                    operation["responses"].setdefault(
                        "400",
                        {
                            "description": "Invalid argument",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{body}"}
                                }
                            },
                        },
                    )
                else:
                    response["description"] = "Invalid input"
                    content["schema"] = {"$ref": f"#/components/schemas/{body}"}
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    components.setdefault("ProtocolErrorBody", ProtocolErrorBody.model_json_schema())


def create_app(settings: Settings | None = None) -> "Service":
    """Build the service.

    Args:
        settings: The configuration; read from the environment when omitted
            (that is how `python -m app` and uvicorn's factory mode call it).

    Returns:
        The service (`Service`): the FastAPI app behind the middleware chain and
        the inference fast lane; its lifespan starts and stops the model poller.
    """
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    repository = ModelRepository(settings, metrics)
    dataplane = DataPlane(repository, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limit_tensorflow_threads()
        await repository.start()
        try:
            yield
        finally:
            await repository.stop()

    app = FastAPI(title="diffround", version=VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.repository = repository
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    install_error_handlers(app)

    app.include_router(health.router)
    app.include_router(native.router)
    app.include_router(tfserving.router)
    app.include_router(v2.router)
    # Other routers (e.g. the diagnostics page, app.api.ui) are included here.
    app.include_router(ui.router)

    # Everything but the hot inference routes runs on FastAPI behind the middleware chain
    # (outermost first: observability, API key, concurrency bound, body limit, response
    # budget). The fast lane runs the same policy objects in the same order, so both
    # share the request ids, logs, metrics, API key, concurrency count and limits.
    budget = ResponseBudgetMiddleware(app, max_bytes=settings.max_response_bytes)
    body_limit = BodyLimitMiddleware(budget, max_bytes=settings.max_body_bytes)
    limiter = ConcurrencyLimitMiddleware(
        body_limit,
        max_in_flight=settings.max_concurrent_requests,
        max_queued=settings.max_queued_requests,
        open_paths=OPEN_PATHS,
        open_prefixes=OPEN_PREFIXES,
    )
    chain: ASGIApp = limiter
    api_key: ApiKeyMiddleware | None = None
    if settings.api_key_value is not None:
        chain = api_key = ApiKeyMiddleware(
            chain,
            api_key=settings.api_key_value,
            open_paths=OPEN_PATHS,
            open_prefixes=OPEN_PREFIXES,
        )
    observability = ObservabilityMiddleware(chain, metrics=metrics)
    lane = FastLane(dataplane, observability, api_key, limiter, body_limit)

    spec_cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        # The templates once; the served models' exact operations whenever they change.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in EXTRA_SCHEMAS.items():
                components.setdefault(name, definition)
            _document_validation_errors(schema)
            app.openapi_schema = schema
        key = served_key(dataplane)
        if spec_cache.get("key") != key:
            schema = copy.deepcopy(app.openapi_schema)
            add_served_models(schema, dataplane)
            spec_cache.update(key=key, schema=schema)
        return spec_cache["schema"]

    app.openapi = openapi  # type: ignore[method-assign]
    return Service(app, observability, lane)


class Service:
    """The ASGI app uvicorn runs: the fast lane beside the middleware chain around FastAPI.

    Lifespan events go to the FastAPI app (it starts and stops the model
    poller); the hot inference routes to the fast lane; every other request
    through the middleware chain to FastAPI. Every other attribute (`state`,
    `router`, `openapi`, `routes`...) is the FastAPI app's, so the service is
    used like one.

    Args:
        app: The FastAPI app.
        chain: The middleware chain ending in `app`.
        lane: The fast lane (running the chain's policies itself).
    """

    def __init__(self, app: FastAPI, chain: ASGIApp, lane: FastLane) -> None:
        self.fastapi = app
        self.chain = chain
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one connection's event (lifespan on FastAPI, requests on the lane or the chain)."""
        if scope["type"] == "lifespan":
            await self.fastapi(scope, receive, send)
            return
        matched = self.lane.match(scope)
        if matched is not None:
            await self.lane.serve(scope, receive, send, matched)
        else:
            await self.chain(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fastapi, name)
