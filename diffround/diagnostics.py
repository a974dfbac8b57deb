"""Diagnostics of a surrogate on given pre-round values, and the `FlipRatio` metric."""

from typing import Any

import keras
import tensorflow as tf

from diffround import registry

# A local gradient below this magnitude counts as dead: it moves a float32
# weight by nothing measurable after a few layers of chain rule.
DEAD_BELOW = 1e-6
# A local gradient above this magnitude counts as exploding: one rounding
# layer then amplifies the upstream gradient more than tenfold. The smooth
# defaults stay below it (soft_round alpha=5: 2.5; fourier terms=4: 9;
# sigmoid slope=10: 2.5); the seed's sigmoid slope 1000 reaches 250.
EXPLODING_ABOVE = 10.0


def local_gradient(pre_round: Any, method: Any, **params: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """The deterministic surrogate and its elementwise derivative.

    Args:
        pre_round: Pre-round values.
        method: A method name, or anything `diffround.get` accepts.
        **params: The method's parameters (when `method` is a name).

    Returns:
        `(relaxed(x), d relaxed / d x)`, both float32 of the shape of `x`.
    """
    sur = registry.get(method) if not params else registry.Surrogate(method, **params)
    x = tf.cast(tf.convert_to_tensor(pre_round), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = sur.relaxed(x)
    # Every surrogate is elementwise, so the gradient of the sum is the
    # elementwise derivative.
    return y, tape.gradient(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def diagnostics(
    pre_round: Any,
    method: Any,
    *,
    dead_below: float = DEAD_BELOW,
    exploding_above: float = EXPLODING_ABOVE,
    **params: Any,
) -> dict[str, float]:
    """How well a surrogate behaves on given pre-round values.

    Computed on the deterministic surrogate (`relaxed`: noise at its mean).

    Args:
        pre_round: Pre-round values (any shape).
        method: A method name, or anything `diffround.get` accepts.
        dead_below: |local gradient| below this is dead (default 1e-6).
        exploding_above: |local gradient| above this is exploding (default 10).
        **params: The method's parameters.

    Returns:
        `surrogate_gap`: mean |surrogate - round|; `dead_gradient_share` and
        `exploding_gradient_share`: shares of elements; `flip_ratio`: share of
        elements where `round(surrogate)` differs from `round(x)`;
        `mean_abs_local_grad`, `max_abs_local_grad`. All Python floats.
    """
    x = tf.cast(tf.convert_to_tensor(pre_round), tf.float32)
    y, grad = local_gradient(x, method, **params)
    hard = tf.round(x)
    magnitude = tf.abs(grad)
    return {
        "surrogate_gap": float(tf.reduce_mean(tf.abs(y - hard))),
        "dead_gradient_share": float(tf.reduce_mean(tf.cast(magnitude < dead_below, tf.float32))),
        "exploding_gradient_share": float(
            tf.reduce_mean(tf.cast(magnitude > exploding_above, tf.float32))
        ),
        "flip_ratio": float(flip_share(tf.reshape(hard, [-1]), tf.reshape(y, [-1]))),
        "mean_abs_local_grad": float(tf.reduce_mean(magnitude)),
        "max_abs_local_grad": float(tf.reduce_max(magnitude)),
    }


def flip_share(y_true: Any, y_pred: Any) -> tf.Tensor:
    """Share of elements whose hard values differ: `mean(round(y_true) != round(y_pred))`.

    Args:
        y_true: Reference values (targets, or exact rounds).
        y_pred: Values to compare (surrogate outputs, predictions).

    Returns:
        The share over the last axis (one value per row), float32.
    """
    y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
    y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    flipped = tf.cast(tf.not_equal(tf.round(y_true), tf.round(y_pred)), tf.float32)
    return tf.reduce_mean(flipped, axis=-1)


@keras.saving.register_keras_serializable(package="diffround")
class FlipRatio(keras.metrics.MeanMetricWrapper):
    """Share of bits whose hard (rounded) value differs between `y_true` and `y_pred`.

    In `model.compile(metrics=[FlipRatio()])` it is the share of output bits
    that would be flipped relative to the targets if the current output were
    rounded: during `fit` the output is the training surrogate, so it shows
    how far the surrogate's decisions are from the targets while training;
    at evaluation it is the bit error rate of the exact outputs. Called as
    `FlipRatio()(round(pre_round), surrogate_value)` it is the share of
    elements whose decision the surrogate flips relative to exact rounding
    (nonzero for noise, Binary Concrete, Fourier overshoot).

    Args:
        name: Metric name (default "flip_ratio").
        dtype: Metric dtype.
    """

    def __init__(self, name: str = "flip_ratio", dtype: Any = None) -> None:
        super().__init__(fn=flip_share, name=name, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}
