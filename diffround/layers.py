"""`DiffRound`: the Keras layer that rounds, differentiably in training."""

import numbers
import random
import zlib
from typing import Any

import keras
import tensorflow as tf

from diffround import modes, registry
from diffround.grid import Grid, on_grid

# Keyword arguments that belong to keras.layers.Layer, not to the method.
_BASE_LAYER_KWARGS = ("name", "trainable", "dtype", "autocast", "input_shape")


@keras.saving.register_keras_serializable(package="diffround")
class DiffRound(keras.layers.Layer):
    """Rounds its input: a differentiable surrogate in training, exact `round` otherwise.

    The float parameters of the method (`slope`, `alpha`, `temperature`,
    `threshold`, `center`, `clip`, ...) live in non-trainable float32
    variables named after them, so `diffround.Annealer` can change them
    during training and they are saved with the model. For each of them a
    non-trainable int64 variable `anneal_step_<name>` (in `anneal_steps`)
    counts the schedule units (steps or epochs) its `Annealer` has completed,
    so every annealed parameter keeps its own progress and annealing resumes
    where it stopped after a reload.

    The outputs lie on the grid `step * k + offset` (`diffround.grid`): the
    method is applied to the codes `clip((x - offset) / step)` and mapped
    back. The defaults are the unit grid, unclipped.

    Args:
        method: A name in `diffround.METHODS` (default "ste").
        seed: Seed of the noise of the stochastic methods (`noise`,
            `binary_concrete`, `stochastic`, `universal`, `soft_round_noise`);
            int or None. With None the layer's generator is seeded from
            Python's `random` without advancing it, so adding a stochastic
            layer does not change the initial weights of the rest of a
            model built after `keras.utils.set_random_seed`.
        step: Grid spacing (positive float, default 1.0).
        offset: Grid offset (float, default 0.0).
        min_value: Lowest output value (grid points at or above it); None
            (default) for unbounded. Not with `bits`.
        max_value: Highest output value; None (default) for unbounded.
        bits: Clip the codes to this bit width (1 to 32); None (default):
            no clip.
        signed: Signed codes `[-2^(b-1), 2^(b-1) - 1]` for `bits` (default
            False: `[0, 2^b - 1]`).
        narrow_range: Drop the lowest code for `bits` (default False).
        return_codes: Output the integer codes `k` (as floats) instead of the
            values (default False).
        **kwargs: The method's parameters (see `diffround.METHODS` and the
            README's table; unknown names raise `ValueError`), and the base
            layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: The pre-round tensor.
        training: Python bool. True: the method's training-time surrogate
            (stochastic methods draw fresh noise). False (default, and at
            inference): exact rounding on the grid (`tf.round`, half to
            even, for the rounding methods; the hard sign / Heaviside /
            ternary value for those), so 0/1 outputs are exactly 0.0 and
            1.0. Inside `diffround.relaxed_mode()`, always `relaxed(inputs)`
            (recorded for `diffround.export`).
    """

    def __init__(
        self,
        method: str = "ste",
        seed: int | None = None,
        step: float = 1.0,
        offset: float = 0.0,
        min_value: float | None = None,
        max_value: float | None = None,
        bits: int | None = None,
        signed: bool = False,
        narrow_range: bool = False,
        return_codes: bool = False,
        **kwargs: Any,
    ) -> None:
        base = {k: kwargs.pop(k) for k in _BASE_LAYER_KWARGS if k in kwargs}
        super().__init__(**base)
        spec = registry.get_spec(method)
        self.grid = Grid(
            step=step,
            offset=offset,
            min_value=min_value,
            max_value=max_value,
            bits=bits,
            signed=signed,
            narrow_range=narrow_range,
            return_codes=return_codes,
        )
        if spec.codes != "integers" and self.grid.bounded:
            raise ValueError(
                f"Method {method!r} already has bounded codes ({spec.codes}); "
                "`bits`, `min_value` and `max_value` apply to the rounding methods only."
            )
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
        self.anneal_steps: dict[str, keras.Variable] = {}
        for name in spec.float_params:
            self.anneal_steps[name] = self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="int64",
                trainable=False,
                name=f"anneal_step_{name}",
            )
        self.seed_generator = (
            keras.random.SeedGenerator(self._generator_seed()) if spec.stochastic else None
        )
        self.built = True

    def _generator_seed(self) -> int:
        """The noise seed: `seed`, or one derived without advancing Python's `random`.

        `keras.random.SeedGenerator(None)` draws its seed from Python's
        `random`, which `keras.utils.set_random_seed` seeds and which also
        seeds Keras's global generator behind unseeded initializers: a
        stochastic layer created before the rest of a model then shifted
        every later initializer (the method benchmark's "same seed" was a
        different start for `noise` and `binary_concrete`). The state is
        restored after the draw, and the layer name is mixed in so that two
        layers get different noise.
        """
        if self.seed is not None:
            return self.seed
        state = random.getstate()
        try:
            drawn = random.randint(1, 10**9)
        finally:
            random.setstate(state)
        return (drawn ^ zlib.crc32(f"diffround/{self.name}".encode())) % 10**9 + 1

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of every parameter of the method (float and static)."""
        return tuple(registry.get_spec(self.method).defaults)

    def _call_params(self) -> dict[str, Any]:
        """The method's parameters: variables for floats, Python values otherwise."""
        return {**self._static_params, **self.parameter_variables}

    @property
    def anneal_step(self) -> keras.Variable:
        """The schedule counter of the first float parameter (single-parameter methods).

        Raises:
            AttributeError: When the method has no float parameter.
        """
        if not self.anneal_steps:
            raise AttributeError(f"Method {self.method!r} has no float parameter to anneal.")
        return next(iter(self.anneal_steps.values()))

    def _step(self) -> float | tf.Tensor | None:
        """The grid step used in `call` (None: the grid's own; a tensor for a learned step)."""
        return None

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if modes.is_relaxed():
            # `diffround.relaxed_mode()`: the deterministic relaxed form, recorded.
            return modes.relaxed_call(self, inputs)
        if not training:
            return self.exact(inputs)
        extra = {"seed": self.seed_generator} if self.seed_generator is not None else {}
        params = self._call_params()
        return on_grid(
            inputs,
            lambda z: registry.surrogate(z, self.method, **params, **extra),
            self.grid,
            self._step(),
        )

    def exact(self, inputs: tf.Tensor) -> tf.Tensor:
        """Inference: exact rounding on the grid (what `call(x, training=False)` returns).

        Args:
            inputs: The pre-round tensor.

        Returns:
            `step * round(clip((x - offset) / step)) + offset` (or the codes);
            for the sign family their hard value on the grid.
        """
        params = self._call_params()
        return on_grid(
            inputs, lambda z: registry.exact(z, self.method, **params), self.grid, self._step()
        )

    def relaxed(self, inputs: tf.Tensor) -> tf.Tensor:
        """The deterministic training-time forward (noise fixed at its mean), on the grid.

        `noise` -> `inputs`; `binary_concrete` -> its forward without logistic
        noise; `stochastic` and `universal` -> `round` with gradient 1;
        `soft_round_noise` -> the conditional mean of `soft_round(x)`; every
        other method: the training surrogate. Used by exports (the `grad`
        signature) and diagnostics.

        Args:
            inputs: The pre-round tensor.

        Returns:
            A tensor of the shape and dtype of `inputs`.
        """
        params = self._call_params()
        return on_grid(
            inputs,
            lambda z: registry.relaxed(z, self.method, **params),
            self.grid,
            self._step(),
        )

    def grid_spec(self) -> dict[str, float | None]:
        """The grid the exact outputs lie on: `{"step", "offset", "min", "max"}`.

        In the space of the outputs (the codes with `return_codes`); `min` /
        `max` are None where unbounded. The unit grid is
        `{"step": 1.0, "offset": 0.0, "min": None, "max": None}`; `ste_sign`
        gives `{"step": 2.0, "offset": -1.0, "min": -1.0, "max": 1.0}`.
        """
        return self.grid.spec(registry.get_spec(self.method).codes)

    def load_own_variables(self, store: Any) -> None:
        """Loads the variables; also reads files saved with one shared `anneal_step`.

        Before per-parameter counters the layer saved its float parameters and
        then a single `anneal_step`; that count is given to every parameter.
        """
        expected = len(self.variables)
        n_params = len(self.parameter_variables)
        if len(store) == n_params + 1 and expected == 2 * n_params and len(store) != expected:
            for i, variable in enumerate(self.parameter_variables.values()):
                variable.assign(store[str(i)])
            for counter in self.anneal_steps.values():
                counter.assign(store[str(n_params)])
            return
        super().load_own_variables(store)

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
        config.update(
            {
                "method": self.method,
                "seed": self.seed,
                **self.grid.get_config(),
                **self.current_params(),
            }
        )
        return config
