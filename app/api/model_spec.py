"""The OpenAPI spec of what each served model accepts, exactly.

A model server's request bodies depend on the model: input names, dtypes
and shapes. The template operations (`/v1/models/{name}:predict`, ...)
cannot say that, so the spec also carries one operation per served model
and protocol (`/v1/models/digit-bits:predict`, `/v2/models/digit-bits/infer`,
...) and a `/predict` and `/grad` body that is a `oneOf` over the served
models, each built from the model's own signatures. What such a schema
allows, the server accepts; it is narrower than the server where JSON
Schema cannot express the rule (v2 tensors are given with one row, inputs
in signature order, variable non-batch dimensions as 1; a row's length
cannot be tied to another's). The template operations name no served model
(`name` excludes them): for a served model, its own operation is the spec.
The spec is rebuilt when the set of served versions changes.
"""

import copy
from typing import Any

import numpy as np

from app.dataplane import DataPlane
from app.predictor import SignatureRunner, TensorSpec
from app.served import ServedVersion
from app.tensors import v2_datatype

FLOAT_MAX = {
    2: float(np.finfo(np.float16).max),
    4: float(np.finfo(np.float32).max),
    8: float(np.finfo(np.float64).max),
}


def leaf_schema(dtype: np.dtype) -> dict[str, Any]:
    """The JSON Schema of one value of a dtype."""
    if dtype.kind == "b":
        return {"type": "boolean"}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    if dtype.kind == "f":
        bound = FLOAT_MAX.get(dtype.itemsize, FLOAT_MAX[8])
        return {"type": "number", "minimum": -bound, "maximum": bound}
    return {"type": "string"}


def row_schema(spec: TensorSpec) -> dict[str, Any]:
    """One row of a batch-major input (its shape without the batch dimension)."""
    schema = leaf_schema(spec.dtype)
    for dim in reversed((spec.shape or (-1,))[1:]):
        size = 1 if dim == -1 else dim
        schema = {"type": "array", "items": schema, "minItems": size, "maxItems": size}
    return schema


def batch_schema(spec: TensorSpec, max_rows: int) -> dict[str, Any]:
    """A batch of rows of an input."""
    return {"type": "array", "items": row_schema(spec), "minItems": 1, "maxItems": max_rows}


