"""TensorFlow Serving's REST API (its `g3doc/api_rest.md`), over the data plane.

- predict: `{"signature_name"?, "instances": rows}` (row form) or
  `{"signature_name"?, "inputs": tensor | {name: tensor}}` (columnar form).
  Row requests answer `{"predictions": ...}`: one output as the list of its
  rows, several as one object per row. Columnar requests answer
  `{"outputs": ...}`: one output as its tensor, several as an object.
- status: `model_version_status`, AVAILABLE for the served version, END for refused ones.
- metadata: `model_spec` and `signature_def` with every signature's inputs and outputs.

Values follow TF Serving's JSON mapping: non-finite floats are its `NaN`,
`Infinity` and `-Infinity` tokens (not strict JSON; Python's `json` reads
them), and every value of a tensor whose name ends in `_bytes` is
`{"b64": ...}` (other strings are text, `{"b64": ...}` only where not UTF-8).

Errors are `{"error": msg}` with TF Serving's codes (400, 404, 503; 401 and
413 from the HTTP layer). Like TF Serving, the body is read as JSON whatever
its Content-Type (`curl -d` sends a form type).
"""

import os
from typing import Any

import numpy as np
import orjson

from app.codecs.common import (
    Encoded,
    columnar_inputs,
    dumps,
    encode_json,
    json_value,
    may_hold_booleans,
    require_object,
    row_inputs,
    string_values,
)
from app.dataplane import DataPlane
from app.errors import InvalidInput, ModelNotFound
from app.repository import ModelRepository
from app.served import ServedVersion
from app.tensors import TF_DATATYPES, all_finite
from app.validation import decode_json_async

FIELDS = ("signature_name", "instances", "inputs")


async def predict(plane: DataPlane, body: bytes, name: str, version: int | None) -> Encoded:
    """`POST /v1/models/{name}[/versions/{v}]:predict`."""
    document = require_object(await decode_json_async(body), FIELDS)
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidInput("'signature_name' must be a string.")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances == has_inputs:
        raise InvalidInput(
            "Missing 'inputs' or 'instances' key: send {\"instances\": [<row>, ...]} or "
            '{"inputs": <tensor or object of named tensors>}.'
            if not has_instances
            else "Request body must have exactly one of 'instances' or 'inputs', not both."
        )
    served = plane.resolve(name, version)
    runner = plane.runner(served, signature)
    if has_instances:
        inputs = row_inputs(plane, document["instances"], runner, "instances")
    else:
        inputs = columnar_inputs(document["inputs"], runner, "inputs")
    result = await plane.infer_on(served, runner, inputs, strict_types=may_hold_booleans(body))
    # Values as their dtype writes them (TF Serving answers a float32 0 as 0.0).
    outputs = {key: _tf_serving_value(key, value) for key, value in result.outputs.items()}
    if not has_instances:
        value: Any = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return await _encoded(plane, {"outputs": value})
    if len(outputs) == 1:
        return await _encoded(plane, {"predictions": next(iter(outputs.values()))})
    rows = {len(array) for array in result.outputs.values() if array.ndim >= 1}
    if len(rows) != 1 or any(array.ndim == 0 for array in result.outputs.values()):
        raise InvalidInput(
            "The signature's outputs do not share a batch dimension, so they cannot be "
            "answered as rows; send the columnar 'inputs' form instead."
        )
    count = rows.pop()
    predictions = [{key: value[i] for key, value in outputs.items()} for i in range(count)]
    return await _encoded(plane, {"predictions": predictions})


#: Stand-ins for non-finite floats in the document, swapped for TF Serving's tokens once
#: encoded (a per-process random text, so no output string can be one).
_MARK = "\x00" + os.urandom(8).hex()
_TOKENS = {f"{_MARK}nan": b"NaN", f"{_MARK}inf": b"Infinity", f"{_MARK}-inf": b"-Infinity"}
#: The same as they appear in orjson's output.
_ENCODED_MARK = orjson.dumps(_MARK)[1:-1]
_ENCODED_TOKENS = [(orjson.dumps(mark), token) for mark, token in _TOKENS.items()]


def _tf_serving_value(name: str, array: np.ndarray) -> Any:
    """An output as TF Serving writes it: `json_value`, with non-finite floats marked for
    `_encoded` and a `*_bytes` tensor's values all `{"b64": ...}`."""
    if array.dtype == np.object_ and name.endswith("_bytes"):
        return string_values(array, binary=True)
    if array.dtype.kind != "f" or all_finite(array):
        return json_value(array)
    if array.dtype.itemsize == 2:
        array = array.astype(np.float32)
    # Numpy scalars keep their dtype's shortest form when orjson writes them.
    values = np.array(list(array.reshape(-1)), dtype=object)
    values[np.isnan(array.reshape(-1))] = f"{_MARK}nan"
    values[np.isposinf(array.reshape(-1))] = f"{_MARK}inf"
    values[np.isneginf(array.reshape(-1))] = f"{_MARK}-inf"
    return values.reshape(array.shape).tolist()


async def _encoded(plane: DataPlane, document: dict[str, Any]) -> Encoded:
    """The answer's JSON with the marked non-finite floats as `NaN`/`Infinity` tokens."""
    body = await encode_json(plane, document)
    if _ENCODED_MARK in body:
        for marked, token in _ENCODED_TOKENS:
            body = body.replace(marked, token)
    return Encoded(body)


def status(repository: ModelRepository, name: str, version: int | None) -> Encoded:
    """`GET /v1/models/{name}[/versions/{v}]`."""
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
    return Encoded(dumps({"model_version_status": statuses}))


def _tensor_info(spec: Any, tensor_name: str) -> dict[str, Any]:
    shape = spec.shape
    info: dict[str, Any] = {
        "dtype": TF_DATATYPES.get(spec.dtype.name, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape or ()],
            "unknown_rank": shape is None,
        },
        "name": tensor_name,
    }
    return info


def metadata(plane: DataPlane, served: ServedVersion) -> Encoded:
    """`GET /v1/models/{name}[/versions/{v}]/metadata`: every signature it serves."""
    signature_def = {}
    for signature, runner in plane.signatures(served).items():
        signature_def[signature] = {
            "inputs": {
                n: _tensor_info(spec, f"{signature}_{n}:0") for n, spec in runner.inputs.items()
            },
            "outputs": {
                n: _tensor_info(spec, f"StatefulPartitionedCall:{i}")
                for i, (n, spec) in enumerate(sorted(runner.outputs.items()))
            },
            "method_name": "tensorflow/serving/predict",
        }
    return Encoded(
        dumps(
            {
                "model_spec": {
                    "name": served.name,
                    "signature_name": "",
                    "version": str(served.version),
                },
                "metadata": {"signature_def": {"signature_def": signature_def}},
            }
        )
    )
