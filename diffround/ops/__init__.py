"""Plain TensorFlow functions, one per rounding surrogate, named after the math.

Every function here is elementwise and takes the pre-round tensor first. The
parameters may be Python numbers or scalar tensors/variables (so a layer can
pass annealed variables); validation happens in `diffround.registry`.
"""

from diffround.ops.sign import heaviside, sign, ste_heaviside, ste_sign, ste_tern, swish_sign
from diffround.ops.smooth import (
    clamp_round,
    fourier_round,
    sigmoid_round,
    sine_round,
    soft_round,
    soft_round_conditional_mean,
    soft_round_inverse,
)
from diffround.ops.stochastic import (
    binary_concrete_round,
    noise_round,
    soft_round_noise,
    stochastic_round,
    universal_round,
)
from diffround.ops.straight_through import (
    approx_sign_round,
    clipped_ste_round,
    ste_round,
    ste_round_custom,
)

__all__ = [
    "approx_sign_round",
    "binary_concrete_round",
    "clamp_round",
    "clipped_ste_round",
    "fourier_round",
    "heaviside",
    "noise_round",
    "sigmoid_round",
    "sign",
    "sine_round",
    "soft_round",
    "soft_round_conditional_mean",
    "soft_round_inverse",
    "soft_round_noise",
    "ste_heaviside",
    "ste_round",
    "ste_round_custom",
    "ste_sign",
    "ste_tern",
    "stochastic_round",
    "swish_sign",
    "universal_round",
]