def _closed(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def tensor_forms(runner: SignatureRunner, max_rows: int) -> tuple[dict, dict]:
    """The columnar (`inputs`) and row (`instances`) schemas of a signature's inputs."""
    specs = runner.inputs
    named = _closed({n: batch_schema(s, max_rows) for n, s in specs.items()}, list(specs))
    if len(specs) == 1:
        ((name, spec),) = specs.items()
        columnar: dict[str, Any] = {"oneOf": [batch_schema(spec, max_rows), named]}
        rows = [row_schema(spec), _closed({name: row_schema(spec)}, [name])]
    else:
        columnar = named
        rows = [_closed({n: row_schema(s) for n, s in specs.items()}, list(specs))]
    # Every row in one form: values, or objects naming every input (the server mixes none).
    forms = [{"type": "array", "items": row, "minItems": 1, "maxItems": max_rows} for row in rows]
    instances = forms[0] if len(forms) == 1 else {"oneOf": forms}
    return columnar, instances


def _servable(runner: SignatureRunner) -> bool:
    """Whether a signature's requests can be described (known ranks, batch-major inputs)."""
    return bool(runner.inputs) and all(spec.batched for spec in runner.inputs.values())


def native_body(
    plane: DataPlane, served: list[ServedVersion], *, grad: bool
) -> dict[str, Any] | None:
    """The `/predict` (or `/grad`) body: one alternative per served model (and the default).

    None when no served model can take the request (the generic schema stays).
    """
    default = plane.repository.default_name
    alternatives = []
    for version in served:
        if grad and (not plane.settings.enable_grad or version.info.grad is None):
            continue
        runner = version.runners[version.predictor.default_signature]
        if not _servable(runner):
            continue
        columnar, instances = tensor_forms(runner, plane.settings.max_batch_rows)
        for named in (True, False) if version.name == default else (True,):
            properties: dict[str, Any] = {"inputs": columnar, "instances": instances}
            required_model: list[str] = []
            if named:
                properties["model"] = {"const": version.name}
                properties["version"] = {"const": version.version}
                required_model = ["model"]
            alternatives.append(
                {
                    "type": "object",
                    "properties": properties,
                    "additionalProperties": False,
                    "required": required_model,
                    "oneOf": [{"required": ["inputs"]}, {"required": ["instances"]}],
                }
            )
    return {"oneOf": alternatives} if alternatives else None


def tfserving_body(plane: DataPlane, version: ServedVersion) -> dict[str, Any] | None:
    """TF Serving's predict body for one model: row or columnar form, any signature it fits."""
    signatures = plane.signatures(version)
    default = signatures[version.predictor.default_signature]
    if not _servable(default):
        return None
    same_inputs = [n for n, r in signatures.items() if r.inputs == default.inputs]
    columnar, instances = tensor_forms(default, plane.settings.max_batch_rows)
    return {
        "type": "object",
        "properties": {
            "signature_name": {"enum": sorted(same_inputs)},
            "instances": instances,
            "inputs": columnar,
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    }


def _v2_tensor(spec: TensorSpec) -> dict[str, Any]:
    dims = [1, *[1 if d == -1 else d for d in (spec.shape or (-1,))[1:]]]
    count = int(np.prod(dims))
    return _closed(
        {
            "name": {"const": spec.name},
            "shape": {"const": dims},
            "datatype": {"const": v2_datatype(spec.dtype)},
            "data": {
                "type": "array",
                "items": leaf_schema(spec.dtype),
                "minItems": count,
                "maxItems": count,
            },
        },
        ["name", "shape", "datatype", "data"],
    )


def v2_body(plane: DataPlane, version: ServedVersion) -> dict[str, Any] | None:
    """The v2 infer body for one model (JSON tensors of one row, in signature order)."""
    signatures = plane.signatures(version)
    default = signatures[version.predictor.default_signature]
    if not _servable(default) or default.inputs.keys() != {
        n for r in signatures.values() for n in r.inputs
    }:
        return None
    outputs = sorted({name for r in signatures.values() for name in r.outputs})
    tensors = [_v2_tensor(spec) for spec in default.inputs.values()]
    return _closed(
        {
            "id": {"type": "string"},
            "inputs": {
                "type": "array",
                "prefixItems": tensors,
                "items": False,
                "minItems": len(tensors),
                "maxItems": len(tensors),
            },
            "outputs": {
                "type": "array",
                "items": _closed({"name": {"enum": outputs}}, ["name"]),
                "minItems": 1,
                "maxItems": len(outputs),
                "uniqueItems": True,
            },
        },
        ["inputs"],
    )


#: The envelope every TF Serving predict body has, whatever the model (checked before the
#: model is resolved, so a body of this shape for an unknown model is a 404).
TFSERVING_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array", "minItems": 1},
        "inputs": {"not": {"type": "null"}},
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
#: The same for v2 infer (outputs named once each, without parameters).
V2_ENVELOPE: dict[str, Any] = _closed(
    {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {"type": "boolean"},
                "signature_name": {"type": "string"},
            },
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string"},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
                "required": ["name", "shape", "datatype"],
                "additionalProperties": False,
            },
        },
        "outputs": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": _closed({"name": {"type": "string"}}, ["name"]),
        },
    },
    ["inputs"],
)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _without_path_params(operation: dict[str, Any], model: str) -> dict[str, Any]:
    concrete = copy.deepcopy(operation)
    concrete["parameters"] = [
        p for p in concrete.get("parameters", []) if p.get("name") not in ("name", "version")
    ]
    concrete["operationId"] = f"{concrete.get('operationId', 'op')}__{model}"
    concrete["summary"] = f"{concrete.get('summary', '')} ({model})"
    return concrete


def add_served_models(schema: dict[str, Any], plane: DataPlane) -> None:
    """Make the spec exact for the served models (see the module docstring), in place."""
    served = [e.serving for e in plane.repository.entries() if e.serving is not None]
    names = [version.name for version in served]
    paths = schema["paths"]
    for path, grad in (("/predict", False), ("/grad", True)):
        body = native_body(plane, served, grad=grad)
        if body is not None:
            paths[path]["post"]["requestBody"] = _json_body(body)
    templates = {
        "/v1/models/{name}:predict": (tfserving_body, "/v1/models/{model}:predict"),
        "/v1/models/{name}/versions/{version}:predict": (
            tfserving_body,
            "/v1/models/{model}/versions/{number}:predict",
        ),
        "/v2/models/{name}/infer": (v2_body, "/v2/models/{model}/infer"),
        "/v2/models/{name}/versions/{version}/infer": (
            v2_body,
            "/v2/models/{model}/versions/{number}/infer",
        ),
    }
    for template, (make_body, concrete_path) in templates.items():
        operation = paths[template]["post"]
        envelope = TFSERVING_ENVELOPE if template.startswith("/v1/") else V2_ENVELOPE
        operation["requestBody"] = _json_body(envelope)
        for version in served:
            body = make_body(plane, version)
            if body is None:
                continue
            concrete = _without_path_params(operation, version.name)
            concrete["requestBody"] = _json_body(body)
            path = concrete_path.format(model=version.name, number=version.version)
            paths[path] = {"post": concrete}
        # The template names no served model: for those, the concrete operations are the spec.
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "name" and names:
                parameter["schema"] = {**parameter["schema"], "not": {"enum": names}}


def served_key(plane: DataPlane) -> tuple[Any, ...]:
    """What the exact spec depends on: the served versions (and the gradient policy)."""
    return (
        plane.settings.enable_grad,
        plane.repository.default_name,
        tuple(
            (e.name, e.serving.version) for e in plane.repository.entries() if e.serving is not None
        ),
    )


__all__ = ["add_served_models", "served_key"]
