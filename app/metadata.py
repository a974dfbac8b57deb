"""What a version directory says about itself beyond its signatures.

`assets.extra/diffround.json` is written by `diffround.export` (format
`diffround.savedmodel/v2`, docs/contract.md): which outputs are rounded and
to which grid, which `grad` signature keys hold relaxed values, Jacobians and
per-layer values, examples and a decoding. Any other SavedModel has no such
file and is served from its signatures alone. This module reads and checks
the file against the signatures, and builds warm-up inputs; it never imports
TensorFlow.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.interpret import Decoding, parse_decoding
from app.predictor import GRAD_SIGNATURE, InvalidModel, SignatureRunner, TensorSpec

METADATA_FILE = Path("assets.extra") / "diffround.json"
FORMAT_V2 = "diffround.savedmodel/v2"
# An absolute POSIX path of two or more components (not a URL's, not a relative one).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.~-]+/)+[\w.~-]*")


@dataclass(frozen=True, slots=True)
class Grid:
    """Values `step * k + offset`, optionally clipped to `[low, high]`.

    Each bound is a number, or (a per-channel grid, e.g. a learned step per
    channel) an array broadcast along the output's last axis.
    """

    step: np.ndarray
    offset: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    #: Whether every grid value is an integer (then JSON answers show integers).
    integral: bool

    def off_grid(self, values: np.ndarray) -> np.ndarray:
        """A mask of the values that are not grid points (or are outside the clip range)."""
        with np.errstate(invalid="ignore", over="ignore"):
            k = (values.astype(np.float64) - self.offset) / self.step
            tolerance = 1e-4 * np.maximum(1.0, np.abs(k))
            bad = np.abs(k - np.round(k)) > tolerance
            slack = 1e-6 * np.abs(self.step)
            if self.low is not None:
                bad |= values < self.low - slack
            if self.high is not None:
                bad |= values > self.high + slack
        return bad | ~np.isfinite(values)


@dataclass(slots=True)
class GradMap:
    """Which `grad` signature keys hold what (from the metadata's `grad` section)."""

    outputs: dict[str, dict[str, Any]]
    layers: dict[str, dict[str, str]]
    omitted_jacobians: list[dict[str, Any]] = field(default_factory=list)

    def keys(self) -> set[str]:
        """Every signature output key the map names."""
        names: set[str] = set()
        for entry in self.outputs.values():
            names.add(entry["relaxed"])
            names.update(entry.get("jacobians", {}).values())
        for entry in self.layers.values():
            names.update(entry.values())
        return names


@dataclass(slots=True)
class ModelInfo:
    """A version's metadata document and what the service reads from it."""

    document: dict[str, Any]
    grids: dict[str, Grid] = field(default_factory=dict)
    grad: GradMap | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    decoding: Decoding | None = None

    @property
    def exported_by_diffround(self) -> bool:
        """Whether the version carries a `grad` map (`diffround.export`'s contract)."""
        return self.grad is not None


def without_paths(value: Any) -> Any:
    """A metadata value with every absolute filesystem path replaced by `<path>`.

    Exports may record the command that trained them (`--models-root /...`);
    the service never shows a filesystem path of any machine. Iterative, so a
    deeply nested document cannot exhaust the stack.
    """
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub("<path>", value) if "/" in value else value
    if not isinstance(value, list | dict):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str) and "/" in item:
            container[key] = _ABSOLUTE_PATH.sub("<path>", item)
        elif isinstance(item, list):
            copy = list(item)
            container[key] = copy
            stack.extend((copy, i) for i in range(len(copy)))
        elif isinstance(item, dict):
            copy_dict = dict(item)
            container[key] = copy_dict
            stack.extend((copy_dict, k) for k in copy_dict)
    return root[0]


