"""Open Inference Protocol v2 (KServe, Triton, MLServer) with the binary tensor data extension.

`tritonclient.http.InferenceServerClient` works with its defaults: it sends
inputs as raw bytes after a JSON header whose length is in the
`Inference-Header-Content-Length` HTTP header (each such input has
`"parameters": {"binary_data_size": N}`), and asks for binary outputs
(`"binary_data": true` per output, or `"binary_data_output": true` for all);
the response then has the same layout. Tensors are little-endian, row major.

Inputs are the signature's own names, datatypes and shapes. Outputs are the
default signature's unless the request names outputs that only another
signature has (the `grad` signature of a `diffround.export` model, when
gradients are enabled), or names a signature in `parameters.signature_name`.
"""

import math
from typing import Any

import numpy as np

from app.codecs.common import (
    Encoded,
    dumps,
    encode_json,
    json_value,
    may_hold_booleans,
    require_object,
)
from app.dataplane import DataPlane
from app.errors import InvalidInput, ModelNotReady
from app.main_version import VERSION
from app.predictor import SignatureRunner
from app.repository import ModelRepository
from app.served import ServedVersion
from app.tensors import NUMPY_OF_V2, binary_to_array, kind, show_shape, v2_datatype
from app.validation import check_json_content_type, decode_json_async, parse_numeric_header

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")


def server_metadata() -> Encoded:
    """`GET /v2`."""
    return Encoded(
        dumps({"name": "diffround", "version": VERSION, "extensions": ["binary_tensor_data"]})
    )


def ready(repository: ModelRepository) -> Encoded:
    """`GET /v2/health/ready`."""
    if not repository.ready:
        raise ModelNotReady(repository.not_ready_reason)
    return Encoded(dumps({"ready": True}))


def _tensors(runner: SignatureRunner, which: str) -> list[dict[str, Any]]:
    specs = runner.inputs if which == "inputs" else runner.outputs
    return [
        {
            "name": name,
            "datatype": v2_datatype(spec.dtype),
            "shape": [-1] if spec.shape is None else list(spec.shape),
        }
        for name, spec in specs.items()
    ]


def model_metadata(plane: DataPlane, served: ServedVersion) -> Encoded:
    """`GET /v2/models/{name}[/versions/{v}]`: the default signature's inputs; every output."""
    runners = plane.signatures(served)
    default = runners[served.predictor.default_signature]
    outputs = _tensors(default, "outputs")
    seen = {tensor["name"] for tensor in outputs}
    for name in sorted(runners):
        for tensor in _tensors(runners[name], "outputs"):
            if tensor["name"] not in seen:
                seen.add(tensor["name"])
                outputs.append(tensor)
    return Encoded(
        dumps(
            {
                "name": served.name,
                "versions": [str(served.version)],
                "platform": "tensorflow_savedmodel",
                "inputs": _tensors(default, "inputs"),
                "outputs": outputs,
            }
        )
    )


def model_ready(served: ServedVersion) -> Encoded:
    """`GET /v2/models/{name}[/versions/{v}]/ready`."""
    return Encoded(dumps({"name": served.name, "ready": True}))


def _flag(parameters: Any, key: str, where: str) -> bool:
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {where} must be an object.")
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{key}' in the parameters of {where} must be true or false.")
    return value


def parse_length_header(declared: str, body_length: int) -> int:
    """The JSON header's length from `Inference-Header-Content-Length`, length-checked first."""
    length = parse_numeric_header(declared, HEADER_LENGTH)
    if length > body_length:
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the byte length of the JSON header "
            f"(0..{body_length}), got {declared.strip()[:32]!r}."
        )
    return length


