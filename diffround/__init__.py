"""diffround: differentiable rounding surrogates for Keras 3 (TensorFlow backend).

`tf.round` has no gradient. `DiffRound` rounds exactly at inference and
applies a differentiable surrogate in training, on any grid
`step * k + offset` (clipped to a range or bit width); `METHODS` lists the
surrogates, `surrogate` and `quantize` apply one as a function.
`LearnedStepRound` learns the step (LSQ); `QuantizedDense` and
`QuantizedConv2D` quantize their kernel; `export` writes a Keras model with
rounding layers as a servable SavedModel with gradients.
"""

from diffround.callbacks import Annealer, schedule_value
from diffround.diagnostics import FlipRatio, diagnostics, flip_share, local_gradient
from diffround.export import export
from diffround.grid import Grid, bit_range, quantize
from diffround.layers import DiffRound
from diffround.lsq import LearnedStepRound
from diffround.modes import relaxed_mode
from diffround.ops import soft_round, soft_round_conditional_mean, soft_round_inverse
from diffround.quantized import QuantizedConv2D, QuantizedDense
from diffround.registry import (
    METHODS,
    ROUNDING_METHODS,
    Surrogate,
    exact,
    exact_round,
    get,
    relaxed,
    surrogate,
)

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ROUNDING_METHODS",
    "Annealer",
    "DiffRound",
    "FlipRatio",
    "Grid",
    "LearnedStepRound",
    "QuantizedConv2D",
    "QuantizedDense",
    "Surrogate",
    "__version__",
    "bit_range",
    "diagnostics",
    "exact",
    "exact_round",
    "export",
    "flip_share",
    "get",
    "local_gradient",
    "quantize",
    "relaxed",
    "relaxed_mode",
    "schedule_value",
    "soft_round",
    "soft_round_conditional_mean",
    "soft_round_inverse",
    "surrogate",
]
