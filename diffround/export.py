"""`diffround.export`: one call from a Keras model to a servable SavedModel.

The SavedModel needs no `diffround` to load (`tf.saved_model.load` alone) and
holds three signatures, all taking one keyword argument per model input
(named after the Keras input, its dtype and shape with the batch dimension
`None`):

- `serving_default` and `serve` (the same function): every model output in
  inference mode (exact rounding), keyed by the model's output names.
- `grad`: the model with every `DiffRound` layer in its deterministic relaxed
  form (`layer.relaxed(x)`, see `diffround.relaxed_mode`). For each output
  `o`: `o__relaxed` and, for each float input `i`, the per-row Jacobian
  `o__jacobian__i[b, *out_shape, *in_shape] = d relaxed_o[b, ...] / d i[b, ...]`.
  For each rounding layer `l`: `l__pre_round` (its input), `l__surrogate`
  (`l.relaxed(pre_round)`), `l__local_grad` (the elementwise derivative
  `d surrogate / d pre_round`) and `l__hard` (exact rounding of the same
  pre-round values). The gradients are taken with `tf.GradientTape` inside
  the traced function, so the file holds plain graph ops and serving needs no
  custom gradient registration.

`assets.extra/diffround.json` (strict JSON, format `diffround.savedmodel/v2`)
describes the inputs, the outputs (which are rounded, to which grid), every
rounding layer (method, parameters, grid, a sampled surrogate curve), the
`grad` keys and what the caller adds (description, examples, decoding,
metrics, training facts).
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from diffround import signatures

#: The metadata's format tag.
METADATA_FORMAT = "diffround.savedmodel/v2"
#: The metadata file, relative to the SavedModel directory.
METADATA_PATH = Path("assets.extra") / "diffround.json"
#: Default bound on the elements of one row's Jacobian (`out_size * in_size`).
DEFAULT_MAX_JACOBIAN_ELEMENTS = 65536
#: Points of each rounding layer's `surrogate_curve`.
CURVE_POINTS = 201
#: The grid of a rounding layer without `grid_spec()`: the integers.
UNIT_GRID: dict[str, float | None] = {"step": 1.0, "offset": 0.0, "min": None, "max": None}
#: Signature names, as recorded in the metadata's `signatures`.
PREDICT_SIGNATURE = "serving_default"
GRAD_SIGNATURE = "grad"
#: Top-level metadata keys that `export` generates (`extra_metadata` may not set them).
GENERATED_KEYS = (
    "format",
    "model_name",
    "version",
    "description",
    "inputs",
    "outputs",
    "rounding_layers",
    "signatures",
    "grad",
    "examples",
    "decoding",
    "metrics",
    "training",
    "versions",
    "created_at",
)


def export(
    model: keras.Model,
    path: str | os.PathLike[str],
    *,
    description: str | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
    decoding: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    input_info: Mapping[str, Mapping[str, Any]] | None = None,
    output_info: Mapping[str, Mapping[str, Any]] | None = None,
    input_signature: Mapping[str, tf.TensorSpec] | Sequence[tf.TensorSpec] | None = None,
    jacobians: bool = True,
    max_jacobian_elements: int = DEFAULT_MAX_JACOBIAN_ELEMENTS,
) -> Path:
    """Writes a Keras model as a servable SavedModel with a `grad` signature.

    The SavedModel is written into a temporary sibling of `path` and renamed
    into place once complete, so a model server polling the parent never
    sees half a model. When `path` looks like a TF Serving version directory
    (`<models root>/<name>/<digits>`), the metadata's `model_name` and
    `version` are filled from it.

    Jacobians: for every float input `i` and output `o`, the per-row Jacobian
    has `size(o[b]) * size(i[b])` elements (an 8x8 autoencoder: 64 * 64 =
    4096). Pairs above `max_jacobian_elements` (default 65536), or whose
    non-batch shape is not fully known, are left out and listed in the
    metadata's `grad.omitted_jacobians`, as are integer inputs (no gradient);
    `jacobians=False` leaves out all of them. An output of at most
    `signatures.UNROLLED_JACOBIAN_OUTPUTS` (16) elements per row gets its
    Jacobian from one backward pass per element, a wider one from
    `tape.batch_jacobian` (`signatures.row_jacobian`).

    Args:
        model: A built Keras 3 model (functional, Sequential or subclassed)
            with any number of `diffround.DiffRound` layers anywhere in it.
        path: The SavedModel directory to create; must not exist or be an
            empty directory.
        description: One line for the metadata (default: none).
        examples: Rows a client can send, one per entry, without a batch
            dimension: `{"inputs": {"<input name>": row, ...}, ...}` (extra
            keys such as `"label"` are kept). NumPy values are converted.
        decoding: How to read the outputs (passed through, e.g.
            `{"kind": "binary_msb_first", "classes": 10}`).
        metrics: Held-out metrics (passed through).
        training: Training facts (epochs, seed, command, ...; passed through).
        extra_metadata: More top-level metadata keys (must not be one of
            `GENERATED_KEYS`).
        input_info: Per input name, extra fields of its metadata entry
            (`"description"`, `"image_shape"`, `"range"`, ...).
        output_info: Per output name, extra fields of its metadata entry.
        input_signature: The inputs, as `tf.TensorSpec`s with names (a
            sequence, or a mapping from name to spec). Needed only for
            subclassed models, which do not record their inputs; default:
            `model.inputs`.
        jacobians: Whether the `grad` signature returns input Jacobians
            (default True).
        max_jacobian_elements: Largest `out_size * in_size` per row of an
            exported Jacobian (default 65536).

    Returns:
        The SavedModel directory (`path`).

    Raises:
        FileExistsError: `path` exists and is not an empty directory.
        ValueError: The inputs cannot be determined, a name is invalid, two
            rounding layers share a name, or a rounding layer is called twice.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"Refusing to overwrite {path}: it exists and is not empty.")
    if isinstance(max_jacobian_elements, bool) or not isinstance(max_jacobian_elements, int):
        raise ValueError(
            "Invalid value received for argument `max_jacobian_elements`. Expected an int >= 0. "
            f"Received: max_jacobian_elements={max_jacobian_elements!r}"
        )
    if max_jacobian_elements < 0:
        raise ValueError(
            "Invalid value received for argument `max_jacobian_elements`. Expected an int >= 0. "
            f"Received: max_jacobian_elements={max_jacobian_elements}"
        )
    extra = dict(extra_metadata or {})
    clashes = sorted(set(extra) & set(GENERATED_KEYS))
    if clashes:
        raise ValueError(f"`extra_metadata` may not set generated key(s): {', '.join(clashes)}.")
    specs = signatures.input_specs(model, input_signature)
    names = [spec.name for spec in specs]
    example_rows = _examples(examples, names)

    module = signatures.ExportModule(model, specs, jacobians, max_jacobian_elements)
    serve = module.serve_function.get_concrete_function()
    grad = module.grad_function.get_concrete_function()
    trace = module.trace
    metadata = {
        "format": METADATA_FORMAT,
        "model_name": None,
        "version": None,
        "description": description,
        "inputs": [
            {
                "name": spec.name,
                "dtype": spec.dtype.name,
                "shape": signatures.shape_list(spec.shape),
                **dict((input_info or {}).get(spec.name, {})),
            }
            for spec in specs
        ],
        "outputs": [
            {
                "name": name,
                "dtype": trace.serve_dtypes[name],
                "shape": trace.output_shapes[name],
                "rounding_layer": trace.rounded_by.get(name),
                "grid": (
                    _grid(trace.layers[trace.rounded_by[name]])
                    if name in trace.rounded_by
                    else None
                ),
                **dict((output_info or {}).get(name, {})),
            }
            for name in trace.output_names
        ],
        "rounding_layers": [
            _layer_metadata(layer, trace.layer_shapes[name]) for name, layer in trace.layers.items()
        ],
        "signatures": {"predict": PREDICT_SIGNATURE, "grad": GRAD_SIGNATURE},
        "grad": {
            "outputs": {
                name: {
                    "relaxed": f"{name}__relaxed",
                    "jacobians": {
                        input_name: key
                        for (output, input_name), key in trace.jacobian_keys.items()
                        if output == name
                    },
                }
                for name in trace.output_names
            },
            "layers": {
                name: {part: f"{name}__{part}" for part in signatures.LAYER_PARTS}
                for name in trace.layers
            },
            "jacobians": jacobians,
            "max_jacobian_elements": max_jacobian_elements,
            "omitted_jacobians": trace.omitted,
        },
        "examples": example_rows,
        "decoding": _jsonable(decoding),
        "metrics": _jsonable(metrics),
        "training": _jsonable(training),
        "versions": versions(),
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_jsonable(extra),
    }
    if path.name.isdigit() and int(path.name) >= 1:
        metadata["model_name"] = path.parent.name
        metadata["version"] = int(path.name)
    # Fail before writing anything if the metadata is not strict JSON.
    text = json.dumps(metadata, indent=1, allow_nan=False) + "\n"

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={PREDICT_SIGNATURE: serve, "serve": serve, GRAD_SIGNATURE: grad},
        )
        (tmp / METADATA_PATH).parent.mkdir(parents=True, exist_ok=True)
        (tmp / METADATA_PATH).write_text(text)
        # os.rename replaces an empty directory but refuses a non-empty one,
        # so a model written meanwhile by someone else is never overwritten.
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a SavedModel's `assets.extra/diffround.json`.

    Args:
        path: The SavedModel directory.

    Returns:
        The metadata.
    """
    return json.loads((Path(path) / METADATA_PATH).read_text())


def versions() -> dict[str, str]:
    """Versions of the libraries that wrote the model."""
    from diffround import __version__

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "diffround": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def grid_of(layer: Any) -> dict[str, float | None]:
    """A rounding layer's grid: `layer.grid_spec()` when it has one, else the unit grid.

    Args:
        layer: A rounding layer.

    Returns:
        `{"step", "offset", "min", "max"}` (floats; `min`/`max` None when unbounded).
    """
    return _grid(layer)


def surrogate_curve(layer: Any, points: int = CURVE_POINTS) -> dict[str, list[float | None]]:
    """Samples `layer.relaxed` and its derivative over two grid steps.

    The range is `[offset - step/2, offset + 3 step/2]` of the layer's grid:
    one full period of the surrogate around the first two grid points.

    Args:
        layer: A rounding layer with a `relaxed` method.
        points: Number of samples (default 201).

    Returns:
        `{"x": [...], "value": [...], "derivative": [...]}`; a non-finite
        sample is `None` (strict JSON).
    """
    grid = _grid(layer)
    step, offset = float(grid["step"]), float(grid["offset"])
    x = np.linspace(offset - step / 2, offset + 1.5 * step, points).astype(np.float32)
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        value = layer.relaxed(tensor)
    derivative = tape.gradient(value, tensor, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {
        "x": [round(float(v), 6) for v in x],
        "value": [_finite(v) for v in np.asarray(value, np.float64)],
        "derivative": [_finite(v) for v in np.asarray(derivative, np.float64)],
    }


def _examples(examples: Sequence[Mapping[str, Any]] | None, names: list[str]) -> list[Any]:
    rows = []
    for i, example in enumerate(examples or []):
        inputs = example.get("inputs") if isinstance(example, Mapping) else None
        if not isinstance(inputs, Mapping) or not set(inputs) <= set(names):
            raise ValueError(
                f"Example {i} must be {{'inputs': {{name: row}}}} with input names among "
                f"{names}; got {example!r:.200}."
            )
        rows.append(_jsonable(dict(example)))
    return rows


def _grid(layer: Any) -> dict[str, float | None]:
    grid_spec = getattr(layer, "grid_spec", None)
    spec = dict(grid_spec()) if callable(grid_spec) else dict(UNIT_GRID)
    return {key: None if spec.get(key) is None else float(spec[key]) for key in UNIT_GRID}


def _layer_metadata(layer: Any, shape: list[int]) -> dict[str, Any]:
    params_of = getattr(layer, "current_params", None)
    return {
        "name": layer.name,
        "method": getattr(layer, "method", None),
        "params": _jsonable(params_of() if callable(params_of) else {}),
        "grid": _grid(layer),
        "shape": shape,
        "surrogate_curve": surrogate_curve(layer),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Converts NumPy arrays and scalars (at any depth) to JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tf.Tensor):
        return _jsonable(value.numpy())
    return value
