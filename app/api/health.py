"""Operational endpoints, open even when an API key is set: `/healthz`, `/readyz`, `/metrics`."""

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import Response

from app.api.common import MetricsDep, NumpyJSONResponse, RepositoryDep, error_responses
from app.errors import ModelNotReady
from app.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


class Live(BaseModel):
    """The process answers."""

    status: str


class Ready(BaseModel):
    """Ready, and the version each model serves."""

    status: str
    models: dict[str, int]


@router.get("/healthz", summary="Liveness", response_model=Live)
async def healthz() -> dict[str, str]:
    """200 while the process serves HTTP (it may not be ready)."""
    return {"status": "live"}


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=None,
    responses={200: {"model": Ready}, **error_responses(503)},
)
async def readyz(repository: RepositoryDep) -> Response:
    """200 when a model version is loaded and warmed up; 503 with the reason otherwise."""
    if not repository.ready:
        raise ModelNotReady(repository.not_ready_reason)
    models = {e.name: e.serving.version for e in repository.entries() if e.serving is not None}
    return NumpyJSONResponse({"status": "ready", "models": models})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Request counts and latencies by route, batch sizes, serving versions, readiness."""
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)
