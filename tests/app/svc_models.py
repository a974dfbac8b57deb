"""Tiny SavedModels in diffround.export's layout, built with plain TensorFlow (no diffround).

Each model: `pre_round = sigmoid((inputs / 16) @ w + b)` (in (0, 1)), hard
outputs `round(pre_round)`, and the `sigmoid` surrogate
`s = sigmoid(slope * (pre_round - center))` with `d s / d pre_round = slope * s * (1 - s)`.
The signatures and `assets.extra/diffround.json` follow docs/contract.md
(format `diffround.savedmodel/v2`): one input `inputs`, one output `outputs`
produced by one rounding layer `round`.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

WIDTH = 64
LAYER = "round"
#: The grad signature's keys, by role (docs/contract.md).
GRAD_KEYS = {
    "relaxed": "outputs__relaxed",
    "jacobian": "outputs__jacobian__inputs",
    "pre_round": f"{LAYER}__pre_round",
    "surrogate": f"{LAYER}__surrogate",
    "local_grad": f"{LAYER}__local_grad",
    "hard": f"{LAYER}__hard",
}


class TinyRoundingModel(tf.Module):
    """A dense layer, a sigmoid, and rounding; the `grad` signature differentiates the surrogate."""

    def __init__(self, k: int, seed: int, slope: float, center: float, width: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(0.0, 1.0, (width, k)).astype(np.float32))
        self.b = tf.Variable(rng.normal(0.0, 0.5, (k,)).astype(np.float32))
        self.slope = tf.constant(slope, tf.float32)
        self.center = tf.constant(center, tf.float32)
        spec = tf.TensorSpec([None, width], tf.float32, name="inputs")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.grad = tf.function(self._grad, input_signature=[spec])

    def _pre_round(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(tf.matmul(inputs / 16.0, self.w) + self.b)

    def _surrogate(self, pre_round: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(self.slope * (pre_round - self.center))

    def _serve(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": tf.round(self._pre_round(inputs))}

    def _grad(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(inputs)
            pre_round = self._pre_round(inputs)
            surrogate = self._surrogate(pre_round)
        local_grad = tape.gradient(surrogate, pre_round)
        jacobian = tape.batch_jacobian(surrogate, inputs)
        return {
            GRAD_KEYS["relaxed"]: surrogate,
            GRAD_KEYS["jacobian"]: jacobian,
            GRAD_KEYS["pre_round"]: pre_round,
            GRAD_KEYS["surrogate"]: surrogate,
            GRAD_KEYS["local_grad"]: local_grad,
            GRAD_KEYS["hard"]: tf.round(pre_round),
        }


UNIT_GRID = {"step": 1.0, "offset": 0.0, "min": None, "max": None}


def metadata(name: str, version: int, k: int, slope: float, center: float, width: int) -> dict:
    """A diffround.json document for a tiny model (docs/contract.md, format v2)."""
    rng = np.random.default_rng(version)
    examples = [
        {"inputs": {"inputs": rng.integers(0, 17, width).astype(float).tolist()}, "label": i}
        for i in range(3)
    ]
    return {
        "format": "diffround.savedmodel/v2",
        "model_name": name,
        "version": version,
        "description": "tiny plain-TensorFlow test model",
        "inputs": [
            {
                "name": "inputs",
                "dtype": "float32",
                "shape": [-1, width],
                **({"image_shape": [8, 8]} if width == 64 else {}),
            }
        ],
        "outputs": [
            {
                "name": "outputs",
                "dtype": "float32",
                "shape": [-1, k],
                "rounding_layer": LAYER,
                "grid": UNIT_GRID,
            }
        ],
        "rounding_layers": [
            {
                "name": LAYER,
                "method": "sigmoid",
                "params": {"slope": slope, "center": center},
                "grid": UNIT_GRID,
                "shape": [-1, k],
            }
        ],
        "signatures": {"predict": "serving_default", "grad": "grad"},
        "grad": {
            "outputs": {
                "outputs": {
                    "relaxed": GRAD_KEYS["relaxed"],
                    "jacobians": {"inputs": GRAD_KEYS["jacobian"]},
                }
            },
            "layers": {
                LAYER: {
                    role: GRAD_KEYS[role]
                    for role in ("pre_round", "surrogate", "local_grad", "hard")
                }
            },
            "max_jacobian_elements": 65536,
            "omitted_jacobians": [],
        },
        "decoding": {"kind": "binary_msb_first", "classes": 10} if k == 4 else None,
        "examples": examples,
    }


def build_model(
    models_root: Path,
    name: str,
    version: int,
    *,
    k: int = 4,
    seed: int = 0,
    slope: float = 4.0,
    center: float = 0.5,
    width: int = WIDTH,
    with_grad: bool = True,
    with_metadata: bool = True,
    edit_metadata: Callable[[dict], None] | None = None,
) -> Path:
    """Export one version the way the contract says: to a dot-named sibling, then rename.

    Returns:
        The version directory.
    """
    module = TinyRoundingModel(k, seed, slope, center, width)
    signatures = {"serving_default": module.serve}
    if with_grad:
        signatures["grad"] = module.grad
    target = models_root / name / str(version)
    tmp = models_root / name / f".{version}.tmp-{os.getpid()}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    if with_metadata:
        (tmp / "assets.extra").mkdir(exist_ok=True)
        document = metadata(name, version, k, slope, center, width)
        if edit_metadata is not None:
            edit_metadata(document)
        (tmp / "assets.extra" / "diffround.json").write_text(json.dumps(document))
    tmp.rename(target)
    return target


def install(source: Path, models_root: Path, name: str, version: int) -> Path:
    """Copy a built version into a models root atomically (copy to a dot-name, then rename)."""
    target = models_root / name / str(version)
    tmp = models_root / name / f".{version}.tmp-copy"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp)
    tmp.rename(target)
    return target


def truncate_variables(version_dir: Path) -> None:
    """Cut every variables data file in half (a corrupt export)."""
    for data in (version_dir / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[: max(1, data.stat().st_size // 2)])
