"""TensorFlow Serving's REST API on the service's port (its `g3doc/api_rest.md`).

- `POST /v1/models/{name}[/versions/{v}]:predict`: `instances` (row) or
  `inputs` (columnar) form; `signature_name` `serving_default` (or `serve`)
  for hard outputs, `grad` for every gradient output.
- `GET /v1/models/{name}[/versions/{v}]`: version status.
- `GET /v1/models/{name}[/versions/{v}]/metadata`: signature defs.

Errors are `{"error": msg}` with TF Serving's codes: 400 invalid argument,
404 not found, 503 unavailable (plus 401 and 413 from the HTTP layer). Like
TF Serving, the body is read as JSON whatever its Content-Type (`curl -d`
sends a form type).
"""

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.common import (
    DataPlaneDep,
    RepositoryDep,
    encoded_response,
    error_responses,
    parse_path_version,
    read_body,
    request_body,
)
from app.codecs import tfserving as codec

router = APIRouter(prefix="/v1/models", tags=["tfserving"])


class TFServingPredictRequest(BaseModel):
    """TF Serving's predict request: exactly one of `instances` and `inputs`."""

    signature_name: str | None = Field(
        default=None, description="Any signature of the model (default `serving_default`)."
    )
    instances: list[Any] | None = Field(
        default=None,
        description="Row form: one value per row (one-input signatures), or one object per row "
        "naming every input.",
    )
    inputs: Any = Field(
        default=None,
        description="Columnar form: a tensor (one-input signatures) or an object of named tensors.",
    )


class TFServingPredictResponse(BaseModel):
    """`predictions` (row request) or `outputs` (columnar request)."""

    predictions: Any = None
    outputs: Any = None


class TFServingStatus(BaseModel):
    """`model_version_status`: one entry per known version."""

    model_version_status: list[dict[str, Any]]


class TFServingMetadata(BaseModel):
    """`model_spec` and `metadata.signature_def`."""

    model_spec: dict[str, Any]
    metadata: dict[str, Any]


_PREDICT_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": TFServingPredictResponse},
        **error_responses(400, 401, 404, 413, 503, protocol=True),
    },
    "openapi_extra": request_body(TFServingPredictRequest),
}


@router.post("/{name}:predict", summary="TF Serving predict", **_PREDICT_DOC)
async def predict(name: str, request: Request) -> Response:
    """Predict with the serving version and any of its signatures."""
    body = await read_body(request, check_content_type=False)
    return encoded_response(await codec.predict(request.app.state.dataplane, body, name, None))


@router.post(
    "/{name}/versions/{version}:predict", summary="TF Serving predict, one version", **_PREDICT_DOC
)
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Predict with a given version (404 unless it is the serving one)."""
    plane = request.app.state.dataplane
    number = parse_path_version(version)
    body = await read_body(request, check_content_type=False)
    return encoded_response(await codec.predict(plane, body, name, number))


_STATUS_DOC = {
    "response_model": None,
    "responses": {200: {"model": TFServingStatus}, **error_responses(401, 404, protocol=True)},
}


@router.get("/{name}", summary="TF Serving model status", **_STATUS_DOC)
async def status(name: str, repository: RepositoryDep) -> Response:
    """The state of the model's versions (AVAILABLE when served, END when refused)."""
    return encoded_response(codec.status(repository, name, None))


@router.get("/{name}/versions/{version}", summary="TF Serving version status", **_STATUS_DOC)
async def status_version(name: str, version: str, repository: RepositoryDep) -> Response:
    """The state of one version."""
    return encoded_response(codec.status(repository, name, parse_path_version(version)))


_METADATA_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": TFServingMetadata},
        **error_responses(401, 404, 503, protocol=True),
    },
}


@router.get("/{name}/metadata", summary="TF Serving model metadata", **_METADATA_DOC)
async def metadata(name: str, plane: DataPlaneDep) -> Response:
    """Signature defs of the serving version."""
    return encoded_response(codec.metadata(plane, plane.resolve(name, None)))


@router.get(
    "/{name}/versions/{version}/metadata", summary="TF Serving version metadata", **_METADATA_DOC
)
async def metadata_version(name: str, version: str, plane: DataPlaneDep) -> Response:
    """Signature defs of one version (it must be the serving one)."""
    return encoded_response(codec.metadata(plane, plane.resolve(name, parse_path_version(version))))
