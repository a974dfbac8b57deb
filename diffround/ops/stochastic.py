"""Stochastic surrogates: random perturbations standing in for rounding in training.

The `seed` argument is anything `keras.random.uniform` accepts: `None`
(fresh randomness), an int (the same draw on every call), or a
`keras.random.SeedGenerator` (a new draw per call, reproducible; what
`DiffRound` uses). `noise=False` fixes the noise at its mean (the
deterministic "relaxed" forward).

The noise itself comes from `tf.random.stateless_uniform(..., alg="philox")`
keyed by the seed: an int is the key; for `None` or a generator Keras draws
the two-element key (`keras.random.randint` with that seed, which gives the
semantics above). `keras.random.uniform` lowers to `alg="auto_select"`, which
XLA compiles on CPU into slow code: `noise_round` forward + backward on 1M
elements took 24-26 ms under XLA with it, ~3.4 ms with Philox.
"""

import numbers

import keras
import tensorflow as tf

from diffround.ops.smooth import soft_round, soft_round_conditional_mean
from diffround.ops.straight_through import straight_through as hard_with_gradient_of

TensorLike = tf.Tensor | tf.Variable | float
Seed = int | keras.random.SeedGenerator | None

# Probabilities are clipped to [eps, 1 - eps] before the logit so that p = 0
# or 1 gives a finite logit (and finite gradients). 1e-6 is representable
# next to 1 in float32 (its spacing there is 6e-8); the surrogates compute
# half-precision inputs in float32 (see diffround.registry).
PROBABILITY_EPS = 1e-6

# Exclusive upper bound of the int32 key words drawn by `_uniform`.
_KEY_MAX = 2**31 - 1


def _uniform(
    shape: tf.Tensor, minval: float, maxval: float, dtype: tf.DType, seed: Seed
) -> tf.Tensor:
    """`U(minval, maxval)` of `shape`: Philox noise keyed by a Keras draw from `seed`."""
    if isinstance(seed, numbers.Integral):
        # The same draw on every call: a constant key, which XLA and Grappler
        # fold. (A key from keras.random.randint with an int seed made XLA's
        # CPU code ~7x slower than a key that changes per call.) Reduced mod
        # 2^63 so that any Python int fits the int64 key.
        key = tf.constant([int(seed) % 2**63, 0], tf.int64)
    else:
        key = keras.random.randint([2], minval=0, maxval=_KEY_MAX, dtype="int32", seed=seed)
    return tf.random.stateless_uniform(
        shape, seed=key, minval=minval, maxval=maxval, dtype=dtype, alg="philox"
    )


def noise_round(x: tf.Tensor, seed: Seed = None, noise: bool = True) -> tf.Tensor:
    """Additive uniform noise: `x + u`, `u ~ U(-0.5, 0.5)`; derivative 1.

    Ballé, Laparra & Simoncelli, "End-to-end Optimized Image Compression"
    (2017, arXiv 1611.01704): the noise has the distribution of the rounding
    error, so the training loss sees what rounding will do. With
    `noise=False` it returns `x` (the noise at its mean).

    Args:
        x: Pre-round tensor.
        seed: Seed for the noise (see module docstring).
        noise: Draw noise (True) or fix it at its mean 0 (False).

    Returns:
        `x` plus uniform noise.
    """
    if not noise:
        return tf.identity(x)
    u = _uniform(tf.shape(x), -0.5, 0.5, x.dtype, seed)
    return x + u


