"""The service's own API: `/predict`, `/grad`, `/models[...]` (docs/contract.md, section 3).

The bodies are read and answered by `app.codecs.native` over the data plane;
the models below only document them in the OpenAPI spec.
"""

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.common import (
    DataPlaneDep,
    NumpyJSONResponse,
    RepositoryDep,
    encoded_response,
    error_responses,
    parse_path_version,
    read_body,
    request_body,
)
from app.codecs import native as codec
from app.dataplane import DataPlane
from app.repository import ModelRepository

router = APIRouter(tags=["native"])

Tensor = Any


class PredictRequest(BaseModel):
    """`inputs` (a tensor, or an object of named tensors) or `instances` (rows)."""

    inputs: Tensor | dict[str, Tensor] | None = Field(
        default=None,
        description="A tensor for a one-input model, or an object naming every input's tensor.",
    )
    instances: list[Any] | None = Field(
        default=None,
        min_length=1,
        description="TF Serving's row form: one value per row, or one object per row naming "
        "every input.",
    )
    model: str | None = Field(default=None, description="Model name (default: DEFAULT_MODEL).")
    version: int | None = Field(default=None, ge=1, description="Version (default: serving).")


class PredictResponse(BaseModel):
    """Every output of the default signature, by name, and the version that computed them."""

    model: str
    version: int
    outputs: dict[str, Any]
    decoded: list[int | None] | None


class GradOutput(BaseModel):
    """One model output: hard value, relaxed value, Jacobians by input."""

    hard: Any = None
    relaxed: Any
    jacobians: dict[str, Any]


class GradLayer(BaseModel):
    """One rounding layer of the model."""

    method: str | None
    params: dict[str, Any]
    grid: dict[str, Any] | None
    hard: Any = None
    pre_round: Any = None
    surrogate: Any = None
    local_grad: Any = None


class GradSummary(BaseModel):
    """A per-request reading of the gradients."""

    surrogate_gap: float
    dead_gradient_share: float
    max_abs_jacobian: float
    argmax: dict[str, Any] | None
    text: str


class GradResponse(BaseModel):
    """Relaxed values and gradients of a `diffround.export` model."""

    model: str
    version: int
    outputs: dict[str, GradOutput]
    rounding_layers: dict[str, GradLayer]
    omitted_jacobians: list[dict[str, Any]]
    summary: GradSummary


class ModelStatus(BaseModel):
    """One model directory and what the service does with it."""

    name: str
    versions: list[int]
    serving_version: int | None
    ready: bool
    default: bool
    signatures: list[str] = Field(description="The signatures a request may name.")
    gradients: bool = Field(
        description="Whether `/grad` answers for this model: it was exported with gradients "
        "(`diffround.export`) and the service runs with `ENABLE_GRAD=true`."
    )
    runtimes: dict[str, dict[str, str]] = Field(
        description="Per signature: `runtime` (`tflite`, `graph` or `savedmodel`) and "
        "`reason` (RUNTIME and GRAD_RUNTIME settings); `batching`: whether its requests "
        "share model calls (`on: ...` or `off: ...`, and why)."
    )


class ModelList(BaseModel):
    """Every model found in the models root."""

    models: list[ModelStatus]


class ModelMetadata(BaseModel, extra="allow"):
    """The version's `assets.extra/diffround.json` (if any), `serving_version` and signatures."""

    serving_version: int | None


@router.post(
    "/predict",
    summary="Hard predictions",
    response_model=None,
    responses={
        200: {"model": PredictResponse, "description": "Every output, by name"},
        **error_responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=request_body(PredictRequest),
)
async def predict(request: Request) -> Response:
    """Every output of the model's default signature (dynamically batched)."""
    # The hot path reads the data plane from app.state instead of a dependency:
    # FastAPI's dependency solving costs ~40 us a request (docs/benchmarks.md).
    body = await read_body(request)
    return encoded_response(await codec.predict(request.app.state.dataplane, body))


@router.post(
    "/grad",
    summary="Relaxed values and gradients",
    response_model=None,
    responses={
        200: {"model": GradResponse, "description": "Relaxed values, Jacobians, rounding layers"},
        **error_responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=request_body(PredictRequest),
)
async def grad(request: Request) -> Response:
    """Hard and relaxed outputs, Jacobians, every rounding layer's values, and a summary.

    404 when the service runs with `ENABLE_GRAD=false`, or when the model was
    not exported by `diffround.export`.
    """
    body = await read_body(request)
    return encoded_response(await codec.grad(request.app.state.dataplane, body))


@router.get(
    "/models",
    summary="The models and their versions",
    response_model=ModelList,
    responses=error_responses(401),
)
async def list_models(repository: RepositoryDep, plane: DataPlaneDep) -> dict[str, Any]:
    """Every model directory in the models root: versions on disk, the serving one, readiness.

    `signatures` are those a request may name and `gradients` says whether `/grad`
    answers for the model: neither offers `grad` when the service runs with
    `ENABLE_GRAD=false`.
    """
    default = repository.default_name
    return {
        "models": [
            {
                "name": entry.name,
                "versions": sorted(entry.on_disk),
                "serving_version": entry.serving.version if entry.serving else None,
                "ready": entry.serving is not None,
                "default": entry.name == default,
                "signatures": sorted(plane.signatures(entry.serving)) if entry.serving else [],
                "gradients": bool(
                    entry.serving
                    and entry.serving.info.grad is not None
                    and plane.settings.enable_grad
                ),
                "runtimes": {
                    key: {
                        "runtime": runtime,
                        "reason": reason,
                        "batching": entry.serving.batching.get(key, "on"),
                    }
                    for key, (runtime, reason) in sorted(entry.serving.runtimes.items())
                }
                if entry.serving
                else {},
            }
            for entry in repository.entries()
        ]
    }


def _metadata(
    repository: ModelRepository, plane: DataPlane, name: str, version: int | None
) -> Response:
    """The version's metadata document, with the specs of the signatures a request may
    name (no `grad` under `ENABLE_GRAD=false`, as in `GET /models`)."""
    document = repository.metadata(name, version)
    serving = repository.entry(name).serving
    extra: dict[str, Any] = {"serving_version": serving.version if serving else None}
    if serving is not None and version in (None, serving.version):
        extra["signatures"] = {
            key: {
                "inputs": [spec.describe() for spec in runner.inputs.values()],
                "outputs": [spec.describe() for spec in runner.outputs.values()],
            }
            for key, runner in plane.signatures(serving).items()
        }
    return NumpyJSONResponse({**document, **extra})


@router.get(
    "/models/{name}",
    summary="The serving version's metadata",
    response_model=None,
    responses={200: {"model": ModelMetadata}, **error_responses(401, 404, 503)},
)
async def model_metadata(name: str, repository: RepositoryDep, plane: DataPlaneDep) -> Response:
    """The serving version's metadata, `serving_version` and its signatures' specs."""
    return _metadata(repository, plane, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    summary="One version's metadata",
    response_model=None,
    responses={200: {"model": ModelMetadata}, **error_responses(401, 404, 503)},
)
async def model_version_metadata(
    name: str, version: str, repository: RepositoryDep, plane: DataPlaneDep
) -> Response:
    """One version's metadata plus the model's `serving_version`."""
    return _metadata(repository, plane, name, parse_path_version(version))
