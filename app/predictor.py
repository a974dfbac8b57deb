"""The model layer: every TensorFlow call of the service lives here.

A `Predictor` wraps one loaded SavedModel version, whatever exported it
(`diffround.export`, Keras `model.export()`, a TF1 graph export): one
`SignatureRunner` per signature of `loaded.signatures`, each knowing its
input and output specs (names, dtypes, shapes with -1 for variable
dimensions). Runners take and return NumPy arrays; routes never touch tensors.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

#: The signature a request runs when it names none (TF Serving's default).
DEFAULT_SIGNATURE = "serving_default"
#: The signature `diffround.export` writes with relaxed values and gradients.
GRAD_SIGNATURE = "grad"


class InvalidModel(Exception):
    """A SavedModel that cannot be served; the message says why (no paths)."""


class ModelCallError(ValueError):
    """The model refused the inputs at call time (a graph's own shape or value check).

    The message is TensorFlow's first line, without paths; callers report it as
    invalid input (TF Serving answers such errors with 400).
    """


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature.

    Attributes:
        name: The key the signature uses.
        dtype: NumPy dtype (`np.object_` for strings).
        shape: Dimensions with -1 for a variable one; None when the rank is unknown.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...] | None

    @property
    def batched(self) -> bool:
        """Whether the first dimension is a variable batch dimension."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] == -1

    @property
    def dtype_name(self) -> str:
        """TensorFlow's name of the dtype (`float32`, `int64`, `string`, ...)."""
        return "string" if self.dtype == np.object_ else self.dtype.name

    def describe(self) -> dict[str, Any]:
        """`{"name", "dtype", "shape"}` for metadata documents (shape null: unknown rank)."""
        return {
            "name": self.name,
            "dtype": self.dtype_name,
            "shape": None if self.shape is None else list(self.shape),
        }


class SignatureRunner(Protocol):
    """A callable signature: NumPy inputs by name -> NumPy outputs by name."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    strict_shapes: bool

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature."""
        ...


def _numpy_dtype(dtype: tf.DType) -> np.dtype:
    if dtype == tf.string:
        return np.dtype(np.object_)
    return np.dtype(dtype.as_numpy_dtype)


def _spec(name: str, dtype: tf.DType, shape: tf.TensorShape) -> TensorSpec:
    dims = None if shape.rank is None else tuple(-1 if d is None else int(d) for d in shape)
    return TensorSpec(name, _numpy_dtype(dtype), dims)


_NOISE_PREFIXES = ("Graph execution error", "Detected at node", "<stack traces", "[[", "Node:")


def graph_error_message(exc: BaseException) -> str:
    """The line of a TensorFlow error that says what is wrong, without node names or paths.

    A graph's own check (`Matrix size-incompatible: In[0]: [2,4], In[1]: [3,2]`)
    comes after lines naming the node and where it was defined; those are dropped.
    """
    text = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE_PREFIXES)]
    line = (useful or lines or [type(exc).__name__])[-1 if useful else 0]
    line = line.split(" [Op:", 1)[0].split("\t [[", 1)[0]
    return line[:300]


