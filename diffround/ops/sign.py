"""Sign, Heaviside and ternary quantizers as larq defines them, in stop-gradient form.

larq (`larq.quantizers`, TensorFlow 2 / Keras 2 only) writes these with
`tf.custom_gradient`; here each is `hard + (s(x) - stop_gradient(s(x)))`
(`diffround.ops.straight_through.straight_through`) with a function `s` whose
derivative is larq's pseudo-gradient, so they export, run under XLA and
serve without a registered gradient. Values: `sign` in {-1, +1} with
`sign(0) = +1` (larq's `math.sign`), `heaviside` in {0, 1} with
`heaviside(0) = 0`, ternary in {-1, 0, +1}.
"""

import tensorflow as tf

from diffround.ops.straight_through import straight_through

TensorLike = tf.Tensor | tf.Variable | float


def sign(x: tf.Tensor) -> tf.Tensor:
    """`sign(x)` with `sign(0) = +1`: larq's `math.sign`, `sign(sign(x) + 0.1)`."""
    return tf.where(x >= 0.0, tf.ones_like(x), -tf.ones_like(x))


def heaviside(x: tf.Tensor) -> tf.Tensor:
    """`1[x > 0]`: larq's `math.heaviside`, `sign(relu(x))`."""
    return tf.cast(x > 0.0, x.dtype)


def _clipped_identity(x: tf.Tensor, clip_value: TensorLike) -> tf.Tensor:
    """`x` where `|x| <= clip_value` (derivative 1), a constant elsewhere (derivative 0)."""
    inside = tf.abs(x) <= tf.cast(clip_value, x.dtype)
    return tf.where(inside, x, tf.stop_gradient(x))


def ste_sign(x: tf.Tensor, clip_value: TensorLike = 1.0) -> tf.Tensor:
    """Sign, clipped straight-through gradient: value `sign(x)`, derivative `1[|x| <= clip]`.

    larq's `ste_sign` (`SteSign`); Hubara et al., "Binarized Neural Networks"
    (2016, arXiv 1602.02830). `sign(0) = +1`.

    Args:
        x: Pre-sign tensor.
        clip_value: Half-width of the window where the gradient is 1
            (positive float, default 1.0, larq's default).

    Returns:
        `sign(x)` in {-1, +1} with the clipped pseudo-gradient.
    """
    return straight_through(sign(x), _clipped_identity(x, clip_value))


def swish_sign(x: tf.Tensor, beta: TensorLike = 5.0) -> tf.Tensor:
    """Sign with the SwishSign gradient: value `sign(x)`, derivative `SS'(x)`.

    `SS'(x) = beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))`.
    larq's `swish_sign`; Darabi et al., "BNN+: Improved Binary Network
    Training" (2018, arXiv 1812.11800). The derivative is that of
    `SS(x) = 2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1`, which
    is what is differentiated here (no overflowing `cosh`).

    Args:
        x: Pre-sign tensor.
        beta: Sharpness (positive float, default 5.0, larq's default).

    Returns:
        `sign(x)` in {-1, +1} with the SwishSign pseudo-gradient.
    """
    bx = tf.cast(beta, x.dtype) * x
    s = tf.sigmoid(bx)
    swish = 2.0 * s * (1.0 + bx * (1.0 - s)) - 1.0
    return straight_through(sign(x), swish)


def ste_heaviside(x: tf.Tensor, clip_value: TensorLike = 1.0) -> tf.Tensor:
    """Heaviside, clipped straight through: value `1[x > 0]`, derivative `1[|x| <= clip]`.

    larq's `ste_heaviside` (`SteHeaviside`).

    Args:
        x: Pre-binarization tensor.
        clip_value: Half-width of the window where the gradient is 1
            (positive float, default 1.0).

    Returns:
        `1[x > 0]` in {0, 1} with the clipped pseudo-gradient.
    """
    return straight_through(heaviside(x), _clipped_identity(x, clip_value))


def ste_tern(
    x: tf.Tensor,
    threshold_value: TensorLike = 0.05,
    ternary_weight_networks: bool = False,
    clip_value: TensorLike = 1.0,
) -> tf.Tensor:
    """Ternarization with the clipped straight-through gradient.

    Value `+1` for `x >= t`, `-1` for `x <= -t`, `0` in between (larq's
    `sign(sign(x + t) + sign(x - t))`, so the thresholds themselves map to
    +-1); derivative `1[|x| <= clip]`. With `ternary_weight_networks`,
    `t = 0.7 mean(|x|)` over the whole tensor (Li et al., "Ternary Weight
    Networks", 2016, arXiv 1605.04711) instead of `threshold_value`. larq's
    `ste_tern` (`SteTern`).

    Args:
        x: Pre-ternarization tensor.
        threshold_value: The threshold `t` (positive float, default 0.05).
        ternary_weight_networks: Use the TWN threshold (default False).
        clip_value: Half-width of the window where the gradient is 1
            (positive float, default 1.0).

    Returns:
        The ternary tensor in {-1, 0, +1} with the clipped pseudo-gradient.
    """
    if ternary_weight_networks:
        threshold = tf.stop_gradient(0.7 * tf.reduce_mean(tf.abs(x)))
    else:
        threshold = tf.cast(threshold_value, x.dtype)
    hard = tf.where(x >= threshold, 1.0, tf.where(x <= -threshold, -1.0, 0.0))
    return straight_through(tf.cast(hard, x.dtype), _clipped_identity(x, clip_value))
