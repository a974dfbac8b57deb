"""Smooth surrogates: differentiable functions whose value approximates round(x).

Their training-time value differs from `round(x)` (the "surrogate gap"); their
gradient is the true derivative of that value.
"""

import math

import numpy as np
import tensorflow as tf

from diffround.ops.periodic import sin_cos_2pi

TensorLike = tf.Tensor | tf.Variable | float

# soft_round switches to the identity below this alpha (tensorflow-compression's
# value). Both alpha guards in soft_round/soft_round_inverse use it.
SOFT_ROUND_MIN_ALPHA = 1e-3


def _as(value: TensorLike | int, like: tf.Tensor) -> tf.Tensor:
    """Casts a parameter (number, tensor or variable) to the dtype of `like`."""
    return tf.cast(value, like.dtype)


def _with_slope(value: tf.Tensor, slope: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """`value` with gradient `slope` in `x`: `value + slope * (x - stop_gradient(x))`.

    The stop-gradient trick of `diffround.ops.straight_through`, used where
    the derivative is a known formula that is cheaper than differentiating
    the forward computation (the polynomial `sin`/`cos` and the Fourier
    recurrence). `x - stop_gradient(x)` is exactly 0 for finite `x`, so the
    value is `value` exactly; multiplying `slope` by that difference, rather
    than subtracting `slope * x` from itself, cannot overflow to inf - inf
    for huge `x`.
    """
    return tf.stop_gradient(value) + tf.stop_gradient(slope) * (x - tf.stop_gradient(x))


def sine_round(x: tf.Tensor, compose: int = 1) -> tf.Tensor:
    """Sine staircase: `x - sin(2*pi*x) / (2*pi)`, optionally composed.

    Derivative: `1 - cos(2*pi*x)`: 0 at integers, 2 at half-integers. The
    function fixes integers and half-integers and is monotone; composing it
    `compose` times sharpens the steps (derivative: the product of the
    derivatives along the chain). Source: answer 1 of the seed thread
    ("Differentiable round function in Tensorflow?", Stack Overflow).

    `sin`/`cos` are the range-reduced polynomials of `diffround.ops.periodic`
    (max abs error 4.1e-7), not `tf.sin`, which XLA's CPU backend evaluates
    without vectorizing; the gradient is the formula above, evaluated with
    the same `cos`.

    Args:
        x: Pre-round tensor.
        compose: How many times the staircase is applied (positive int,
            default 1).

    Returns:
        The surrogate value, same shape and dtype as `x`.
    """
    y = x
    slope = tf.ones_like(x)
    for _ in range(int(compose)):
        sin_2pi_y, cos_2pi_y = sin_cos_2pi(y)
        slope = slope * (1.0 - cos_2pi_y)
        y = y - sin_2pi_y / (2.0 * math.pi)
    return _with_slope(y, slope, x)


def clamp_round(x: tf.Tensor, threshold: TensorLike = 0.25, slope: TensorLike = 2.0) -> tf.Tensor:
    """Clamped ramp: `min(max(x - threshold, 0) * slope, 1)`, for 0/1 outputs.

    Derivative: `slope` on the open window `(threshold, threshold + 1/slope)`,
    0 elsewhere (a hard sigmoid). The defaults (0.25, 2) centre a ramp of
    width 0.5 on 0.5, so every probability in (0.25, 0.75) gets gradient 2.
    The seed answer's constants (threshold 0.499, slope 1e4) leave a window
    1e-4 wide: the gradient is zero for almost every input (dead by design)
    and the ramp is centred on 0.49905, not 0.5.

    Args:
        x: Pre-round tensor, meant to be a probability in [0, 1].
        threshold: Left end of the ramp (float, default 0.25).
        slope: Ramp slope, the sharpness (positive float, default 2.0).

    Returns:
        The surrogate value in [0, 1].
    """
    z = (x - _as(threshold, x)) * _as(slope, x)
    # Explicit wheres (not clip_by_value) pin the derivative at the two kinks
    # to 0, i.e. the window is open, as documented.
    return tf.where(z <= 0.0, tf.zeros_like(z), tf.where(z >= 1.0, tf.ones_like(z), z))


def fourier_round(x: tf.Tensor, terms: int = 4) -> tf.Tensor:
    """Truncated Fourier series of round: `x + (1/pi) sum_n (-1)^n sin(2 pi n x) / n`.

    The sum runs over `n = 1..terms` (the sawtooth `round(x) - x` expanded in
    sines). Derivative: `1 + 2 sum_n (-1)^n cos(2 pi n x)`, the Dirichlet
    kernel shifted by a half: `sin((2N+1) pi (x + 1/2)) / sin(pi (x + 1/2))`
    for `N = terms`. At integers it is `1 + 2 sum_n (-1)^n`: +1 for even
    `N`, -1 for odd `N`. Either way the derivative is negative (points the
    wrong way) on `N/(2N+1)` of every unit interval: its sign changes at
    `x = k/(2N+1) - 1/2`, so for the default `N = 4` it is negative on 4/9
    (44%) of each interval, from about 0.056 (1/18) beside each integer on.
    An even `N` only makes the slope right in a window of half-width
    `1/(2(2N+1))` around the integers; it does not remove wrong-way
    gradients near them. Away from half-integers the value's error shrinks
    like 1/terms; near them the Gibbs overshoot stays. Source: answer 4 of
    the seed thread.

    One polynomial `sin`/`cos` pair of `t = 2 pi x` (`diffround.ops.periodic`)
    gives every term by the angle-addition rotation
    `sin((n+1) t) = sin(n t) cos t + cos(n t) sin t`,
    `cos((n+1) t) = cos(n t) cos t - sin(n t) sin t`, and the gradient is the
    formula above, summed from the same `cos(n t)`. The rotation's float32
    error grows about linearly in `n`; the three-term recurrence
    `sin((n+1) t) = 2 cos t sin(n t) - sin((n-1) t)` is cheaper but
    amplifies the error of `cos t` near integers about quadratically in `n`
    (at 50 terms it missed the tests' 1e-5 tolerance by 5-9x).

    Args:
        x: Pre-round tensor.
        terms: Number of sine terms (positive int, default 4).

    Returns:
        The surrogate value.
    """
    sin_t, cos_t = sin_cos_2pi(x)
    sin_nt, cos_nt = sin_t, cos_t
    y = x - sin_t / math.pi
    slope = 1.0 - 2.0 * cos_t
    for n in range(2, int(terms) + 1):
        sin_nt, cos_nt = sin_nt * cos_t + cos_nt * sin_t, cos_nt * cos_t - sin_nt * sin_t
        y = y + ((-1.0) ** n / (math.pi * n)) * sin_nt
        slope = slope + 2.0 * (-1.0) ** n * cos_nt
    return _with_slope(y, slope, x)


def sigmoid_round(x: tf.Tensor, slope: TensorLike = 10.0, center: TensorLike = 0.5) -> tf.Tensor:
    """Shifted, scaled logistic: `sigmoid(slope * (x - center))`, for 0/1 outputs.

    Derivative: `slope * s * (1 - s)` with `s` the value (at most slope/4, at
    the centre). It is the noise-free Binary Concrete with temperature
    1/slope. With the seed answer's slope 1000 the gradient is 250 at the
    centre and underflows to 0 a few hundredths away from it (dead almost
    everywhere, exploding at the centre). Source: answer 6 of the seed thread.

    Args:
        x: Pre-round tensor, meant to be a probability in [0, 1].
        slope: Sharpness (positive float, default 10.0).
        center: Where the value crosses 0.5 (float, default 0.5).

    Returns:
        The surrogate value in (0, 1).
    """
    return tf.sigmoid(_as(slope, x) * (x - _as(center, x)))


def soft_round(x: tf.Tensor, alpha: TensorLike = 5.0) -> tf.Tensor:
    """Soft round: `m + tanh(alpha * (x - m)) / (2 * tanh(alpha / 2))`, `m = floor(x) + 0.5`.

    Derivative: `alpha * sech^2(alpha * (x - m)) / (2 * tanh(alpha / 2))`.
    The identity as alpha -> 0 and `round` as alpha -> inf; it fixes integers
    and half-integers for every alpha. From Agustsson & Theis, "Universally
    Quantized Neural Compression" (2020, arXiv 2006.09952); the guards follow
    tensorflow-compression's `round_ops.soft_round`.

    Args:
        x: Pre-round tensor.
        alpha: Sharpness (positive float, default 5.0). Below 1e-3 the
            function is the identity.

    Returns:
        The surrogate value.
    """
    alpha = _as(alpha, x)
    # Bound alpha away from 0 so that tanh(alpha/2) in the denominator is
    # never 0: the branch for tiny alpha is discarded by the where below, but
    # without the bound its NaN gradient would still leak through the where.
    alpha_bounded = tf.maximum(alpha, SOFT_ROUND_MIN_ALPHA)
    m = tf.floor(x) + 0.5
    y = m + tf.tanh(alpha_bounded * (x - m)) / (2.0 * tf.tanh(alpha_bounded / 2.0))
    # For very small alpha soft round is the identity (its limit).
    return tf.where(alpha < SOFT_ROUND_MIN_ALPHA, x, y)


def soft_round_inverse(y: tf.Tensor, alpha: TensorLike = 5.0) -> tf.Tensor:
    """Inverse of `soft_round`: `m + clip(atanh(2 tanh(alpha/2) (y - m)) / alpha, -0.5, 0.5)`.

    With `m = floor(y) + 0.5`. `soft_round_inverse(soft_round(x, a), a) == x`
    up to float precision, away from where soft round saturates (large
    alpha, x near half-integers). Derivative:
    `2 tanh(alpha/2) / (alpha (1 - s^2))`, `s = 2 tanh(alpha/2) (y - m)`;
    at integers (`|y - m| = 1/2`) that is `sinh(alpha) / alpha` (14.8 for
    alpha 5), its maximum.

    Numerics. `1 - |s|` is computed as `(1 - 2|d|) + 4|d| sigmoid(-alpha)`,
    `d = y - m` (from `1 - tanh(alpha/2) = 2 sigmoid(-alpha)`), in log space,
    not from `s`:
    at integers `|s| = tanh(alpha/2)` rounds to 1 in float32 from alpha of
    about 17, where `atanh(s)` is inf and autodiff's derivative was NaN
    (inf times the clip's zero) or 0. Here `atanh` is
    `(log1p(|s|) - log(1 - |s|)) / 2` on that accurate `1 - |s|`, and the
    derivative is the formula above (floored `1 - |s|` keeps it finite where
    even `sigmoid(-alpha)` underflows, alpha above about 87).

    Args:
        y: A soft-rounded tensor.
        alpha: The sharpness used by `soft_round` (positive float, default 5.0).

    Returns:
        The tensor `x` with `soft_round(x, alpha) == y`.
    """
    alpha = _as(alpha, y)
    # Same guard as in soft_round: keep the discarded branch finite.
    alpha_bounded = tf.maximum(alpha, SOFT_ROUND_MIN_ALPHA)
    m = tf.floor(y) + 0.5
    d = y - m
    abs_d = tf.abs(d)
    tanh_half = tf.tanh(alpha_bounded / 2.0)
    abs_s = 2.0 * tanh_half * abs_d
    # log(1 - |s|) without cancellation (see the docstring), as
    # logaddexp(log(1 - 2|d|), log(4|d|) - softplus(alpha)): finite at
    # integers (1 - 2|d| = 0) even where sigmoid(-alpha) underflows.
    log_a = tf.math.log(1.0 - 2.0 * abs_d)
    log_b = tf.math.log(4.0 * abs_d) - tf.math.softplus(alpha_bounded)
    high, low = tf.maximum(log_a, log_b), tf.minimum(log_a, log_b)
    log_one_minus = high + tf.math.log1p(tf.exp(low - high))
    atanh_abs = 0.5 * (tf.math.log1p(abs_s) - log_one_minus)
    # r lies in [-0.5, 0.5] by definition; the clip removes float excess.
    r = tf.clip_by_value(tf.sign(d) * atanh_abs / alpha_bounded, -0.5, 0.5)
    # Floored at the smallest normal float: the slope, sinh(alpha)/alpha at
    # integers, stays finite where it would overflow (alpha above ~89).
    one_minus = tf.maximum(tf.exp(log_one_minus), tf.constant(_tiny(y.dtype), y.dtype))
    slope = 2.0 * tanh_half / (alpha_bounded * one_minus * (1.0 + abs_s))
    inverse = _with_slope(m + r, slope, y)
    # Below the threshold soft round is the identity; so is its inverse.
    return tf.where(alpha < SOFT_ROUND_MIN_ALPHA, y, inverse)


def soft_round_conditional_mean(y: tf.Tensor, alpha: TensorLike = 5.0) -> tf.Tensor:
    """`E[X | soft_round(X, alpha) + U = y]`: `soft_round_inverse(y - 1/2, alpha) + 1/2`.

    `U ~ U(-1/2, 1/2)` and `X` uniform on the unit interval around `y`. The
    decoder-side estimate of Agustsson & Theis, "Universally Quantized Neural
    Compression" (2020, arXiv 2006.09952, Sec. 4.1); tensorflow-compression's
    `round_ops.soft_round_conditional_mean`. Derivative: that of
    `soft_round_inverse` at `y - 1/2`, `sinh(alpha) / alpha` at half-integers.

    Args:
        y: Noisy soft-rounded values.
        alpha: Sharpness (positive float, default 5.0).

    Returns:
        The conditional mean, same shape and dtype as `y`.
    """
    return soft_round_inverse(y - 0.5, alpha) + 0.5


def _tiny(dtype: tf.DType) -> float:
    """Smallest positive normal number of a float dtype."""
    return float(np.finfo(dtype.as_numpy_dtype).tiny)