def _grid_value(value: Any, where: str, key: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidModel(f"its metadata grid of {where} has a non-numeric '{key}'") from None
    if array.ndim > 1 or not np.isfinite(array).all():
        raise InvalidModel(f"its metadata grid of {where} needs finite numbers for '{key}'")
    return array


def _grid(value: Any, where: str) -> Grid:
    if not isinstance(value, dict):
        raise InvalidModel(f"its metadata grid of {where} is not an object")
    step = _grid_value(value.get("step", 1.0), where, "step")
    offset = _grid_value(value.get("offset", 0.0), where, "offset")
    low = None if value.get("min") is None else _grid_value(value["min"], where, "min")
    high = None if value.get("max") is None else _grid_value(value["max"], where, "max")
    if not (step > 0).all():
        raise InvalidModel(f"its metadata grid of {where} needs a step > 0")
    integral = bool(np.all(np.mod(step, 1) == 0) and np.all(np.mod(offset, 1) == 0))
    return Grid(step, offset, low, high, integral)


def _grad_map(document: dict[str, Any], runners: dict[str, SignatureRunner]) -> GradMap:
    section = document.get("grad")
    if not isinstance(section, dict):
        raise InvalidModel("its metadata has no 'grad' section")
    grad = runners.get(GRAD_SIGNATURE)
    if grad is None:
        raise InvalidModel(
            f"its metadata describes gradients but it has no '{GRAD_SIGNATURE}' signature"
        )
    outputs = section.get("outputs", {})
    layers = section.get("layers", {})
    if not isinstance(outputs, dict) or not isinstance(layers, dict):
        raise InvalidModel("its metadata 'grad' section is not {outputs: {...}, layers: {...}}")
    grad_map = GradMap(
        outputs=outputs,
        layers=layers,
        omitted_jacobians=list(section.get("omitted_jacobians") or []),
    )
    try:
        names = grad_map.keys()
    except (AttributeError, KeyError, TypeError):
        raise InvalidModel("its metadata 'grad' section names keys in an unknown layout") from None
    missing = sorted(name for name in names if name not in grad.outputs)
    if missing:
        raise InvalidModel(
            f"its metadata names grad outputs the '{GRAD_SIGNATURE}' signature lacks: {missing[:5]}"
        )
    return grad_map


def read_model_info(path: Path, runners: dict[str, SignatureRunner]) -> ModelInfo:
    """Read and check a version's metadata against its signatures.

    Args:
        path: The version directory.
        runners: Its signatures.

    Returns:
        The metadata; an empty `ModelInfo` when the version has no metadata file
        (a SavedModel exported by anything else).

    Raises:
        InvalidModel: The file exists but is unreadable or contradicts the signatures.
    """
    try:
        raw = (path / METADATA_FILE).read_bytes()
    except FileNotFoundError:
        return ModelInfo(document={})
    except OSError:
        raise InvalidModel("its assets.extra/diffround.json is not readable") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidModel("its assets.extra/diffround.json is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidModel("its metadata is not a JSON object")
    document = without_paths(document)
    info = ModelInfo(document=document, decoding=parse_decoding(document.get("decoding")))
    if document.get("format") != FORMAT_V2:
        # Older or foreign metadata: shown as it is, the version is served from its signatures.
        return info
    predict = runners.get("serving_default") or next(iter(runners.values()))
    for entry in document.get("outputs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidModel("its metadata 'outputs' entries need a 'name'")
        name = entry["name"]
        if name not in predict.outputs:
            raise InvalidModel(f"its metadata names output '{name}' that the signatures lack")
        if entry.get("grid") is not None:
            info.grids[name] = _grid(entry["grid"], f"output '{name}'")
    for layer in document.get("rounding_layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("name"), str):
            info.layers[layer["name"]] = layer
    if "grad" in document:
        info.grad = _grad_map(document, runners)
    return info


def _zeros(spec: TensorSpec, rows: int) -> np.ndarray | None:
    if spec.shape is None:
        return None
    shape = [rows if i == 0 and d == -1 else max(d, 1) for i, d in enumerate(spec.shape)]
    if spec.dtype == np.object_:
        array = np.empty(shape, dtype=object)
        array.fill(b"")
        return array
    return np.zeros(shape, dtype=spec.dtype)


def warm_up_inputs(info: ModelInfo, runner: SignatureRunner) -> list[dict[str, np.ndarray]]:
    """Inputs to call a signature with before serving it: the metadata's examples, else zeros.

    Args:
        info: The version's metadata.
        runner: The signature.

    Returns:
        One or more input dicts with one row each (empty when a shape is unknown).
    """
    probes: list[dict[str, np.ndarray]] = []
    for example in info.document.get("examples") or []:
        values = example.get("inputs") if isinstance(example, dict) else None
        if not isinstance(values, dict) or set(values) != set(runner.inputs):
            continue
        try:
            probe = {
                name: np.asarray([values[name]], dtype=spec.dtype)
                for name, spec in runner.inputs.items()
            }
        except (TypeError, ValueError):
            continue
        fits = all(
            spec.shape is None
            or (
                len(spec.shape) == probe[name].ndim
                and all(d in (-1, s) for d, s in zip(spec.shape, probe[name].shape, strict=False))
            )
            for name, spec in runner.inputs.items()
        )
        if fits:
            probes.append(probe)
    if probes:
        return probes[:16]
    zeros = {name: _zeros(spec, 1) for name, spec in runner.inputs.items()}
    if any(value is None for value in zeros.values()):
        return []
    return [{name: value for name, value in zeros.items() if value is not None}]