def _read_input(
    tensor: Any, runner: SignatureRunner, binary: memoryview, offset: int
) -> tuple[str, Any, int]:
    """One input tensor: its name, its value (JSON data or a binary array), binary bytes used."""
    if not isinstance(tensor, dict):
        raise InvalidInput(f"Each entry of 'inputs' must be an object, got {kind(tensor)}.")
    tensor = require_object(tensor, INPUT_FIELDS)
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InvalidInput("Each entry of 'inputs' needs a 'name' (a string).")
    spec = runner.inputs.get(name)
    if spec is None:
        raise InvalidInput(
            f"Unknown input '{name[:64]}': the model's inputs are {', '.join(runner.inputs)}."
        )
    what = f"Input '{name}'"
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and 0 <= d < 2**31 for d in shape)
        or len(shape) > 32
    ):
        if isinstance(shape, list) and all(type(d) is int for d in shape) and len(shape) <= 32:
            raise InvalidInput(
                f"{what} has shape {shape}: give every dimension's actual size (-1 is how the "
                f"model marks a variable one); the model takes {show_shape(spec.shape)}."
            )
        raise InvalidInput(
            f"{what} needs a 'shape': a list of non-negative integers, "
            f"expected {show_shape(spec.shape)}; got {str(shape)[:64]}."
        )
    expected_type = v2_datatype(spec.dtype)
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMPY_OF_V2:
        raise InvalidInput(f"{what} has datatype {str(datatype)[:32]!r}; send {expected_type}.")
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {what} must be an object.")
    size = (parameters or {}).get("binary_data_size")
    if datatype != expected_type:  # as Triton: the declared datatype is the model's, or a 400
        form = "Binary " if size is not None else ""
        raise InvalidInput(
            f"{form}{what} has datatype {datatype}, the model declares {expected_type}."
        )
    if size is not None:
        if spec.dtype == np.object_:
            raise InvalidInput(f"{what} is BYTES: send it as JSON 'data', not binary.")
        if type(size) is not int or size < 0:
            raise InvalidInput(f"binary_data_size of {what} must be a non-negative integer.")
        if "data" in tensor:
            raise InvalidInput(f"{what} has both 'data' and binary_data_size.")
        if offset + size > len(binary):
            raise InvalidInput(
                f"The body holds {len(binary) - offset} bytes of binary data for {what}, "
                f"its binary_data_size says {size}."
            )
        array = binary_to_array(binary[offset : offset + size], spec, tuple(shape), what)
        return name, array, size
    if "data" not in tensor:
        raise InvalidInput(f"{what} has neither 'data' nor binary_data_size.")
    data = tensor["data"]
    if not isinstance(data, list):
        raise InvalidInput(f"The data of {what} must be a list, got {kind(data)}.")
    count = math.prod(shape)
    flat = _flatten(data, count, what)
    return name, (flat, tuple(shape)), 0


def _flatten(data: list[Any], count: int, what: str) -> list[Any]:
    """v2 `data` may be flat or nested row major; flatten it (iteratively) and check the count."""
    if not data or not isinstance(data[0], list):
        # Flat (the usual form). A list hidden further in is one value here; the
        # conversion then names it ("... is a list: nested too deep").
        flat = data
    else:
        flat = []
        stack = [iter(data)]
        while stack:
            item = next(stack[-1], stack)
            if item is stack:
                stack.pop()
            elif isinstance(item, list):
                if len(stack) > 64:
                    raise InvalidInput(f"The data of {what} is nested too deeply.")
                stack.append(iter(item))
            else:
                flat.append(item)
    if len(flat) != count:
        raise InvalidInput(
            f"The data of {what} has {len(flat)} values, but its shape needs {count}."
        )
    return flat


