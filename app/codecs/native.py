"""The service's own API: `POST /predict` and `POST /grad` (docs/contract.md, section 3).

Request (both): `inputs` (a tensor for a one-input model, or an object of
named tensors) or `instances` (TF Serving's rows: values, or objects naming
every input); optional `model` and `version`.

`/predict` answers every output of the default signature by name, hard
values as the model computes them (rounded outputs on an integer grid as
JSON integers), plus `decoded` when the metadata declares a decoding.
`/grad` (models exported by `diffround.export`) answers, for every output,
its hard value, its relaxed value and its Jacobians; for every rounding
layer, its method, parameters, grid and hard, pre-round, surrogate and local
derivative values; and a summary.
"""

from typing import Any

import numpy as np

from app.codecs.common import (
    Encoded,
    columnar_inputs,
    encode_json,
    json_value,
    may_hold_booleans,
    require_object,
    row_inputs,
)
from app.dataplane import DataPlane
from app.errors import InvalidInput
from app.interpret import grad_summary
from app.predictor import GRAD_SIGNATURE, SignatureRunner
from app.served import ServedVersion
from app.validation import decode_json_async

FIELDS = ("inputs", "instances", "model", "version")


async def _parse(
    plane: DataPlane, body: bytes
) -> tuple[ServedVersion, SignatureRunner, dict[str, Any]]:
    document = require_object(await decode_json_async(body), FIELDS)
    has_inputs, has_instances = "inputs" in document, "instances" in document
    if has_inputs and has_instances:
        raise InvalidInput("Send either 'inputs' or 'instances', not both.")
    if not (has_inputs or has_instances):
        raise InvalidInput(
            "Missing 'inputs' or 'instances' key: send {\"inputs\": <tensor or object of named "
            'tensors>} or {"instances": [<row>, ...]}.'
        )
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must be a string (a model name).")
    version = document.get("version")
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidInput("'version' must be a positive integer.")
    served = plane.resolve(model, version)
    runner = plane.runner(served, None)
    if has_inputs:
        inputs = columnar_inputs(document["inputs"], runner, "inputs")
    else:
        inputs = row_inputs(plane, document["instances"], runner, "instances")
    return served, runner, inputs


def hard_outputs(served: ServedVersion, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs as JSON values; rounded outputs on an integer grid as integers."""
    grids = served.info.grids
    return {
        name: json_value(value, integral=name in grids and grids[name].integral)
        for name, value in outputs.items()
    }


async def predict(plane: DataPlane, body: bytes) -> Encoded:
    """`POST /predict`."""
    served, runner, inputs = await _parse(plane, body)
    arrays = plane.prepare(runner, inputs, strict_types=may_hold_booleans(body))
    outputs = await plane.run(served, runner.name, arrays)
    hard = hard_outputs(served, outputs)
    decoding = served.info.decoding
    document = {
        "model": served.name,
        "version": served.version,
        "outputs": hard,
        "decoded": None if decoding is None else decoding.decode(outputs, hard),
    }
    return Encoded(await encode_json(plane, document))


async def grad(plane: DataPlane, body: bytes) -> Encoded:
    """`POST /grad`: 404 when gradients are disabled or the model has none to serve."""
    served, predict_runner, inputs = await _parse(plane, body)
    plane.require_grad(served)
    grad_map = served.info.grad
    assert grad_map is not None
    strict_types = may_hold_booleans(body)
    arrays = plane.prepare(predict_runner, inputs, strict_types=strict_types)
    grad_runner = plane.runner(served, GRAD_SIGNATURE)
    grad_arrays = (
        arrays  # the same specs: the same validated arrays (neither call mutates them)
        if grad_runner.inputs == predict_runner.inputs
        else plane.prepare(grad_runner, inputs, strict_types=strict_types)
    )
    hard, values = await plane.run_both(
        served, (predict_runner.name, arrays), (GRAD_SIGNATURE, grad_arrays)
    )
    outputs: dict[str, Any] = {}
    jacobians: dict[tuple[str, str], np.ndarray] = {}
    hard_json = hard_outputs(served, hard)
    for name, entry in grad_map.outputs.items():
        item: dict[str, Any] = {"relaxed": json_value(values[entry["relaxed"]])}
        if name in hard_json:
            item = {"hard": hard_json[name], **item}
        item["jacobians"] = {}
        for input_name, key in (entry.get("jacobians") or {}).items():
            jacobians[(name, input_name)] = values[key]
            item["jacobians"][input_name] = json_value(values[key])
        outputs[name] = item
    output_ranks = {name: values[e["relaxed"]].ndim - 1 for name, e in grad_map.outputs.items()}
    layers: dict[str, Any] = {}
    layer_values: dict[str, dict[str, np.ndarray]] = {}
    for layer, keys in grad_map.layers.items():
        described = served.info.layers.get(layer, {})
        layer_values[layer] = {part: values[key] for part, key in keys.items()}
        layers[layer] = {
            "method": described.get("method"),
            "params": described.get("params") or {},
            "grid": described.get("grid"),
            **{part: json_value(value) for part, value in layer_values[layer].items()},
        }
    document = {
        "model": served.name,
        "version": served.version,
        "outputs": outputs,
        "rounding_layers": layers,
        "omitted_jacobians": grad_map.omitted_jacobians,
        "summary": grad_summary(layer_values, jacobians, output_ranks),
    }
    return Encoded(await encode_json(plane, document))
