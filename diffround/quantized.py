"""Weight quantization: `QuantizedDense` and `QuantizedConv2D` quantize their kernel.

The kernel quantizer is any `DiffRound` (any method and grid) or a
`LearnedStepRound`: in training the layer computes with the quantizer's
training forward of the kernel (so the float kernel learns through the
method's gradient), at inference with the exact quantized kernel. The float
kernel stays the variable that is trained and saved; an exported SavedModel
computes the quantized kernel in its graph (plain TensorFlow ops), so it
serves without `diffround`.
"""

from typing import Any

import keras

from diffround.layers import DiffRound
from diffround.lsq import LearnedStepRound


def _quantizer(identifier: Any) -> DiffRound:
    """A `DiffRound` from a layer, a Keras-serialized layer, a method name or a DiffRound config."""
    if isinstance(identifier, DiffRound):
        return identifier
    if isinstance(identifier, str):
        return DiffRound(identifier)
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            layer = keras.saving.deserialize_keras_object(identifier)
            if isinstance(layer, DiffRound):
                return layer
        elif "method" in identifier:
            return DiffRound(**identifier)
    raise ValueError(
        "Invalid value received for argument `kernel_quantizer`. Expected a DiffRound layer "
        f"(or LearnedStepRound), a method name or a DiffRound config. Received: {identifier!r}"
    )


def _build_quantizer(quantizer: DiffRound, kernel: keras.Variable) -> None:
    """Builds the quantizer on the kernel's shape; LSQ starts from the initial kernel."""
    if isinstance(quantizer, LearnedStepRound):
        quantizer.kernel = True
        if not quantizer.built:
            quantizer.build(tuple(kernel.shape))
        if quantizer.initial_step is None:
            quantizer.initialize_step(keras.ops.convert_to_tensor(kernel))
    elif not quantizer.built:
        quantizer.build(tuple(kernel.shape))


@keras.saving.register_keras_serializable(package="diffround")
class QuantizedDense(keras.layers.Dense):
    """`keras.layers.Dense` with a quantized kernel: `activation(x @ q(W) + b)`.

    Args:
        units: Output width.
        kernel_quantizer: A `DiffRound` / `LearnedStepRound` layer, a method
            name, or a `DiffRound` config (default "ste": the kernel rounded
            to the integers; use a grid, e.g.
            `DiffRound("ste", step=0.05, bits=4, signed=True)`, or
            `LearnedStepRound(bits=4, signed=True, axis=-1)`).
        **kwargs: Every `keras.layers.Dense` argument.

    Call arguments:
        inputs: The layer input.
        training: Python bool: the quantizer's training forward (True) or
            its exact rounding (False, default).
    """

    def __init__(self, units: int, kernel_quantizer: Any = "ste", **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.kernel_quantizer = _quantizer(kernel_quantizer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        super().build(input_shape)
        _build_quantizer(self.kernel_quantizer, self.kernel)

    def quantized_kernel(self, training: bool = False) -> Any:
        """The kernel the layer computes with (exact unless `training`)."""
        return self.kernel_quantizer(self.kernel, training=training)

    def call(self, inputs: Any, training: bool = False) -> Any:
        outputs = keras.ops.matmul(inputs, self.quantized_kernel(training))
        if self.use_bias:
            outputs = keras.ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["kernel_quantizer"] = keras.saving.serialize_keras_object(self.kernel_quantizer)
        return config


@keras.saving.register_keras_serializable(package="diffround")
class QuantizedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a quantized kernel: `activation(conv(x, q(W)) + b)`.

    Args:
        filters: Number of output channels.
        kernel_size: As for `Conv2D`.
        kernel_quantizer: As for `QuantizedDense` (per output channel LSQ:
            `LearnedStepRound(bits=4, signed=True, axis=-1)`).
        **kwargs: Every `keras.layers.Conv2D` argument.

    Call arguments:
        inputs: The layer input.
        training: Python bool: the quantizer's training forward (True) or
            its exact rounding (False, default).
    """

    def __init__(
        self, filters: int, kernel_size: Any, kernel_quantizer: Any = "ste", **kwargs: Any
    ) -> None:
        super().__init__(filters, kernel_size, **kwargs)
        self.kernel_quantizer = _quantizer(kernel_quantizer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        super().build(input_shape)
        _build_quantizer(self.kernel_quantizer, self.kernel)

    def quantized_kernel(self, training: bool = False) -> Any:
        """The kernel the layer computes with (exact unless `training`)."""
        return self.kernel_quantizer(self.kernel, training=training)

    def call(self, inputs: Any, training: bool = False) -> Any:
        outputs = self.convolution_op(inputs, self.quantized_kernel(training))
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = keras.ops.add(outputs, keras.ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["kernel_quantizer"] = keras.saving.serialize_keras_object(self.kernel_quantizer)
        return config
