"""The registry of rounding surrogates: name -> forward function, parameters, validation.

`METHODS` lists the names; `surrogate(x, method, **params)` applies one;
`get(identifier)` resolves a name, config dict or instance to a `Surrogate`
(like `keras.activations.get`).
"""

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from diffround import ops


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    Attributes:
        name: Argument name.
        default: Default value.
        kind: One of "positive_float", "float", "positive_int", "bool".
    """

    name: str
    default: Any
    kind: str


@dataclass(frozen=True)
class MethodSpec:
    """How to apply one method.

    Attributes:
        name: Registered name.
        forward: `forward(x, **params, **extra)`; the training-time function.
        params: The method's parameters (the `seed` of stochastic methods is
            separate).
        stochastic: Whether the training forward draws noise (then `forward`
            also takes `seed` and `noise`).
        summary: One line for tables.
        codes: The values the method's exact forward takes, in code units:
            "integers" (rounding; inference is `tf.round`), "sign" ({-1, +1}),
            "binary" ({0, 1}) or "ternary" ({-1, 0, +1}); for the last three
            inference is the method's own hard forward.
    """

    name: str
    forward: Callable[..., tf.Tensor]
    params: tuple[Param, ...] = field(default_factory=tuple)
    stochastic: bool = False
    summary: str = ""
    codes: str = "integers"

    @property
    def float_params(self) -> tuple[str, ...]:
        """Names of the float parameters (the ones a layer keeps in variables)."""
        return tuple(p.name for p in self.params if p.kind.endswith("float"))

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default value."""
        return {p.name: p.default for p in self.params}


_PF, _F, _PI, _B = "positive_float", "float", "positive_int", "bool"

_SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "sine",
        ops.sine_round,
        (Param("compose", 1, _PI),),
        summary="x - sin(2 pi x)/(2 pi)",
    ),
    MethodSpec(
        "clamp",
        ops.clamp_round,
        (Param("threshold", 0.25, _F), Param("slope", 2.0, _PF)),
        summary="min(max(x - threshold, 0) * slope, 1)",
    ),
    MethodSpec("ste", ops.ste_round, summary="x + sg(round(x) - x)"),
    MethodSpec("ste_custom", ops.ste_round_custom, summary="round(x), tf.custom_gradient 1"),
    MethodSpec(
        "fourier",
        ops.fourier_round,
        (Param("terms", 4, _PI),),
        summary="x + (1/pi) sum (-1)^n sin(2 pi n x)/n",
    ),
    MethodSpec(
        "sigmoid",
        ops.sigmoid_round,
        (Param("slope", 10.0, _PF), Param("center", 0.5, _F)),
        summary="sigmoid(slope (x - center))",
    ),
    MethodSpec(
        "soft_round",
        ops.soft_round,
        (Param("alpha", 5.0, _PF),),
        summary="m + tanh(alpha (x - m)) / (2 tanh(alpha/2))",
    ),
    MethodSpec("noise", ops.noise_round, stochastic=True, summary="x + U(-0.5, 0.5)"),
    MethodSpec(
        "binary_concrete",
        ops.binary_concrete_round,
        (Param("temperature", 2.0 / 3.0, _PF), Param("straight_through", True, _B)),
        stochastic=True,
        summary="1[y > 0.5] with grad of y = sigmoid((logit p + L)/temperature)",
    ),
    MethodSpec(
        "clipped_ste",
        ops.clipped_ste_round,
        (Param("clip", 1.0, _PF), Param("center", 0.5, _F)),
        summary="round(x), grad 1[|x - center| <= clip]",
    ),
    MethodSpec(
        "approx_sign",
        ops.approx_sign_round,
        summary="round(x), grad 2 - 4|x - floor(x) - 0.5|",
    ),
    MethodSpec(
        "stochastic",
        ops.stochastic_round,
        stochastic=True,
        summary="floor(x + u), u ~ U[0, 1), grad 1",
    ),
    MethodSpec(
        "universal",
        ops.universal_round,
        stochastic=True,
        summary="round(x + u) - u, u ~ U(-0.5, 0.5), grad 1",
    ),
    MethodSpec(
        "soft_round_noise",
        ops.soft_round_noise,
        (Param("alpha", 5.0, _PF), Param("conditional_mean", True, _B)),
        stochastic=True,
        summary="soft_round_conditional_mean(soft_round(x) + u), u ~ U(-0.5, 0.5)",
    ),
    MethodSpec(
        "ste_sign",
        ops.ste_sign,
        (Param("clip_value", 1.0, _PF),),
        summary="sign(x) (sign(0) = +1), grad 1[|x| <= clip_value]",
        codes="sign",
    ),
    MethodSpec(
        "swish_sign",
        ops.swish_sign,
        (Param("beta", 5.0, _PF),),
        summary="sign(x), grad beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))",
        codes="sign",
    ),
    MethodSpec(
        "ste_heaviside",
        ops.ste_heaviside,
        (Param("clip_value", 1.0, _PF),),
        summary="1[x > 0], grad 1[|x| <= clip_value]",
        codes="binary",
    ),
    MethodSpec(
        "ste_tern",
        ops.ste_tern,
        (
            Param("threshold_value", 0.05, _PF),
            Param("ternary_weight_networks", False, _B),
            Param("clip_value", 1.0, _PF),
        ),
        summary="-1 / 0 / +1 at thresholds -+t, grad 1[|x| <= clip_value]",
        codes="ternary",
    ),
)

