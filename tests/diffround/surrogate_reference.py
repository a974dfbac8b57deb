"""Independent NumPy (float64) implementations of every surrogate and its derivative.

Written from the formulas in SURROGATES.md / the README table, not from the
library code. Each function returns `(value, derivative)` of the
deterministic forward (noise at its mean for the stochastic methods).
"""

import numpy as np

PROBABILITY_EPS = 1e-6


def sine(x, compose=1):
    value, grad = x.copy(), np.ones_like(x)
    for _ in range(compose):
        grad = grad * (1.0 - np.cos(2 * np.pi * value))
        value = value - np.sin(2 * np.pi * value) / (2 * np.pi)
    return value, grad


def clamp(x, threshold=0.25, slope=2.0):
    z = (x - threshold) * slope
    value = np.minimum(np.maximum(z, 0.0), 1.0)
    grad = np.where((z > 0) & (z < 1), slope, 0.0)
    return value, grad


def ste(x):
    return np.round(x), np.ones_like(x)  # np.round rounds half to even, like tf.round


def fourier(x, terms=4):
    n = np.arange(1, terms + 1)[:, None]
    sign = (-1.0) ** n
    value = x + np.sum(sign * np.sin(2 * np.pi * n * x) / n, axis=0) / np.pi
    grad = 1.0 + 2.0 * np.sum(sign * np.cos(2 * np.pi * n * x), axis=0)
    return value, grad


def sigmoid(x, slope=10.0, center=0.5):
    t = slope * (x - center)
    s = 0.5 * (1.0 + np.tanh(t / 2.0))  # overflow-free logistic
    return s, slope * s * (1.0 - s)


def soft_round(x, alpha=5.0):
    if alpha < 1e-3:
        return x.copy(), np.ones_like(x)
    m = np.floor(x) + 0.5
    denom = 2.0 * np.tanh(alpha / 2.0)
    value = m + np.tanh(alpha * (x - m)) / denom
    grad = alpha / np.cosh(np.minimum(np.abs(alpha * (x - m)), 300.0)) ** 2 / denom
    return value, grad


def noise(x):
    return x.copy(), np.ones_like(x)


