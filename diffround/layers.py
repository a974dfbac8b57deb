"""`DiffRound`: the Keras layer that rounds, differentiably in training."""

import numbers
from typing import Any

import keras
import tensorflow as tf

from diffround import modes, registry

# Keyword arguments that belong to keras.layers.Layer, not to the method.
_BASE_LAYER_KWARGS = ("name", "trainable", "dtype", "autocast", "input_shape")


@keras.saving.register_keras_serializable(package="diffround")
class DiffRound(keras.layers.Layer):
    """Rounds its input: a differentiable surrogate in training, exact `round` otherwise.

    The float parameters of the method (`slope`, `alpha`, `temperature`,
    `threshold`, `center`, `clip`) live in non-trainable float32 variables
    named after them, so `diffround.Annealer` can change them during training
    and they are saved with the model. `anneal_step` (a non-trainable int64
    variable) counts the schedule units (steps or epochs) an `Annealer` has
    completed, so annealing resumes where it stopped after a reload.

    Args:
        method: A name in `diffround.METHODS` (default "ste").
        seed: Seed of the noise of the stochastic methods (`noise`,
            `binary_concrete`); int or None.
        **kwargs: The method's parameters (see `diffround.METHODS` and the
            README's table; unknown names raise `ValueError`), and the base
            layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: The pre-round tensor.
        training: Python bool. True: the method's training-time surrogate
            (stochastic methods draw fresh noise). False (default, and at
            inference): exact `tf.round` (half to even), so 0/1 outputs are
            exactly 0.0 and 1.0. Inside `diffround.relaxed_mode()`, always
            `relaxed(inputs)` (recorded for `diffround.export`).
    """

    def __init__(self, method: str = "ste", seed: int | None = None, **kwargs: Any) -> None:
        base = {k: kwargs.pop(k) for k in _BASE_LAYER_KWARGS if k in kwargs}
        super().__init__(**base)
        spec = registry.get_spec(method)
        if seed is not None and not spec.stochastic:
            raise ValueError(
                f"Unknown parameter(s) seed for method {method!r}. Valid parameters: "
                f"{', '.join(spec.defaults) or '(none)'}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(
                "Invalid value received for argument `seed`. Expected an int or None. "
                f"Received: seed={seed!r}"
            )
        params = registry.resolve_params(method, kwargs)
        self.method = method
        self.seed = None if seed is None else int(seed)
        self.supports_masking = True
        self._static_params = {k: v for k, v in params.items() if k not in spec.float_params}
        self.parameter_variables: dict[str, keras.Variable] = {}
        for name in spec.float_params:
            self.parameter_variables[name] = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(params[name]),
                dtype="float32",
                trainable=False,
                # The surrogate computes in float32 (see registry); autocasting
                # the variable to float16 would lose e.g. threshold=0.499.
                autocast=False,
                name=name,
            )
        self.anneal_step = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            name="anneal_step",
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed) if spec.stochastic else None
        self.built = True

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of every parameter of the method (float and static)."""
        return tuple(registry.get_spec(self.method).defaults)

    def _call_params(self) -> dict[str, Any]:
        """The method's parameters: variables for floats, Python values otherwise."""
        return {**self._static_params, **self.parameter_variables}

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if modes.is_relaxed():
            # `diffround.relaxed_mode()`: the deterministic relaxed form, recorded.
            return modes.relaxed_call(self, inputs)
        if not training:
            return registry.exact_round(inputs)
        extra = {"seed": self.seed_generator} if self.seed_generator is not None else {}
        return registry.surrogate(inputs, self.method, **self._call_params(), **extra)

    def relaxed(self, inputs: tf.Tensor) -> tf.Tensor:
        """The deterministic training-time forward (noise fixed at its mean).

        `noise` -> `inputs`; `binary_concrete` -> its forward without logistic
        noise; every other method: the training surrogate. Used by exports
        (the `grad` signature) and diagnostics.

        Args:
            inputs: The pre-round tensor.

        Returns:
            A tensor of the shape and dtype of `inputs`.
        """
        return registry.relaxed(inputs, self.method, **self._call_params())

    @property
    def surrogate(self) -> registry.Surrogate:
        """A `Surrogate` with the current parameter values (a snapshot)."""
        return registry.Surrogate(self.method, **self.current_params())

    def current_params(self) -> dict[str, Any]:
        """Every method parameter with its current value, as Python numbers."""
        params = dict(self._static_params)
        for name, variable in self.parameter_variables.items():
            params[name] = float(keras.ops.convert_to_numpy(variable))
        return params

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument; float parameters at their current value."""
        config = super().get_config()
        config.update({"method": self.method, "seed": self.seed, **self.current_params()})
        return config
