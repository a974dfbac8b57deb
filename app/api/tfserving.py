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
    NumpyJSONResponse,
    RepositoryDep,
    error_responses,
    may_hold_booleans,
    parse_path_version,
    read_json,
    request_body,
)
from app.config import SettingsDep
from app.errors import InvalidInput, ModelNotFound
from app.predictor import GRAD_OUTPUTS, GRAD_SIGNATURE, INPUT_NAME, PREDICT_SIGNATURE
from app.repository import ModelRepository, ServedVersion
from app.validation import require_object, rows_to_array, unwrap_named_instances

router = APIRouter(prefix="/v1/models", tags=["tfserving"])

_FIELDS = ("signature_name", "instances", "inputs")
_PREDICT_NAMES = ("serving_default", "serve", "")
_DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32", "int64": "DT_INT64"}


class TFServingPredictRequest(BaseModel):
    """TF Serving's predict request: exactly one of `instances` and `inputs`."""

    signature_name: str | None = Field(
        default=None, description="`serving_default` (default) or `grad`."
    )
    instances: list[Any] | None = Field(
        default=None, description='Row form: rows of 64 numbers (or `{"inputs": row}` objects).'
    )
    inputs: Any = Field(
        default=None, description='Columnar form: a [batch, 64] tensor or `{"inputs": tensor}`.'
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


async def _predict(
    request: Request,
    repository: ModelRepository,
    settings: Any,
    name: str,
    version: int | None,
) -> Response:
    body, document = await read_json(request, check_content_type=False)
    document = require_object(document, _FIELDS)
    signature = document.get("signature_name")
    if signature is None:
        signature = PREDICT_SIGNATURE
    if not isinstance(signature, str):
        raise InvalidInput("'signature_name' must be a string.")
    if signature not in _PREDICT_NAMES and (
        signature != GRAD_SIGNATURE or not settings.enable_grad
    ):
        raise InvalidInput(f'Serving signature name: "{signature[:64]}" not found in signature def')
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances == has_inputs:
        raise InvalidInput(
            "Missing 'inputs' or 'instances' key"
            if not has_instances
            else "Request body must have exactly one of 'instances' or 'inputs', not both."
        )
    served = repository.resolve(name, version)
    if has_instances:
        rows = unwrap_named_instances(document["instances"], INPUT_NAME)
        field = "instances"
    else:
        rows = document["inputs"]
        if isinstance(rows, dict):
            unknown = [key for key in rows if key != INPUT_NAME]
            if unknown:
                raise InvalidInput(
                    f"Unknown named input '{unknown[0][:64]}': the only input is '{INPUT_NAME}'."
                )
            if INPUT_NAME not in rows:
                raise InvalidInput(f"Missing named input: {INPUT_NAME}")
            rows = rows[INPUT_NAME]
        field = "inputs"
    array = rows_to_array(
        rows,
        field=field,
        width=served.width,
        max_rows=settings.max_batch_rows,
        strict_types=may_hold_booleans(body),
    )
    key = "predictions" if has_instances else "outputs"
    if signature == GRAD_SIGNATURE:
        grads = await served.grad(array)
        if has_instances:
            result: Any = [{n: grads[n][i] for n in GRAD_OUTPUTS} for i in range(len(array))]
        else:
            result = grads
    else:
        result = await served.predict(array)
    return NumpyJSONResponse({key: result})


def _status(repository: ModelRepository, name: str, version: int | None) -> Response:
    entry = repository.entry(name)
    statuses: list[dict[str, Any]] = []
    if entry.serving is not None and version in (None, entry.serving.version):
        statuses.append(
            {
                "version": str(entry.serving.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        )
    for refused, refusal in sorted(entry.refused.items(), reverse=True):
        if version in (None, refused):
            statuses.append(
                {
                    "version": str(refused),
                    "state": "END",
                    "status": {"error_code": "UNKNOWN", "error_message": refusal.reason},
                }
            )
    if not statuses and version is not None and version in entry.on_disk:
        statuses.append(
            {
                "version": str(version),
                "state": "END",
                "status": {"error_code": "OK", "error_message": ""},
            }
        )
    if not statuses:
        what = f"version {version} of " if version is not None else "any version of "
        raise ModelNotFound(f"Could not find {what}model '{name}'.")
    return NumpyJSONResponse({"model_version_status": statuses})


def _tensor_info(spec: dict[str, Any], tensor_name: str) -> dict[str, Any]:
    shape = spec["shape"]
    return {
        "dtype": _DTYPES.get(spec["dtype"], "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape or []],
            "unknown_rank": shape is None,
        },
        "name": tensor_name,
    }


def _metadata(served: ServedVersion) -> Response:
    signature_def = {}
    for signature, description in served.predictor.signatures.items():
        signature_def[signature] = {
            "inputs": {
                n: _tensor_info(spec, f"{signature}_{n}:0")
                for n, spec in description["inputs"].items()
            },
            "outputs": {
                n: _tensor_info(spec, f"StatefulPartitionedCall:{i}")
                for i, (n, spec) in enumerate(sorted(description["outputs"].items()))
            },
            "method_name": "tensorflow/serving/predict",
        }
    return NumpyJSONResponse(
        {
            "model_spec": {
                "name": served.name,
                "signature_name": "",
                "version": str(served.version),
            },
            "metadata": {"signature_def": {"signature_def": signature_def}},
        }
    )


_PREDICT_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": TFServingPredictResponse},
        **error_responses(400, 401, 404, 413, 503, protocol=True),
    },
    "openapi_extra": request_body(TFServingPredictRequest),
}


@router.post("/{name}:predict", summary="TF Serving predict", **_PREDICT_DOC)
async def predict(
    name: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Predict with the serving version (`serving_default` or `grad`)."""
    return await _predict(request, repository, settings, name, None)


@router.post(
    "/{name}/versions/{version}:predict", summary="TF Serving predict, one version", **_PREDICT_DOC
)
async def predict_version(
    name: str, version: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Predict with a given version (404 unless it is the serving one)."""
    return await _predict(request, repository, settings, name, parse_path_version(version))


_STATUS_DOC = {
    "response_model": None,
    "responses": {200: {"model": TFServingStatus}, **error_responses(401, 404, protocol=True)},
}


@router.get("/{name}", summary="TF Serving model status", **_STATUS_DOC)
async def status(name: str, repository: RepositoryDep) -> Response:
    """The state of the model's versions (AVAILABLE when served, END when refused)."""
    return _status(repository, name, None)


@router.get("/{name}/versions/{version}", summary="TF Serving version status", **_STATUS_DOC)
async def status_version(name: str, version: str, repository: RepositoryDep) -> Response:
    """The state of one version."""
    return _status(repository, name, parse_path_version(version))


_METADATA_DOC = {
    "response_model": None,
    "responses": {
        200: {"model": TFServingMetadata},
        **error_responses(401, 404, 503, protocol=True),
    },
}


@router.get("/{name}/metadata", summary="TF Serving model metadata", **_METADATA_DOC)
async def metadata(name: str, repository: RepositoryDep) -> Response:
    """Signature defs of the serving version."""
    return _metadata(repository.resolve(name, None))


@router.get(
    "/{name}/versions/{version}/metadata", summary="TF Serving version metadata", **_METADATA_DOC
)
async def metadata_version(name: str, version: str, repository: RepositoryDep) -> Response:
    """Signature defs of one version (it must be the serving one)."""
    return _metadata(repository.resolve(name, parse_path_version(version)))
