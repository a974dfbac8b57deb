"""`LearnedStepRound`: LSQ, a rounding layer whose grid step is a trainable variable."""

import math
from typing import Any

import keras
import tensorflow as tf

from diffround import registry
from diffround.grid import bit_range
from diffround.layers import DiffRound

# The data-driven initial step is floored here so that an all-zero first
# batch (or kernel) does not give a zero step and a division by zero.
MIN_INITIAL_STEP = 1e-8


@keras.saving.register_keras_serializable(package="diffround")
class LearnedStepRound(DiffRound):
    """Learned Step Size Quantization (LSQ): `s * round(clip(x / s, -Q_N, Q_P))`, `s` trained.

    Esser et al., "Learned Step Size Quantization" (ICLR 2020, arXiv
    1902.08153). The codes are clipped to a bit width (`bits`, `signed`,
    `narrow_range`: `-Q_N..Q_P`, see `diffround.grid.bit_range`); the step
    `s` is a trainable float32 variable, per tensor or per channel (`axis`).
    Its gradient is what the method implies through the grid
    (`diffround.grid`): for the default `ste`,
    `d y / d s = round(x/s) - x/s` for `-Q_N < x/s < Q_P`, `-Q_N` below and
    `Q_P` above (the paper's eq. 5), multiplied by the gradient scale
    `g = 1 / sqrt(N Q_P)`, `N` the number of elements that share a step
    (per example for activations: the batch axis is not counted; the whole
    tensor, or one channel of it, for a kernel). The scale is applied as
    `s g + stop_gradient(s - s g)`: the value is `s`, the gradient `g` times
    the step's. The input's gradient is 1 strictly inside the range, 0
    outside (eq. 4). Any rounding method may replace `ste` (a smooth one then
    trains the step through its own derivative).

    Initialisation: with `initial_step=None` (default), the first training
    batch sets `s = 2 mean(|x|) / sqrt(Q_P)` (the paper's choice; per channel
    the mean is over the other axes); `diffround.QuantizedDense` and
    `QuantizedConv2D` set it from the initial kernel when they are built.
    Before that the step is 1.

    Args:
        method: A rounding method (`diffround.ROUNDING_METHODS`, default "ste").
        bits: Bit width of the codes (default 4).
        signed: Signed codes (default False: `0..2^b - 1`).
        narrow_range: Drop the lowest code (default False).
        axis: Per-channel steps along this axis (e.g. -1); None (default):
            one step for the tensor.
        initial_step: A fixed initial step (positive float), or None for the
            data-driven initialisation.
        grad_scale: The gradient scale `g` (positive float), or None (default)
            for LSQ's `1 / sqrt(N Q_P)`.
        kernel: The input is a weight tensor (no batch axis) rather than
            activations (default False; the quantized layers set it).
        return_codes: Output the codes instead of the values (default False).
        seed: Seed of the stochastic methods.
        **kwargs: The method's parameters and the base layer arguments.

    Call arguments:
        inputs: The tensor to quantize.
        training: Python bool. True: the method's surrogate on the learned
            grid (and, on the first call, the step's initialisation). False
            (default): exact rounding on the learned grid.
    """

    def __init__(
        self,
        method: str = "ste",
        bits: int = 4,
        signed: bool = False,
        narrow_range: bool = False,
        axis: int | None = None,
        initial_step: float | None = None,
        grad_scale: float | None = None,
        kernel: bool = False,
        return_codes: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Keys a DiffRound config carries that do not apply to a learned grid.
        for key in ("step", "offset", "min_value", "max_value"):
            kwargs.pop(key, None)
        super().__init__(
            method,
            seed=seed,
            bits=bits,
            signed=signed,
            narrow_range=narrow_range,
            return_codes=return_codes,
            **kwargs,
        )
        if registry.get_spec(method).codes != "integers":
            raise ValueError(
                f"LearnedStepRound needs a rounding method "
                f"({', '.join(registry.ROUNDING_METHODS)}). Received: method={method!r}"
            )
        for name, value in (("initial_step", initial_step), ("grad_scale", grad_scale)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ValueError(
                    f"Invalid value received for argument `{name}`. Expected a positive "
                    f"float or None. Received: {name}={value!r}"
                )
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(
                "Invalid value received for argument `axis`. Expected an int or None. "
                f"Received: axis={axis!r}"
            )
        self.axis = axis
        self.initial_step = None if initial_step is None else float(initial_step)
        self.grad_scale = None if grad_scale is None else float(grad_scale)
        self.kernel = bool(kernel)
        self.q_max = float(bit_range(bits, signed, narrow_range)[1])
        self.built = False

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        rank = len(input_shape)
        shape: tuple[int, ...] = ()
        if self.axis is not None:
            if not -rank <= self.axis < rank or input_shape[self.axis] is None:
                raise ValueError(
                    f"Invalid value received for argument `axis`: {self.axis} for an input "
                    f"of shape {tuple(input_shape)} (the axis must exist and have a size)."
                )
            shape = (int(input_shape[self.axis]),)
        self._rank = rank
        self.step_variable = self.add_weight(
            shape=shape,
            initializer=keras.initializers.Constant(self.initial_step or 1.0),
            dtype="float32",
            trainable=True,
            autocast=False,
            name="step",
        )
        self.step_initialized = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(0.0 if self.initial_step is None else 1.0),
            dtype="float32",
            trainable=False,
            autocast=False,
            name="step_initialized",
        )
        counted = [
            d
            for i, d in enumerate(input_shape)
            if (self.kernel or i != 0) and (self.axis is None or i != self.axis % rank)
        ]
        self.elements_per_step = math.prod(int(d) for d in counted if d is not None)
        self.built = True

    @property
    def effective_grad_scale(self) -> float:
        """`g`: `grad_scale`, or LSQ's `1 / sqrt(N Q_P)`."""
        if self.grad_scale is not None:
            return self.grad_scale
        return 1.0 / math.sqrt(max(self.elements_per_step, 1) * self.q_max)

    def _broadcast(self, value: tf.Tensor) -> tf.Tensor:
        if self.axis is None:
            return value
        shape = [1] * self._rank
        shape[self.axis % self._rank] = -1
        return tf.reshape(value, shape)

    def _step(self) -> tf.Tensor:
        g = self.effective_grad_scale
        s = tf.convert_to_tensor(self.step_variable)
        # Value s, gradient g * ds (LSQ's grad_scale).
        scaled = s * g + tf.stop_gradient(s - s * g)
        return self._broadcast(scaled)

    def data_step(self, inputs: Any) -> tf.Tensor:
        """LSQ's initial step for `inputs`: `2 mean(|x|) / sqrt(Q_P)` (per channel with `axis`)."""
        x = tf.abs(tf.cast(inputs, tf.float32))
        if self.axis is None:
            mean = tf.reduce_mean(x)
        else:
            axis = self.axis % len(x.shape)
            mean = tf.reduce_mean(x, axis=[i for i in range(len(x.shape)) if i != axis])
        return tf.maximum(2.0 * mean / math.sqrt(self.q_max), MIN_INITIAL_STEP)

    def initialize_step(self, inputs: Any) -> None:
        """Sets the step from `inputs` (LSQ's initialisation) unless it is already set."""
        initialized = self.step_initialized > 0.5
        self.step_variable.assign(
            tf.where(initialized, tf.convert_to_tensor(self.step_variable), self.data_step(inputs))
        )
        self.step_initialized.assign(1.0)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training and self.initial_step is None:
            self.initialize_step(tf.stop_gradient(inputs))
        return super().call(inputs, training=training)

    def grid_spec(self) -> dict[str, Any]:
        """The current grid: `step` a float (a list of floats per channel), offset 0.

        `min`/`max` are `q_min * step` and `q_max * step` (lists per channel);
        with `return_codes` the code grid (step 1, the code range).
        """
        codes = self.grid.spec("integers", step=1.0)  # offset 0: min/max are the codes
        if self.grid.return_codes:
            return codes
        value = keras.ops.convert_to_numpy(self.step_variable) if self.built else 1.0
        if self.axis is not None and self.built:
            steps = [float(v) for v in value]
            return {
                "step": steps,
                "offset": 0.0,
                "min": [codes["min"] * v for v in steps],
                "max": [codes["max"] * v for v in steps],
            }
        step = float(value)
        return {"step": step, "offset": 0.0, "min": codes["min"] * step, "max": codes["max"] * step}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("step", "offset", "min_value", "max_value"):
            config.pop(key, None)
        config.update(
            {
                "axis": self.axis,
                "initial_step": self.initial_step,
                "grad_scale": self.grad_scale,
                "kernel": self.kernel,
            }
        )
        return config
