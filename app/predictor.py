"""The protocol-neutral model layer: every TensorFlow call of the service lives here.

A `Predictor` wraps one loaded SavedModel version with the contract's
`serving_default` and `grad` signatures (docs/contract.md, section 2). It
takes and returns NumPy arrays; routes never touch tensors.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

INPUT_NAME = "inputs"
INPUT_WIDTH = 64
PREDICT_SIGNATURE = "serving_default"
GRAD_SIGNATURE = "grad"
PREDICT_OUTPUT = "outputs"
GRAD_OUTPUTS = ("hard", "surrogate", "pre_round", "local_grad", "input_grad")


class InvalidModel(Exception):
    """A SavedModel that does not meet the contract; the message says why (no paths)."""


def limit_tensorflow_threads(intra_op: int = 1, inter_op: int = 1) -> None:
    """Give TensorFlow one intra-op and one inter-op thread (one worker per core scales instead).

    A no-op when TensorFlow's runtime is already initialised (e.g. in a test
    process that ran TensorFlow before creating the app).
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        logger.debug("TensorFlow already initialised; thread limits left as they are")


def _spec(dtype: tf.DType, shape: tf.TensorShape) -> dict[str, Any]:
    dims = None if shape.rank is None else [-1 if d is None else int(d) for d in shape.as_list()]
    return {"dtype": dtype.name, "shape": dims}


def describe_signature(function: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Inputs and outputs of a concrete signature function: `{name: {"dtype", "shape"}}`.

    Args:
        function: One entry of `loaded.signatures`.

    Returns:
        `{"inputs": {...}, "outputs": {...}}` with shapes as lists (-1 for a variable dimension).
    """
    _, kwargs = function.structured_input_signature
    inputs = {name: _spec(spec.dtype, spec.shape) for name, spec in kwargs.items()}
    outputs = {
        name: _spec(function.output_dtypes[name], function.output_shapes[name])
        for name in function.output_dtypes
    }
    return {"inputs": inputs, "outputs": outputs}


class Predictor:
    """One loaded SavedModel version: validated signatures, NumPy in and out.

    Args:
        loaded: The object `tf.saved_model.load` returned.

    Raises:
        InvalidModel: A signature is missing or its inputs/outputs differ from the contract.
    """

    def __init__(self, loaded: Any) -> None:
        self._loaded = loaded  # keeps the variables alive
        signatures = loaded.signatures
        for name in (PREDICT_SIGNATURE, GRAD_SIGNATURE):
            if name not in signatures:
                raise InvalidModel(f"the SavedModel has no '{name}' signature")
        self._predict_fn = signatures[PREDICT_SIGNATURE]
        self._grad_fn = signatures[GRAD_SIGNATURE]
        self.signatures = {
            PREDICT_SIGNATURE: describe_signature(self._predict_fn),
            GRAD_SIGNATURE: describe_signature(self._grad_fn),
        }
        self.width, self.outputs = self._check_contract()

    def _check_contract(self) -> tuple[int, int]:
        predict = self.signatures[PREDICT_SIGNATURE]
        grad = self.signatures[GRAD_SIGNATURE]
        for name, sig in ((PREDICT_SIGNATURE, predict), (GRAD_SIGNATURE, grad)):
            inputs = sig["inputs"]
            if list(inputs) != [INPUT_NAME]:
                raise InvalidModel(
                    f"signature '{name}' takes {sorted(inputs)}, expected one input '{INPUT_NAME}'"
                )
            spec = inputs[INPUT_NAME]
            if spec["dtype"] != "float32" or spec["shape"] is None or len(spec["shape"]) != 2:
                raise InvalidModel(f"signature '{name}' input is not float32 [batch, width]")
            if spec["shape"][1] != INPUT_WIDTH:
                raise InvalidModel(
                    f"signature '{name}' takes rows of {spec['shape'][1]} values, "
                    f"the contract needs {INPUT_WIDTH}"
                )
        if PREDICT_OUTPUT not in predict["outputs"]:
            raise InvalidModel(f"signature '{PREDICT_SIGNATURE}' has no '{PREDICT_OUTPUT}' output")
        shape = predict["outputs"][PREDICT_OUTPUT]["shape"]
        if shape is None or len(shape) != 2 or shape[1] < 1:
            raise InvalidModel(f"output '{PREDICT_OUTPUT}' is not [batch, K] with a known K")
        k = shape[1]
        missing = [name for name in GRAD_OUTPUTS if name not in grad["outputs"]]
        if missing:
            raise InvalidModel(f"signature '{GRAD_SIGNATURE}' lacks outputs {missing}")
        return INPUT_WIDTH, k

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Hard 0/1 outputs of `serving_default`.

        Args:
            inputs: float32 `[n, 64]`.

        Returns:
            float32 `[n, K]`.
        """
        return self._predict_fn(inputs=tf.constant(inputs))[PREDICT_OUTPUT].numpy()

    def grad(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the `grad` signature.

        Args:
            inputs: float32 `[n, 64]`.

        Returns:
            `hard`, `surrogate`, `pre_round`, `local_grad` (`[n, K]`), `input_grad` (`[n, K, 64]`).
        """
        result = self._grad_fn(inputs=tf.constant(inputs))
        return {name: result[name].numpy() for name in GRAD_OUTPUTS}

    def warm_up(self, rows: np.ndarray) -> None:
        """Call both signatures once at two batch sizes and check what comes back.

        Args:
            rows: float32 `[n, 64]` rows to call the model with (n >= 1).

        Raises:
            InvalidModel: Wrong output shapes, or outputs that are not exactly 0/1 or not finite.
        """
        for batch in (rows[:1], np.concatenate([rows, rows])[:2]):
            n = len(batch)
            hard = self.predict(batch)
            if hard.shape != (n, self.outputs):
                raise InvalidModel(f"warm-up: outputs have shape {hard.shape}, expected ({n}, K)")
            if not np.isin(hard, (0.0, 1.0)).all():
                raise InvalidModel("warm-up: outputs are not all exactly 0 or 1")
            grads = self.grad(batch)
            for name, value in grads.items():
                expected = (
                    (n, self.outputs, self.width) if name == "input_grad" else (n, self.outputs)
                )
                if value.shape != expected:
                    raise InvalidModel(
                        f"warm-up: grad output '{name}' has shape {value.shape}, "
                        f"expected {expected}"
                    )
                if not np.isfinite(value).all():
                    raise InvalidModel(f"warm-up: grad output '{name}' is not finite")


def load_predictor(path: Path) -> Predictor:
    """Load and validate one SavedModel version directory.

    Args:
        path: `<models_root>/<name>/<version>`.

    Returns:
        A validated `Predictor` (not yet warmed up).

    Raises:
        InvalidModel: It does not load or does not meet the contract.
    """
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a broken SavedModel
        raise InvalidModel(f"the SavedModel does not load ({type(exc).__name__})") from exc
    return Predictor(loaded)