def _fits(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    return len(shape) == len(spec) and all(w in (-1, g) for w, g in zip(spec, shape, strict=True))


def check_inputs(specs: dict[str, TensorSpec], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs as contiguous arrays in the specs' order, each checked against its spec.

    A value whose dtype differs is cast when NumPy's "same_kind" rule allows it
    (float64 -> float32, int32 -> int64), as `tf.constant` would; anything else
    is refused, so that every runtime accepts exactly the same calls.

    Args:
        specs: The signature's inputs.
        inputs: `{name: array}`, exactly the specs' names.

    Returns:
        The arrays in `specs` order.

    Raises:
        ValueError: A name is missing or unknown, or a shape does not fit its spec.
        TypeError: A dtype that cannot be cast to the spec's.
    """
    if inputs.keys() != specs.keys():
        missing = sorted(specs.keys() - inputs.keys())
        unknown = sorted(inputs.keys() - specs.keys())
        raise ValueError(
            f"inputs must be exactly {sorted(specs)}; missing {missing}, unknown {unknown}"
        )
    arrays = []
    for name, spec in specs.items():
        value = inputs[name]
        if not isinstance(value, np.ndarray) or value.dtype != spec.dtype:
            value = np.asarray(value)
            if value.dtype != spec.dtype:
                if spec.dtype != object and not np.can_cast(value.dtype, spec.dtype, "same_kind"):
                    raise TypeError(f"input '{name}': {value.dtype} cannot be cast to {spec.dtype}")
                value = value.astype(spec.dtype)
        if spec.shape is not None and not _fits(value.shape, spec.shape):
            raise ValueError(f"input '{name}': shape {value.shape} does not fit {spec.shape}")
        arrays.append(value if value.flags.c_contiguous else np.ascontiguousarray(value))
    return arrays


class SavedModelRunner:
    """One signature of a loaded SavedModel, called through its concrete function.

    TF2 signatures (Keras `model.export()`, `tf.saved_model.save`) declare the
    shapes they compute with, so requests are checked against them up front
    (`strict_shapes`). TF1 graph exports often declare shapes their graph does
    not need (`[-1, 1]` fed with `[3]`); like TF Serving, only their dtypes
    are checked up front, and the graph's own shape error becomes a 400.

    Args:
        name: The signature key.
        function: `loaded.signatures[name]`.
    """

    runtime = "savedmodel"

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function
        self.strict_shapes = type(function).__name__ != "WrappedFunction"
        _, kwargs = function.structured_input_signature
        self.inputs = {key: _spec(key, spec.dtype, spec.shape) for key, spec in kwargs.items()}
        outputs = function.structured_outputs
        if not isinstance(outputs, dict):
            raise InvalidModel(f"signature '{name}' does not return named outputs")
        self.outputs = {key: _spec(key, value.dtype, value.shape) for key, value in outputs.items()}
        self._dtypes = {key: spec.dtype for key, spec in kwargs.items()}

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature on NumPy arrays.

        Raises:
            ModelCallError: The graph refused the inputs (shape or value checks inside it).
        """
        try:
            tensors = {
                key: tf.constant(value, dtype=self._dtypes[key]) for key, value in inputs.items()
            }
        except KeyError as exc:
            raise ModelCallError(f"unknown input {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelCallError(graph_error_message(exc)) from None
        try:
            result = self.function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise ModelCallError(graph_error_message(exc)) from None
        return {key: result[key].numpy() for key in self.outputs}

    def __repr__(self) -> str:
        return f"SavedModelRunner({self.name!r})"


class Predictor:
    """One loaded SavedModel version: a runner per signature.

    Args:
        loaded: The object `tf.saved_model.load` returned.

    Raises:
        InvalidModel: The SavedModel has no signature that can be served.
    """

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded  # keeps the variables alive
        self.runners: dict[str, SignatureRunner] = {}
        for name, function in loaded.signatures.items():
            try:
                self.runners[name] = SavedModelRunner(name, function)
            except InvalidModel as exc:
                logger.warning("signature skipped: %s", exc)
        if not self.runners:
            raise InvalidModel("the SavedModel has no servable signature")
        self.default_signature = (
            DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in self.runners else sorted(self.runners)[0]
        )


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


def load_predictor(path: Path) -> Predictor:
    """Load one SavedModel version directory.

    Args:
        path: `<models_root>/<name>/<version>`.

    Returns:
        A `Predictor` (not yet warmed up).

    Raises:
        InvalidModel: It does not load or has no servable signature.
    """
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a broken SavedModel
        raise InvalidModel(f"the SavedModel does not load ({type(exc).__name__})") from exc
    return Predictor(loaded)
