"""diffround: differentiable rounding surrogates for Keras 3 (TensorFlow backend).

`tf.round` has no gradient. `DiffRound` rounds exactly at inference and
applies a differentiable surrogate in training; `METHODS` lists the
surrogates, `surrogate` applies one as a function, and `export` writes a
Keras model with rounding layers as a servable SavedModel with gradients.
"""

from diffround.callbacks import Annealer, schedule_value
from diffround.diagnostics import FlipRatio, diagnostics, flip_share, local_gradient
from diffround.export import export
from diffround.layers import DiffRound
from diffround.modes import relaxed_mode
from diffround.ops import soft_round, soft_round_inverse
from diffround.registry import METHODS, Surrogate, exact_round, get, relaxed, surrogate

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Annealer",
    "DiffRound",
    "FlipRatio",
    "Surrogate",
    "__version__",
    "diagnostics",
    "exact_round",
    "export",
    "flip_share",
    "get",
    "local_gradient",
    "relaxed",
    "relaxed_mode",
    "schedule_value",
    "soft_round",
    "soft_round_inverse",
    "surrogate",
]
