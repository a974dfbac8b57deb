"""Open Inference Protocol v2 (KServe, Triton, MLServer), with the binary tensor data extension.

`tritonclient.http.InferenceServerClient` works with its defaults: it sends
inputs as raw bytes after a JSON header whose length is in the
`Inference-Header-Content-Length` HTTP header (each such input has
`"parameters": {"binary_data_size": N}`), and asks for binary outputs
(`"binary_data": true` per output, or `"binary_data_output": true` for all);
the response then has the same layout. Tensors are little-endian, row major.

Outputs: `outputs` (hard 0/1, from `serving_default`) by default; asking for
`hard`, `surrogate`, `pre_round`, `local_grad` or `input_grad` runs the
`grad` signature instead (404 when `ENABLE_GRAD=false`).
Errors are `{"error": msg}`: 400 invalid input, 404 unknown model or
version, 503 not ready (plus 401, 413, 415 from the HTTP layer).
"""

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.common import (
    NumpyJSONResponse,
    RepositoryDep,
    error_responses,
    may_hold_booleans,
    parse_path_version,
    request_body,
)
from app.config import Settings, SettingsDep
from app.errors import InvalidInput, ModelNotReady, PayloadTooLarge
from app.main_version import VERSION
from app.predictor import GRAD_OUTPUTS, INPUT_NAME, PREDICT_OUTPUT
from app.repository import ModelRepository, ServedVersion
from app.validation import (
    check_finite,
    check_json_content_type,
    decode_json_async,
    kind,
    numbers_to_array,
    parse_numeric_header,
    require_object,
)

router = APIRouter(prefix="/v2", tags=["v2"])