_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}

METHODS: tuple[str, ...] = tuple(_REGISTRY)
#: The methods whose exact forward rounds to the integers (the rest are the
#: sign, Heaviside and ternary quantizers).
ROUNDING_METHODS: tuple[str, ...] = tuple(n for n, s in _REGISTRY.items() if s.codes == "integers")

_EXPECTED = {
    _PF: "a positive float",
    _F: "a finite float",
    _PI: "a positive int",
    _B: "a bool",
}


def get_spec(method: str) -> MethodSpec:
    """Returns the spec of a registered method.

    Args:
        method: A name in `METHODS`.

    Returns:
        The method's `MethodSpec`.

    Raises:
        ValueError: If the name is not registered.
    """
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(
            f"Invalid value received for argument `method`. Expected one of "
            f"{', '.join(METHODS)}. Received: method={method!r}"
        )
    return _REGISTRY[method]


def _is_symbolic(value: Any) -> bool:
    """True for tensors and variables (validated where they were created)."""
    return isinstance(value, tf.Tensor | tf.Variable | keras.Variable)


def _check(param: Param, value: Any) -> Any:
    """Validates one parameter value; returns it normalised (float/int/bool)."""
    if _is_symbolic(value):
        return value
    bad = ValueError(
        f"Invalid value received for argument `{param.name}`. Expected "
        f"{_EXPECTED[param.kind]}. Received: {param.name}={value!r}"
    )
    if param.kind == _B:
        if not isinstance(value, bool | np.bool_):
            raise bad
        return bool(value)
    # numbers.Real/Integral also admit NumPy scalars (np.float32, np.int64).
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise bad
    if param.kind == _PI:
        if int(value) != value or value < 1:
            raise bad
        return int(value)
    if not math.isfinite(value) or (param.kind == _PF and value <= 0):
        raise bad
    return float(value)


