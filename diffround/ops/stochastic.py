"""Stochastic surrogates: random perturbations standing in for rounding in training.

The `seed` argument is anything `keras.random.uniform` accepts: `None`
(fresh randomness), an int (the same draw on every call), or a
`keras.random.SeedGenerator` (a new draw per call, reproducible; what
`DiffRound` uses). `noise=False` fixes the noise at its mean (the
deterministic "relaxed" forward).
"""

import keras
import tensorflow as tf

from diffround.ops.straight_through import straight_through as hard_with_gradient_of

TensorLike = tf.Tensor | tf.Variable | float
Seed = int | keras.random.SeedGenerator | None

# Probabilities are clipped to [eps, 1 - eps] before the logit so that p = 0
# or 1 gives a finite logit (and finite gradients). 1e-6 is representable
# next to 1 in float32 (its spacing there is 6e-8); the surrogates compute
# half-precision inputs in float32 (see diffround.registry).
PROBABILITY_EPS = 1e-6


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
    u = keras.random.uniform(tf.shape(x), minval=-0.5, maxval=0.5, dtype=x.dtype, seed=seed)
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
    logits = tf.math.log(p) - tf.math.log1p(-p)
    if noise:
        # Same clip for u: log(0) would be -inf.
        low, high = PROBABILITY_EPS, 1.0 - PROBABILITY_EPS
        u = keras.random.uniform(tf.shape(x), minval=low, maxval=high, dtype=x.dtype, seed=seed)
        logits = logits + (tf.math.log(u) - tf.math.log1p(-u))
    y = tf.sigmoid(logits / tf.cast(temperature, x.dtype))
    if not straight_through:
        return y
    hard = tf.cast(y > 0.5, x.dtype)
    return hard_with_gradient_of(hard, y)
