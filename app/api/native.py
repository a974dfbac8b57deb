"""The service's own API: `/predict`, `/grad`, `/models[...]` (docs/contract.md, section 3)."""

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.common import (
    NumpyJSONResponse,
    RepositoryDep,
    contiguous,
    error_responses,
    may_hold_booleans,
    parse_path_version,
    read_json,
    request_body,
)
from app.errors import InvalidInput, ModelNotFound
from app.interpret import decode_outputs, grad_summary
from app.predictor import INPUT_NAME
from app.repository import ModelRepository, ServedVersion
from app.validation import require_object, rows_to_array, unwrap_named_instances

router = APIRouter(tags=["native"])

Row = Annotated[list[float], Field(min_length=64, max_length=64)]
_FIELDS = ("inputs", "instances", "model", "version")


class PredictRequest(BaseModel):
    """A batch of rows, `inputs` (or TF Serving's `instances`); model and version optional."""

    inputs: list[Row] | None = Field(
        default=None, min_length=1, description="Rows of 64 grey levels 0..16 (8x8, row major)."
    )
    instances: list[Row] | None = Field(
        default=None, min_length=1, description="Same as `inputs` (TF Serving's row form)."
    )
    model: str | None = Field(default=None, description="Model name (default: DEFAULT_MODEL).")
    version: int | None = Field(default=None, ge=1, description="Version (default: serving).")


class PredictResponse(BaseModel):
    """Hard 0/1 outputs and the model version that computed them."""

    model: str
    version: int
    outputs: list[list[int]]
    decoded: list[int | None] | None


class Argmax(BaseModel):
    """Where the largest-magnitude input gradient is."""

    row: int
    output: int
    input: int


class GradSummary(BaseModel):
    """A per-request reading of the gradients."""

    surrogate_gap: float
    dead_gradient_share: float
    max_abs_input_grad: float
    argmax: Argmax
    text: str


class GradResponse(BaseModel):
    """Hard outputs, surrogate values and their gradients."""

    model: str
    version: int
    method: str
    params: dict[str, Any]
    hard: list[list[int]]
    surrogate: list[list[float]]
    pre_round: list[list[float]]
    local_grad: list[list[float]]
    input_grad: list[list[list[float]]]
    summary: GradSummary


class ModelStatus(BaseModel):
    """One model directory and what the service does with it."""

    name: str
    versions: list[int]
    serving_version: int | None
    ready: bool
    default: bool


class ModelList(BaseModel):
    """Every model found in the models root."""

    models: list[ModelStatus]


class ModelMetadata(BaseModel, extra="allow"):
    """The version's `assets.extra/diffround.json` plus `serving_version`."""

    serving_version: int | None


async def _parse(
    request: Request, repository: ModelRepository, max_rows: int
) -> tuple[ServedVersion, np.ndarray]:
    body, document = await read_json(request)
    document = require_object(document, _FIELDS)
    has_inputs, has_instances = "inputs" in document, "instances" in document
    if has_inputs and has_instances:
        raise InvalidInput("Send either 'inputs' or 'instances', not both.")
    if not (has_inputs or has_instances):
        raise InvalidInput(
            "Missing 'inputs' or 'instances' key: send {\"inputs\": [[64 numbers], ...]}."
        )
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must be a string (a model name).")
    version = document.get("version")
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidInput("'version' must be a positive integer.")
    served = repository.resolve(model, version)
    field = "inputs" if has_inputs else "instances"
    rows = document[field]
    if field == "instances":
        rows = unwrap_named_instances(rows, INPUT_NAME)
    array = rows_to_array(
        rows,
        field=field,
        width=served.width,
        max_rows=max_rows,
        strict_types=may_hold_booleans(body),
    )
    return served, array


@router.post(
    "/predict",
    summary="Hard 0/1 predictions",
    response_model=None,
    responses={
        200: {"model": PredictResponse, "description": "One row of 0/1 outputs per input row"},
        **error_responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=request_body(PredictRequest),
)
async def predict(request: Request) -> Response:
    """Hard predictions of `serving_default` for a batch of rows (dynamically batched)."""
    # The hot path reads the repository and settings from app.state instead of
    # RepositoryDep/SettingsDep: FastAPI's dependency solving costs ~40 us a
    # request, a fifth of the service's per-request CPU at 32 connections.
    state = request.app.state
    served, rows = await _parse(request, state.repository, state.settings.max_batch_rows)
    hard = (await served.predict(rows)).astype(np.int8)
    return NumpyJSONResponse(
        {
            "model": served.name,
            "version": served.version,
            "outputs": hard,
            "decoded": decode_outputs(hard, served.metadata.get("decoding")),
        }
    )


@router.post(
    "/grad",
    summary="Surrogate values and gradients",
    response_model=None,
    responses={
        200: {"model": GradResponse, "description": "The grad signature's outputs and a summary"},
        **error_responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=request_body(PredictRequest),
)
async def grad(request: Request) -> Response:
    """Hard outputs, surrogate outputs, pre-round values, local and input gradients, and a summary.

    404 when the service runs with `ENABLE_GRAD=false`.
    """
    state = request.app.state  # as in `predict`: no dependency solving on the hot path
    settings = state.settings
    if not settings.enable_grad:
        raise ModelNotFound("/grad is disabled on this service (ENABLE_GRAD=false).")
    served, rows = await _parse(request, state.repository, settings.max_batch_rows)
    grads = await served.grad(rows)
    return NumpyJSONResponse(
        {
            "model": served.name,
            "version": served.version,
            "method": served.metadata.get("method"),
            "params": served.metadata.get("params") or {},
            "hard": grads["hard"].astype(np.int8),
            "surrogate": contiguous(grads["surrogate"]),
            "pre_round": contiguous(grads["pre_round"]),
            "local_grad": contiguous(grads["local_grad"]),
            "input_grad": contiguous(grads["input_grad"]),
            "summary": grad_summary(grads),
        }
    )


@router.get(
    "/models",
    summary="The models and their versions",
    response_model=ModelList,
    responses=error_responses(401),
)
async def list_models(repository: RepositoryDep) -> dict[str, Any]:
    """Every model directory in the models root: versions on disk, the serving one, readiness."""
    default = repository.default_name
    return {
        "models": [
            {
                "name": entry.name,
                "versions": sorted(entry.on_disk),
                "serving_version": entry.serving.version if entry.serving else None,
                "ready": entry.serving is not None,
                "default": entry.name == default,
            }
            for entry in repository.entries()
        ]
    }


def _metadata(repository: ModelRepository, name: str, version: int | None) -> Response:
    document = repository.metadata(name, version)
    serving = repository.entry(name).serving
    return NumpyJSONResponse({**document, "serving_version": serving.version if serving else None})


@router.get(
    "/models/{name}",
    summary="The serving version's metadata",
    response_model=None,
    responses={200: {"model": ModelMetadata}, **error_responses(401, 404, 503)},
)
async def model_metadata(name: str, repository: RepositoryDep) -> Response:
    """The serving version's `diffround.json` metadata plus `serving_version`."""
    return _metadata(repository, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    summary="One version's metadata",
    response_model=None,
    responses={200: {"model": ModelMetadata}, **error_responses(401, 404, 503)},
)
async def model_version_metadata(name: str, version: str, repository: RepositoryDep) -> Response:
    """One version's `diffround.json` metadata plus the model's `serving_version`."""
    return _metadata(repository, name, parse_path_version(version))