def resolve_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validates `params` for `method` and fills in the defaults.

    Args:
        method: A name in `METHODS`.
        params: Parameter values by name (numbers, or tensors/variables which
            are passed through unchecked). `seed` is not included.

    Returns:
        Every parameter of the method, by name.

    Raises:
        ValueError: Unknown method, unknown parameter or invalid value.
    """
    spec = get_spec(method)
    valid = {p.name: p for p in spec.params}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        names = ", ".join(valid) + (", seed" if spec.stochastic else "")
        raise ValueError(
            f"Unknown parameter(s) {', '.join(unknown)} for method {method!r}. "
            f"Valid parameters: {names or '(none)'}."
        )
    return {name: _check(p, params.get(name, p.default)) for name, p in valid.items()}


def _split_seed(method: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Separates the `seed` of stochastic methods from the other parameters."""
    params = dict(params)
    seed = None
    if "seed" in params and params["seed"] is None:
        del params["seed"]  # "no seed" is valid for every method (layer configs carry it)
    if "seed" in params and get_spec(method).stochastic:
        seed = params.pop("seed")
        if isinstance(seed, bool) or not isinstance(
            seed, numbers.Integral | keras.random.SeedGenerator
        ):
            raise ValueError(
                "Invalid value received for argument `seed`. Expected an int, a "
                f"keras.random.SeedGenerator or None. Received: seed={seed!r}"
            )
    return params, seed


def _compute_in_float32(fn: Callable[[tf.Tensor], tf.Tensor], x: Any) -> tf.Tensor:
    """Applies `fn` in at least float32 and returns the input's float dtype.

    float16/bfloat16 inputs (mixed precision) are computed in float32: the
    surrogates' constants (eps guards, 1 - 1e-6, large slopes) do not fit half
    precision. Non-float inputs are computed and returned as float32.
    """
    x = tf.convert_to_tensor(x)
    out_dtype = x.dtype if x.dtype.is_floating else tf.float32
    compute_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    return tf.cast(fn(tf.cast(x, compute_dtype)), out_dtype)


def surrogate(x: Any, method: str, **params: Any) -> tf.Tensor:
    """The training-time forward of `method` applied to `x`.

    Args:
        x: Pre-round tensor (anything convertible to a tensor).
        method: A name in `METHODS`.
        **params: The method's parameters (see `METHODS` / the README table);
            stochastic methods also take `seed` (int, SeedGenerator or None).

    Returns:
        A tensor of the shape and float dtype of `x`.

    Raises:
        ValueError: Unknown method, unknown parameter or invalid value.
    """
    params, seed = _split_seed(method, params)
    spec = get_spec(method)
    full = resolve_params(method, params)
    extra = {"seed": seed} if spec.stochastic else {}
    return _compute_in_float32(lambda t: spec.forward(t, **full, **extra), x)


def relaxed(x: Any, method: str, **params: Any) -> tf.Tensor:
    """The deterministic training-time forward: stochastic noise fixed at its mean.

    `noise` -> `x`; `binary_concrete` -> its forward with logistic noise 0
    (hard `round(p)` with the gradient of `sigmoid(logit(p)/temperature)` in
    the straight-through variant). Every other method: `surrogate(x, ...)`.

    Args:
        x: Pre-round tensor.
        method: A name in `METHODS`.
        **params: As for `surrogate` (a `seed` is accepted and ignored).

    Returns:
        A tensor of the shape and float dtype of `x`.
    """
    params, _ = _split_seed(method, params)
    spec = get_spec(method)
    full = resolve_params(method, params)
    extra = {"noise": False} if spec.stochastic else {}
    return _compute_in_float32(lambda t: spec.forward(t, **full, **extra), x)