HEADER_LENGTH = "Inference-Header-Content-Length"
_NUMERIC_TYPES = frozenset(
    [
        "FP16",
        "FP32",
        "FP64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    ]
)


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

    name: str = Field(description="Must be `inputs`.")
    shape: list[int] = Field(description="[batch, 64].")
    datatype: str = Field(description="FP32 (JSON data may use any numeric type).")
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
    data: list[float] | None = None


class InferResponse(BaseModel):
    """The v2 inference response header."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutputTensor]


def _output_shapes(served: ServedVersion, grad_enabled: bool) -> dict[str, list[int]]:
    shapes = {PREDICT_OUTPUT: [-1, served.outputs]}
    if grad_enabled:
        for name in GRAD_OUTPUTS:
            shapes[name] = (
                [-1, served.outputs, served.width] if name == "input_grad" else [-1, served.outputs]
            )
    return shapes


def _model_metadata(served: ServedVersion, settings: Settings) -> Response:
    return NumpyJSONResponse(
        {
            "name": served.name,
            "versions": [str(served.version)],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, served.width]}],
            "outputs": [
                {"name": name, "datatype": "FP32", "shape": shape}
                for name, shape in _output_shapes(served, settings.enable_grad).items()
            ],
        }
    )


def _flag(parameters: Any, key: str, where: str) -> bool:
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {where} must be an object.")
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{key}' in the parameters of {where} must be true or false.")
    return value


def _read_input(
    tensor: Any, binary: bytes, offset: int, served: ServedVersion, settings: Settings, body: bytes
) -> tuple[np.ndarray, int]:
    """Parse the one input tensor; returns the rows and the binary bytes it used."""
    if not isinstance(tensor, dict):
        raise InvalidInput(f"Each entry of 'inputs' must be an object, got {kind(tensor)}.")
    tensor = require_object(tensor, ("name", "shape", "datatype", "parameters", "data"))
    name = tensor.get("name")
    if name != INPUT_NAME:
        shown = name[:64] if isinstance(name, str) else kind(name)
        raise InvalidInput(f"Unknown input '{shown}': the model's only input is '{INPUT_NAME}'.")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(d) is int for d in shape)
        or shape[0] < 1
        or shape[1] != served.width
    ):
        raise InvalidInput(
            f"Input '{INPUT_NAME}' must have shape [batch, {served.width}] with batch >= 1, "
            f"got {str(shape)[:64]}."
        )
    rows = shape[0]
    if rows > settings.max_batch_rows:
        raise PayloadTooLarge(
            f"Batch of {rows} rows is over the limit of {settings.max_batch_rows} rows "
            "(MAX_BATCH_ROWS); split it into smaller requests."
        )
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _NUMERIC_TYPES:
        raise InvalidInput(f"Input '{INPUT_NAME}' has datatype {str(datatype)[:32]!r}; send FP32.")
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of input '{INPUT_NAME}' must be an object.")
    size = (parameters or {}).get("binary_data_size")
    count = rows * served.width
    if size is not None:
        if datatype != "FP32":
            raise InvalidInput(f"Binary input '{INPUT_NAME}' must be FP32, got {datatype}.")
        if type(size) is not int or size != count * 4:
            raise InvalidInput(
                f"binary_data_size of input '{INPUT_NAME}' must be {count * 4} bytes "
                f"({rows} x {served.width} FP32), got {str(size)[:32]}."
            )
        if "data" in tensor:
            raise InvalidInput(f"Input '{INPUT_NAME}' has both 'data' and binary_data_size.")
        if offset + size > len(binary):
            raise InvalidInput(
                f"The body holds {len(binary) - offset} bytes of binary data for input "
                f"'{INPUT_NAME}', its binary_data_size says {size}."
            )
        array = np.frombuffer(binary, dtype="<f4", count=count, offset=offset)
        array = array.astype(np.float32).reshape(rows, served.width)
        check_finite(array, f"input '{INPUT_NAME}'", served.width)
        return array, size
    if "data" not in tensor:
        raise InvalidInput(f"Input '{INPUT_NAME}' has neither 'data' nor binary_data_size.")
    values = numbers_to_array(
        tensor["data"],
        what=f"input '{INPUT_NAME}'",
        count=count,
        strict_types=may_hold_booleans(body),
    )
    return values.reshape(rows, served.width), 0


async def _infer(
    request: Request,
    repository: ModelRepository,
    settings: Settings,
    name: str,
    version: int | None,
) -> Response:
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        check_json_content_type(request.headers.get("content-type"))
    body = await request.body()
    if declared is not None:
        length = parse_numeric_header(declared, HEADER_LENGTH)
        if length > len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} must be the byte length of the JSON header "
                f"(0..{len(body)}), got {declared[:32]!r}."
            )
        header, binary = body[:length], body[length:]
    else:
        header, binary = body, b""
    document = require_object(
        await decode_json_async(header), ("id", "parameters", "inputs", "outputs")
    )
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string.")
    binary_all = _flag(document.get("parameters"), "binary_data_output", "the request")
    served = repository.resolve(name, version)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInput(
            f"'inputs' must be a list with one tensor, '{INPUT_NAME}' [batch, {served.width}] FP32."
        )
    rows, used = _read_input(inputs[0], binary, 0, served, settings, header)
    if used != len(binary):
        raise InvalidInput(
            f"The body has {len(binary) - used} bytes of binary data that no input claims."
        )
    available = _output_shapes(served, settings.enable_grad)
    requested: list[tuple[str, bool]] = []
    outputs = document.get("outputs")
    if outputs is None:
        requested.append((PREDICT_OUTPUT, binary_all))
    else:
        if not isinstance(outputs, list) or not outputs:
            raise InvalidInput("'outputs' must be a non-empty list of {\"name\": ...} objects.")
        for output in outputs:
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise InvalidInput("Each entry of 'outputs' must be an object with a 'name'.")
            require_object(output, ("name", "parameters"))
            out_name = output["name"]
            if out_name not in available:
                grad_note = "" if settings.enable_grad else " (gradient outputs are disabled)"
                raise InvalidInput(
                    f"Unknown output '{out_name[:64]}'{grad_note}: "
                    f"outputs are {', '.join(available)}."
                )
            binary_out = binary_all or _flag(
                output.get("parameters"), "binary_data", f"output '{out_name}'"
            )
            requested.append((out_name, binary_out))
    if any(out_name != PREDICT_OUTPUT for out_name, _ in requested):
        results = await served.grad(rows)
        results = {**results, PREDICT_OUTPUT: results["hard"]}
    else:
        results = {PREDICT_OUTPUT: await served.predict(rows)}
    response: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if request_id is not None:
        response["id"] = request_id
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out_name, binary_out in requested:
        value = np.ascontiguousarray(results[out_name], dtype=np.float32)
        tensor: dict[str, Any] = {"name": out_name, "datatype": "FP32", "shape": list(value.shape)}
        if binary_out:
            raw = value.astype("<f4", copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = value.reshape(-1)
        tensors.append(tensor)
    response["outputs"] = tensors
    if not chunks:
        return NumpyJSONResponse(response)
    json_header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        b"".join([json_header, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(json_header))},
    )


@router.get("", summary="v2 server metadata", response_model=ServerMetadata)
async def server_metadata() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return {"name": "diffround", "version": VERSION, "extensions": ["binary_tensor_data"]}


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
    if not repository.ready:
        raise ModelNotReady(repository.not_ready_reason)
    return NumpyJSONResponse({"ready": True})


_METADATA_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": ModelMetadataV2},
        **error_responses(401, 404, 503, protocol=True),
    },
}


@router.get("/models/{name}", summary="v2 model metadata", **_METADATA_DOC)
async def model_metadata(name: str, repository: RepositoryDep, settings: SettingsDep) -> Response:
    """Inputs and outputs of the serving version."""
    return _model_metadata(repository.resolve(name, None), settings)


@router.get("/models/{name}/versions/{version}", summary="v2 version metadata", **_METADATA_DOC)
async def model_version_metadata(
    name: str, version: str, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Inputs and outputs of one version (it must be the serving one)."""
    return _model_metadata(repository.resolve(name, parse_path_version(version)), settings)


_READY_DOC = {
    "response_model": None,
    "responses": {200: {"model": ModelReady}, **error_responses(401, 404, 503, protocol=True)},
}


def _model_ready(repository: ModelRepository, name: str, version: int | None) -> Response:
    served = repository.resolve(name, version)
    return NumpyJSONResponse({"name": served.name, "ready": True})


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
async def infer(
    name: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Run the serving version (hard outputs, or gradient outputs when asked for)."""
    return await _infer(request, repository, settings, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="v2 inference", **_INFER_DOC)
async def infer_version(
    name: str, version: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Run one version (it must be the serving one)."""
    return await _infer(request, repository, settings, name, parse_path_version(version))
