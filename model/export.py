"""Export of a trained task as a SavedModel that needs no ``diffround`` to load.

The module below holds the trained Keras encoder and rounding layer and traces
three signatures (docs/contract.md, section 2):

- ``serving_default`` and ``serve``: ``inputs`` float32 ``[batch, 64]`` ->
  ``outputs`` float32 ``[batch, K]``, exactly 0.0/1.0 (the layer's inference
  mode, exact rounding).
- ``grad``: the hard outputs plus the deterministic surrogate
  (``DiffRound.relaxed``), the pre-round values, the surrogate's elementwise
  local derivative and the per-row Jacobian of the surrogate outputs with
  respect to the inputs. The gradients are taken with ``tf.GradientTape``
  *inside* the traced function, so the SavedModel holds plain graph ops and no
  custom-gradient registration is needed to serve them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model import repository
from model.data import NUM_INPUTS

#: Metadata file, relative to the version directory.
METADATA_PATH = Path("assets.extra") / "diffround.json"
#: The metadata's format tag.
METADATA_FORMAT = "diffround.savedmodel/v1"
#: Where the metadata's ``surrogate_curve`` samples the surrogate.
CURVE_RANGE = (-0.5, 1.5)
#: Number of points of ``surrogate_curve``.
CURVE_POINTS = 201

_INPUT_SIGNATURE = [tf.TensorSpec([None, NUM_INPUTS], tf.float32, name="inputs")]


class RoundingModelModule(tf.Module):
    """The exported object: encoder + rounding layer + the contract's signatures.

    Args:
        encoder: Keras model, inputs ``[batch, 64]`` -> pre-round ``[batch, K]``.
        rounding: The trained rounding layer (``diffround.DiffRound``): called
            with ``training=False`` it rounds exactly; ``relaxed(x)`` is its
            deterministic surrogate.
    """

    def __init__(self, encoder: keras.Model, rounding: keras.layers.Layer) -> None:
        super().__init__(name="diffround_model")
        self.encoder = encoder
        self.rounding = rounding

    @tf.function(input_signature=_INPUT_SIGNATURE)
    def serve(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Hard outputs: ``{"outputs": float32 [batch, K]}`` of exact 0/1."""
        return {"outputs": self._hard(self._pre_round(inputs))}

    @tf.function(input_signature=_INPUT_SIGNATURE)
    def grad(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Hard and surrogate outputs with their local and input gradients."""
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            pre_round = self._pre_round(inputs)
            surrogate = tf.cast(self.rounding.relaxed(pre_round), tf.float32)
        # One Jacobian per row: d surrogate[b, k] / d inputs[b, :].
        input_grad = tape.batch_jacobian(surrogate, inputs)
        local_grad = local_derivative(self.rounding, pre_round)
        return {
            "hard": self._hard(pre_round),
            "surrogate": surrogate,
            "pre_round": pre_round,
            "local_grad": local_grad,
            "input_grad": tf.cast(input_grad, tf.float32),
        }

    def _pre_round(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.encoder(inputs, training=False), tf.float32)

    def _hard(self, pre_round: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.rounding(pre_round, training=False), tf.float32)


def local_derivative(rounding: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """Elementwise derivative of ``rounding.relaxed`` at ``x``.

    The surrogate acts elementwise, so the gradient of its sum is the diagonal
    of its Jacobian. A surrogate with no path to ``x`` gets zeros, not ``None``.

    Args:
        rounding: A layer with a ``relaxed`` method.
        x: Pre-round values.

    Returns:
        float32 tensor of ``x``'s shape.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = rounding.relaxed(x)
    derivative = tape.gradient(value, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.cast(derivative, tf.float32)


def surrogate_curve(rounding: keras.layers.Layer) -> dict[str, list[float]]:
    """Samples the deterministic surrogate and its derivative on [-0.5, 1.5].

    Args:
        rounding: The trained rounding layer (its current parameters are used).

    Returns:
        ``{"x": [...], "value": [...], "derivative": [...]}``, 201 points each.
    """
    x = np.linspace(*CURVE_RANGE, CURVE_POINTS).astype(np.float32)
    tensor = tf.constant(x)
    value = np.asarray(rounding.relaxed(tensor), dtype=np.float64)
    derivative = np.asarray(local_derivative(rounding, tensor), dtype=np.float64)
    return {
        "x": [round(float(v), 6) for v in x],
        "value": [float(v) for v in value],
        "derivative": [float(v) for v in derivative],
    }


def save(
    encoder: keras.Model,
    rounding: keras.layers.Layer,
    metadata: dict[str, Any],
    models_root: str | os.PathLike[str],
    name: str,
) -> Path:
    """Writes the next version of model ``name`` atomically.

    The SavedModel and ``assets.extra/diffround.json`` are written into a
    dot-prefixed temporary sibling, which is then renamed to the next free
    numeric version (never replacing one).

    Args:
        encoder: Inputs -> pre-round values.
        rounding: The trained rounding layer.
        metadata: The metadata (``model_name`` and ``version`` are filled in).
        models_root: Repository root.
        name: Model name (the directory under ``models_root``).

    Returns:
        The final version directory.
    """
    model_dir = Path(models_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = repository.temporary_dir(model_dir, repository.next_version(model_dir))
    module = RoundingModelModule(encoder, rounding)
    serve = module.serve.get_concrete_function()
    tf.saved_model.save(
        module,
        str(tmp_dir),
        signatures={
            "serving_default": serve,
            "serve": serve,
            "grad": module.grad.get_concrete_function(),
        },
    )

    def retarget(path: Path, version: int) -> None:
        write_metadata(path, {**metadata, "model_name": name, "version": version})

    return repository.publish(tmp_dir, model_dir, retarget)


def write_metadata(version_dir: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Writes ``assets.extra/diffround.json`` (strict JSON: no NaN/Infinity).

    Args:
        version_dir: The (temporary) version directory.
        metadata: The metadata.

    Returns:
        The file's path.
    """
    path = Path(version_dir) / METADATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=1, allow_nan=False) + "\n")
    return path


def read_metadata(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a version's ``assets.extra/diffround.json``."""
    return json.loads((Path(version_dir) / METADATA_PATH).read_text())
