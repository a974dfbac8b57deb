"""Open Inference Protocol v2 routes (KServe, Triton, MLServer): FastAPI's view of them.

The bodies are read and written by `app.codecs.v2` (JSON and the binary
tensor data extension; its docstring has the details); `infer` runs on the
fast lane (`app.fastlane`), these routes document it in OpenAPI and answer
whatever does not take the lane. Errors are `{"error": msg}`: 400 invalid
input, 404 unknown model or version, 503 not ready (plus 401, 413, 415 from
the HTTP layer).
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
    request_body,
)
from app.codecs import v2 as codec

router = APIRouter(prefix="/v2", tags=["v2"])

HEADER_LENGTH = codec.HEADER_LENGTH


class TensorMetadata(BaseModel):
    """A tensor's name, datatype and shape (-1: variable)."""

    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    """`GET /v2`."""

    name: str
    version: str
    extensions: list[str]


class ModelMetadataV2(BaseModel):
    """`GET /v2/models/{name}[/versions/{v}]`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    """`GET /v2/models/{name}/ready`."""

    name: str
    ready: bool


class Live(BaseModel):
    """`GET /v2/health/live`."""

    live: bool


class ReadyV2(BaseModel):
    """`GET /v2/health/ready`."""

    ready: bool


class InferInputTensor(BaseModel):
    """One input tensor: `data` row major (flat or nested), or binary (`binary_data_size`)."""

    name: str = Field(description="One of the model's input names.")
    shape: list[int] = Field(description="The tensor's shape, batch dimension first.")
    datatype: str = Field(description="The datatype the model declares (FP32, INT64, BYTES...).")
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    """An output to return; `parameters.binary_data` asks for raw bytes."""

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """The v2 inference request header (the whole body without binary inputs)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInputTensor]
    outputs: list[RequestedOutput] | None = None


class InferOutputTensor(BaseModel):
    """One output tensor: `data` flat row major, or binary (`parameters.binary_data_size`)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    """The v2 inference response header."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutputTensor]


@router.get("", summary="v2 server metadata", response_model=ServerMetadata)
async def server_metadata() -> Response:
    """Server name, version and protocol extensions."""
    return encoded_response(codec.server_metadata())


@router.get("/health/live", summary="v2 liveness", response_model=Live)
async def live() -> dict[str, bool]:
    """200 while the process serves HTTP."""
    return {"live": True}


@router.get(
    "/health/ready",
    summary="v2 readiness",
    response_model=None,
    responses={200: {"model": ReadyV2}, **error_responses(503, protocol=True)},
)
async def ready(repository: RepositoryDep) -> Response:
    """200 when a model version is loaded; 503 with the reason otherwise."""
    return encoded_response(codec.ready(repository))


_METADATA_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": ModelMetadataV2},
        **error_responses(401, 404, 503, protocol=True),
    },
}


@router.get("/models/{name}", summary="v2 model metadata", **_METADATA_DOC)
async def model_metadata(name: str, plane: DataPlaneDep) -> Response:
    """Inputs and outputs of the serving version."""
    return encoded_response(codec.model_metadata(plane, plane.resolve(name, None)))


@router.get("/models/{name}/versions/{version}", summary="v2 version metadata", **_METADATA_DOC)
async def model_version_metadata(name: str, version: str, plane: DataPlaneDep) -> Response:
    """Inputs and outputs of one version (it must be the serving one)."""
    served = plane.resolve(name, parse_path_version(version))
    return encoded_response(codec.model_metadata(plane, served))


_READY_DOC = {
    "response_model": None,
    "responses": {200: {"model": ModelReady}, **error_responses(401, 404, 503, protocol=True)},
}


def _model_ready(repository: Any, name: str, version: int | None) -> Response:
    return encoded_response(codec.model_ready(repository.resolve(name, version)))


@router.get("/models/{name}/ready", summary="v2 model readiness", **_READY_DOC)
async def model_ready(name: str, repository: RepositoryDep) -> Response:
    """200 `{"name", "ready": true}` when the model serves a version; 503 when not yet."""
    return _model_ready(repository, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="v2 version readiness", **_READY_DOC)
async def model_version_ready(name: str, version: str, repository: RepositoryDep) -> Response:
    """200 when this version is the one served."""
    return _model_ready(repository, name, parse_path_version(version))


_INFER_DOC = {
    "response_model": None,
    "responses": {
        200: {
            "model": InferResponse,
            "description": "JSON, or (binary outputs) the JSON header followed by raw tensors",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 404, 413, 415, 503, protocol=True),
    },
    "openapi_extra": request_body(InferRequest),
}


@router.post("/models/{name}/infer", summary="v2 inference", **_INFER_DOC)
async def infer(name: str, request: Request) -> Response:
    """Run the serving version (default outputs, or another signature's when asked for)."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="v2 inference", **_INFER_DOC)
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Run one version (it must be the serving one)."""
    return await _infer(request, name, parse_path_version(version))


async def _infer(request: Request, name: str, version: int | None) -> Response:
    headers = request.headers
    header_length = headers.get(HEADER_LENGTH)
    body = await request.body()
    encoded = await codec.infer(
        request.app.state.dataplane, body, header_length, headers.get("content-type"), name, version
    )
    return encoded_response(encoded)