def binary_concrete(x, temperature=2.0 / 3.0, straight_through=True):
    inside = (x >= PROBABILITY_EPS) & (x <= 1 - PROBABILITY_EPS)
    p = np.clip(x, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    logit = np.log(p / (1.0 - p))
    y = 0.5 * (1.0 + np.tanh(logit / temperature / 2.0))
    grad = np.where(inside, y * (1.0 - y) / (temperature * p * (1.0 - p)), 0.0)
    value = (y > 0.5).astype(np.float64) if straight_through else y
    return value, grad


def clipped_ste(x, clip=1.0, center=0.5):
    return np.round(x), (np.abs(x - center) <= clip).astype(np.float64)


def approx_sign(x):
    r = x - (np.floor(x) + 0.5)
    return np.round(x), 2.0 - 4.0 * np.abs(r)


def stochastic(x):
    """Noise at its mean is not the relaxed form here: u is dropped, round with slope 1."""
    return np.round(x), np.ones_like(x)


def _soft_round_inverse(y, alpha):
    """tensorflow-compression's formula, float64, with its derivative 2t / (alpha (1 - s^2))."""
    if alpha < 1e-3:
        return y.copy(), np.ones_like(y)
    m = np.floor(y) + 0.5
    t = np.tanh(alpha / 2.0)
    s = 2.0 * t * (y - m)
    with np.errstate(divide="ignore"):
        r = np.clip(np.arctanh(s) / alpha, -0.5, 0.5)
        grad = 2.0 * t / (alpha * (1.0 - s * s))
    return m + r, grad


def soft_round_noise(x, alpha=5.0, conditional_mean=True):
    y, dy = soft_round(x, alpha)
    if not conditional_mean:
        return y, dy
    value, dr = _soft_round_inverse(y - 0.5, alpha)
    return value + 0.5, dr * dy


def larq_sign(x):
    """larq.math.sign: sign(sign(x) + 0.1), so sign(0) = +1."""
    return np.sign(np.sign(x) + 0.1)


def ste_sign(x, clip_value=1.0):
    return larq_sign(x), (np.abs(x) <= clip_value).astype(np.float64)


def swish_sign(x, beta=5.0):
    bx = beta * x
    with np.errstate(over="ignore"):
        grad = beta * (2.0 - bx * np.tanh(bx * 0.5)) / (1.0 + np.cosh(bx))
    return larq_sign(x), grad


def ste_heaviside(x, clip_value=1.0):
    """larq.math.heaviside: sign(relu(x))."""
    return np.sign(np.maximum(x, 0.0)), (np.abs(x) <= clip_value).astype(np.float64)


def ste_tern(x, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):
    t = 0.7 * np.mean(np.abs(x)) if ternary_weight_networks else threshold_value
    value = np.sign(np.sign(x + t) + np.sign(x - t))
    return value, (np.abs(x) <= clip_value).astype(np.float64)


REFERENCES = {
    "sine": sine,
    "clamp": clamp,
    "ste": ste,
    "ste_custom": ste,
    "fourier": fourier,
    "sigmoid": sigmoid,
    "soft_round": soft_round,
    "noise": noise,
    "binary_concrete": binary_concrete,
    "clipped_ste": clipped_ste,
    "approx_sign": approx_sign,
    "stochastic": stochastic,
    "universal": stochastic,
    "soft_round_noise": soft_round_noise,
    "ste_sign": ste_sign,
    "swish_sign": swish_sign,
    "ste_heaviside": ste_heaviside,
    "ste_tern": ste_tern,
}

#: Methods whose exact values are integers (the others: sign, Heaviside, ternary).
SIGN_FAMILY = ("ste_sign", "swish_sign", "ste_heaviside", "ste_tern")


def exact(method, x, **params):
    """Inference value: round half to even, or the sign family's hard value."""
    if method in SIGN_FAMILY:
        return REFERENCES[method](np.asarray(x, np.float64), **params)[0]
    return np.round(x)


#: Methods that draw noise in training.
STOCHASTIC = ("noise", "binary_concrete", "stochastic", "universal", "soft_round_noise")

# Every method at several parameter values, extreme ones included.
CASES = [
    ("sine", {}),
    ("sine", {"compose": 3}),
    ("clamp", {}),
    ("clamp", {"threshold": 0.499, "slope": 1e4}),
    ("clamp", {"threshold": 0.0, "slope": 1.0}),
    ("ste", {}),
    ("ste_custom", {}),
    ("fourier", {"terms": 1}),
    ("fourier", {"terms": 4}),
    ("fourier", {"terms": 5}),
    ("fourier", {"terms": 50}),
    ("sigmoid", {}),
    ("sigmoid", {"slope": 1000.0}),
    ("sigmoid", {"slope": 1e4}),
    ("sigmoid", {"slope": 0.01, "center": 0.3}),
    ("soft_round", {"alpha": 1e-4}),
    ("soft_round", {"alpha": 1e-3}),
    ("soft_round", {"alpha": 0.5}),
    ("soft_round", {}),
    ("soft_round", {"alpha": 1e3}),
    ("noise", {}),
    ("binary_concrete", {}),
    ("binary_concrete", {"temperature": 1e-3}),
    ("binary_concrete", {"temperature": 10.0}),
    ("binary_concrete", {"temperature": 0.5, "straight_through": False}),
    ("clipped_ste", {}),
    ("clipped_ste", {"clip": 0.25}),
    ("clipped_ste", {"clip": 1e-3, "center": 0.0}),
    ("approx_sign", {}),
    ("stochastic", {}),
    ("universal", {}),
    ("soft_round_noise", {}),
    ("soft_round_noise", {"alpha": 1e-4}),
    ("soft_round_noise", {"alpha": 0.5}),
    ("soft_round_noise", {"alpha": 15.0}),
    ("soft_round_noise", {"alpha": 5.0, "conditional_mean": False}),
    ("ste_sign", {}),
    ("ste_sign", {"clip_value": 0.25}),
    ("ste_sign", {"clip_value": 1e3}),
    ("swish_sign", {}),
    ("swish_sign", {"beta": 0.1}),
    ("swish_sign", {"beta": 50.0}),
    ("ste_heaviside", {}),
    ("ste_heaviside", {"clip_value": 0.5}),
    ("ste_tern", {}),
    ("ste_tern", {"threshold_value": 0.5, "clip_value": 1.5}),
    ("ste_tern", {"ternary_weight_networks": True}),
]


def as_float32_params(params: dict) -> dict:
    """The parameters as the library sees them: float values rounded to float32.

    The layer keeps float parameters in float32 variables, so the reference
    evaluates at the same (rounded) parameter values, e.g. threshold 0.499.
    """
    return {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in params.items()}


def grid() -> np.ndarray:
    """Float32 grid on [-2, 2]: every multiple of 1/8 (integers and half-integers
    included), points just beside 0.5 and 1, and the probability ends."""
    regular = np.arange(-16, 17) / 8.0
    special = [1e-7, 1e-3, 0.3, 0.499, 0.4999, 0.5001, 0.501, 0.7, 0.999, 1 - 1e-7, 1.3]
    return np.concatenate([regular, special]).astype(np.float32)