def exact_round(x: Any) -> tf.Tensor:
    """Inference-time rounding: `tf.round` (half to even), float dtype kept.

    Args:
        x: Tensor.

    Returns:
        `round(x)`; for inputs in [0, 1] exactly 0.0 or 1.0.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return tf.round(x)


def exact(x: Any, method: str, **params: Any) -> tf.Tensor:
    """Inference-time forward of `method`: `exact_round` for the rounding methods.

    The sign, Heaviside and ternary methods return their own hard value
    (`sign(x)` with `sign(0) = +1`, `1[x > 0]`, the ternary step).

    Args:
        x: Tensor.
        method: A name in `METHODS`.
        **params: The method's parameters (a `seed` is accepted and ignored).

    Returns:
        A tensor of the shape and float dtype of `x`, no gradient.
    """
    spec = get_spec(method)
    if spec.codes == "integers":
        return exact_round(x)
    params, _ = _split_seed(method, params)
    full = resolve_params(method, params)
    return _compute_in_float32(lambda t: tf.stop_gradient(spec.forward(t, **full)), x)


def check_value(method: str, parameter: str, value: Any) -> None:
    """Validates one value of a parameter of `method` against its kind.

    Args:
        method: A name in `METHODS`.
        parameter: One of its parameters.
        value: The value to check (a Python number).

    Raises:
        ValueError: Unknown method or parameter, or a value of the wrong kind
            (e.g. 0 for a positive float), in Keras's message shape.
    """
    resolve_params(method, {parameter: value})


class Surrogate:
    """A method bound to parameter values; what `get` returns.

    Args:
        method: A name in `METHODS`.
        **params: The method's parameters (validated), and `seed` for the
            stochastic methods.
    """

    def __init__(self, method: str, **params: Any) -> None:
        params, self.seed = _split_seed(method, params)
        self.method = get_spec(method).name
        self.params = resolve_params(method, params)

    def __call__(self, x: Any, training: bool = True) -> tf.Tensor:
        """`surrogate(x)` when training, the exact forward (`exact`) otherwise."""
        if not training:
            return exact(x, self.method, **self.params)
        return surrogate(x, self.method, seed=self.seed, **self.params)

    def relaxed(self, x: Any) -> tf.Tensor:
        """The deterministic training-time forward (see `relaxed`)."""
        return relaxed(x, self.method, **self.params)

    def get_config(self) -> dict[str, Any]:
        """Returns `{"method": ..., "params": {...}}` (plus `seed` if set)."""
        config: dict[str, Any] = {"method": self.method, "params": dict(self.params)}
        if self.seed is not None and isinstance(self.seed, int):
            config["params"]["seed"] = self.seed
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Surrogate":
        """Inverse of `get_config`."""
        return cls(config["method"], **dict(config.get("params", {})))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Surrogate) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(self.method)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Surrogate({self.method!r}{', ' if args else ''}{args})"


# Keys of a Keras layer config that are not surrogate parameters (the grid's
# keys describe where the layer's codes sit, not the method).
_LAYER_KEYS = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "autocast",
        "step",
        "offset",
        "min_value",
        "max_value",
        "bits",
        "signed",
        "narrow_range",
        "return_codes",
        "axis",
        "grad_scale",
        "kernel",
    }
)


def get(identifier: Any) -> Surrogate:
    """Resolves a name, config dict or instance to a `Surrogate`.

    Args:
        identifier: A method name (`"soft_round"`); a dict
            `{"method": ..., "params": {...}}`, a flat
            `{"method": ..., "alpha": ...}` (e.g. a `DiffRound` config), or a
            Keras-serialized `DiffRound` (`{"class_name": "DiffRound",
            "config": {...}}`); a `Surrogate`; or a `DiffRound` layer (its
            current parameter values).

    Returns:
        A `Surrogate`.

    Raises:
        ValueError: Unknown method or parameter, or an identifier of another
            type.
    """
    if isinstance(identifier, Surrogate):
        return identifier
    if isinstance(getattr(identifier, "surrogate", None), Surrogate):
        return identifier.surrogate
    if isinstance(identifier, str):
        return Surrogate(identifier)
    if isinstance(identifier, Mapping):
        if "class_name" in identifier and "config" in identifier:
            return get(identifier["config"])
        if "method" not in identifier:
            raise ValueError(
                "Could not interpret surrogate identifier: a config dict needs a "
                f"'method' key. Received: {identifier!r}"
            )
        if "params" in identifier:
            return Surrogate(identifier["method"], **dict(identifier["params"]))
        flat = {k: v for k, v in identifier.items() if k != "method" and k not in _LAYER_KEYS}
        return Surrogate(identifier["method"], **flat)
    raise ValueError(
        "Could not interpret surrogate identifier. Expected a method name "
        f"({', '.join(METHODS)}), a config dict, a Surrogate or a DiffRound layer. "
        f"Received: {identifier!r}"
    )