async def infer(
    plane: DataPlane,
    body: bytes,
    header_length: str | None,
    content_type: str | None,
    name: str,
    version: int | None,
) -> Encoded:
    """`POST /v2/models/{name}[/versions/{v}]/infer`."""
    if header_length is None:
        check_json_content_type(content_type)
        header, binary = body, memoryview(b"")
    else:
        split = parse_length_header(header_length, len(body))
        header, binary = body[:split], memoryview(body)[split:]
    document = require_object(
        await decode_json_async(header), ("id", "parameters", "inputs", "outputs")
    )
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string.")
    parameters = document.get("parameters")
    binary_all = _flag(parameters, "binary_data_output", "the request")
    signature = (parameters or {}).get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidInput("'signature_name' in the request parameters must be a string.")
    requested = _requested_outputs(document.get("outputs"), binary_all)
    served = plane.resolve(name, version)
    names = [out for out, _ in requested]
    if signature is not None:
        plan = {plane.runner(served, signature).name: names or None}
    elif names:
        plan = plane.signatures_for_outputs(served, names)
    else:
        plan = {served.predictor.default_signature: None}
    runner = plane.runner(served, next(iter(plan)))
    tensors = document.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        described = ", ".join(
            f"'{n}' {v2_datatype(s.dtype)} {show_shape(s.shape)}" for n, s in runner.inputs.items()
        )
        raise InvalidInput(
            f"'inputs' must be a non-empty list of tensors: the model takes {described}."
        )
    inputs: dict[str, Any] = {}
    offset = 0
    for tensor in tensors:
        input_name, value, used = _read_input(tensor, runner, binary, offset)
        if input_name in inputs:
            raise InvalidInput(f"Input '{input_name}' is given more than once.")
        offset += used
        inputs[input_name] = value
    if offset != len(binary):
        raise InvalidInput(
            f"The body has {len(binary) - offset} bytes of binary data that no input claims."
        )
    inputs = {key: _shaped(key, value, runner, plane) for key, value in inputs.items()}
    strict_types = may_hold_booleans(header)
    arrays: dict[str, np.ndarray] = {}
    for signature_name, outputs in plan.items():
        signature_runner = plane.runner(served, signature_name)
        result = await plane.infer_on(
            served, signature_runner, inputs, outputs, strict_types=strict_types
        )
        arrays.update(result.outputs)
    if not requested:
        requested = [(out, binary_all) for out in arrays]
    response: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if request_id is not None:
        response["id"] = request_id
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out_name, binary_out in requested:
        array = arrays[out_name]
        tensor: dict[str, Any] = {
            "name": out_name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary_out and array.dtype != np.object_:
            little_endian = array.dtype.newbyteorder("<")
            raw = np.ascontiguousarray(array, dtype=little_endian).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = json_value(array.reshape(-1))
        described.append(tensor)
    response["outputs"] = described
    json_header = await encode_json(plane, response, sum(len(chunk) for chunk in chunks))
    if not chunks:
        return Encoded(json_header)
    return Encoded(
        b"".join([json_header, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(json_header))},
    )


def _requested_outputs(outputs: Any, binary_all: bool) -> list[tuple[str, bool]]:
    if outputs is None:
        return []
    if not isinstance(outputs, list) or not outputs:
        raise InvalidInput("'outputs' must be a non-empty list of {\"name\": ...} objects.")
    requested: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for output in outputs:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput("Each entry of 'outputs' must be an object with a 'name'.")
        require_object(output, ("name", "parameters"))
        out_name = output["name"]
        if out_name in seen:
            raise InvalidInput(
                f"Output '{out_name[:64]}' is requested more than once: name each output once."
            )
        seen.add(out_name)
        binary_out = binary_all or _flag(
            output.get("parameters"), "binary_data", f"output '{out_name[:64]}'"
        )
        requested.append((out_name, binary_out))
    return requested


def _shaped(name: str, value: Any, runner: SignatureRunner, plane: DataPlane) -> Any:
    """JSON data (flat values and a declared shape) as nested rows for the data plane."""
    if isinstance(value, np.ndarray):
        return value
    flat, shape = value
    spec = runner.inputs[name]
    if runner.strict_shapes and spec.shape is not None and len(shape) != len(spec.shape):
        raise InvalidInput(
            f"Input '{name}' has shape {list(shape)}; the model takes {show_shape(spec.shape)}."
        )
    if spec.batched and shape:
        plane.check_rows(shape[0])
    return _nest(flat, shape, spec)


def _nest(flat: list[Any], shape: tuple[int, ...], spec: Any) -> Any:
    """A flat row-major list as nested lists of `shape` (a scalar for shape [])."""
    if not shape:
        return flat[0]
    if 0 in shape:
        return np.zeros(shape, dtype=spec.dtype)
    nested: Any = flat
    for dim in reversed(shape[1:]):
        nested = [nested[i : i + dim] for i in range(0, len(nested), dim)]
    return nested