def binary_concrete_round(
    x: tf.Tensor,
    temperature: TensorLike = 2.0 / 3.0,
    straight_through: bool = True,
    seed: Seed = None,
    noise: bool = True,
) -> tf.Tensor:
    """Binary Concrete (Gumbel-softmax for one bit): `y = sigmoid((logit(p) + L) / temperature)`.

    `L = log(u) - log(1 - u)`, `u ~ U(0, 1)` (logistic noise, mean 0). The
    straight-through variant (default) outputs the hard sample `1[y > 0.5]`
    with the gradient of `y`. Derivative of `y` in `p`:
    `y (1 - y) / (temperature * p * (1 - p))`. With `noise=False` (`L = 0`)
    `y = sigmoid(logit(p) / temperature)` and the hard value is `round(p)`.
    Maddison, Mnih & Teh, "The Concrete Distribution" (2017, arXiv
    1611.00712); Jang, Gu & Poole, "Categorical Reparameterization with
    Gumbel-Softmax" (2017, arXiv 1611.01144). The default temperature 2/3 is
    the value Maddison et al. suggest for binary variables.

    Args:
        x: A probability `p` in [0, 1] (clipped to [1e-6, 1 - 1e-6]).
        temperature: Relaxation temperature (positive float, default 2/3);
            lower is sharper.
        straight_through: Hard 0/1 forward with the relaxed gradient (True,
            default) or the relaxed sample itself (False).
        seed: Seed for the noise (see module docstring).
        noise: Draw logistic noise (True) or fix it at its mean 0 (False).

    Returns:
        The (hard or relaxed) sample.
    """
    p = tf.clip_by_value(x, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    # logit(p) + logit(u) = log(p u / ((1 - p)(1 - u))): one log instead of
    # four (XLA's CPU log/log1p cost ~0.5-1 ms per 1M elements each). With
    # both clipped to [1e-6, 1 - 1e-6] numerator and denominator stay within
    # [1e-12, 1], far from float32 underflow, and the ratio is exact to a
    # few ulps (1 - p is exact for p >= 1/2).
    odds = p / (1.0 - p)
    if noise:
        # Same clip for u: log(0) would be -inf.
        low, high = PROBABILITY_EPS, 1.0 - PROBABILITY_EPS
        u = _uniform(tf.shape(x), low, high, x.dtype, seed)
        odds = odds * (u / (1.0 - u))
    logits = tf.math.log(odds)
    y = tf.sigmoid(logits / tf.cast(temperature, x.dtype))
    if not straight_through:
        return y
    hard = tf.cast(y > 0.5, x.dtype)
    return hard_with_gradient_of(hard, y)


def stochastic_round(x: tf.Tensor, seed: Seed = None, noise: bool = True) -> tf.Tensor:
    """Stochastic rounding: value `floor(x + u)`, `u ~ U[0, 1)`; derivative 1 (straight through).

    Rounds up with probability `x - floor(x)`, so `E[floor(x + u)] = x`
    (unbiased) and every value is an integer. Gupta et al., "Deep Learning
    with Limited Numerical Precision" (2015, arXiv 1502.02551). With
    `noise=False` (the deterministic relaxed form) it is `round(x)` (half to
    even) with derivative 1, i.e. `ste`.

    Args:
        x: Pre-round tensor.
        seed: Seed for the noise (see module docstring).
        noise: Draw `u` (True) or round deterministically (False).

    Returns:
        The stochastically rounded tensor, with gradient 1.
    """
    if not noise:
        return hard_with_gradient_of(tf.round(x), x)
    u = _uniform(tf.shape(x), 0.0, 1.0, x.dtype, seed)
    return hard_with_gradient_of(tf.floor(x + u), x)


def universal_round(x: tf.Tensor, seed: Seed = None, noise: bool = True) -> tf.Tensor:
    """Universal quantization: value `round(x + u) - u`, `u ~ U(-1/2, 1/2)`; derivative 1.

    Rounding with a random offset shared by encoder and decoder: the error
    `round(x + u) - u - x` is uniform on (-1/2, 1/2) and independent of `x`
    (Ziv, 1985), the same distribution as the training noise of `noise`,
    but here the forward is an actual (dithered) quantization. The gradient
    passes straight through. Agustsson & Theis, "Universally Quantized
    Neural Compression" (2020, arXiv 2006.09952); tensorflow-compression's
    `UniversalBatchedEntropyModel`. With `noise=False` (`u = 0`) it is
    `round(x)` with derivative 1.

    Args:
        x: Pre-round tensor.
        seed: Seed for the dither (see module docstring).
        noise: Draw the dither (True) or fix it at its mean 0 (False).

    Returns:
        The dithered quantization of `x`, with gradient 1.
    """
    if not noise:
        return hard_with_gradient_of(tf.round(x), x)
    u = _uniform(tf.shape(x), -0.5, 0.5, x.dtype, seed)
    return hard_with_gradient_of(tf.round(x + u) - u, x)


def soft_round_noise(
    x: tf.Tensor,
    alpha: TensorLike = 5.0,
    conditional_mean: bool = True,
    seed: Seed = None,
    noise: bool = True,
) -> tf.Tensor:
    """Soft round plus uniform noise: `r(soft_round(x, alpha) + u)`, `u ~ U(-1/2, 1/2)`.

    `r` is `soft_round_conditional_mean` (default) or the identity
    (`conditional_mean=False`). Agustsson & Theis, "Universally Quantized
    Neural Compression" (2020, arXiv 2006.09952, Sec. 4.1), as
    tensorflow-compression trains with it: as alpha grows the training
    output tends to `round(x)` and the noise models the quantization error.
    Derivative: `r'(soft_round(x) + u) * soft_round'(x)`, every factor from
    `diffround.ops.smooth`. With `noise=False` (`u = 0`) it is the
    deterministic `r(soft_round(x, alpha))`.

    Args:
        x: Pre-round tensor.
        alpha: Sharpness of both soft round and the conditional mean
            (positive float, default 5.0).
        conditional_mean: Apply `soft_round_conditional_mean` after the
            noise (True, default) or return the noisy value (False).
        seed: Seed for the noise (see module docstring).
        noise: Draw noise (True) or fix it at its mean 0 (False).

    Returns:
        The noisy soft-rounded tensor.
    """
    y = soft_round(x, alpha)
    if noise:
        y = y + _uniform(tf.shape(x), -0.5, 0.5, x.dtype, seed)
    if not conditional_mean:
        return y
    return soft_round_conditional_mean(y, alpha)
