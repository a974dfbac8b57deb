"""Grids: every method rounds to `step * k + offset`, optionally clipped to a range or bit width.

A method works on the unit grid (the integers, or {-1, +1} etc. for the sign
family). On a grid with `step` `s` and `offset` `o` the input is mapped to
code units, the method is applied there and the result mapped back:

    z = clip((x - o) / s, q_min, q_max),    y = s * method(z) + o

(`return_codes=True` returns `method(z)`, the integer code `k`, instead of
`y`). The clip bounds come from `bits` (unsigned: `[0, 2^b - 1]`; signed:
`[-2^(b-1), 2^(b-1) - 1]`; `narrow_range` drops the lowest code, as in
TensorFlow's `fake_quant_with_min_max_vars`) or from `min_value` /
`max_value` (value space; the codes are the grid points inside). Inside the
range the clip's derivative is 1, at and outside its ends 0, as in LSQ
(Esser et al., "Learned Step Size Quantization", 2019, arXiv 1902.08153,
eq. 3-5). So when `s` is a tensor (a learned step), autodiff gives the
gradient through the step that the method implies: for `ste`,
`d y / d s = round(z) - z` inside the range and `q_min` / `q_max` outside,
exactly LSQ's eq. 5; for a smooth method, `method(z) - z method'(z)`.

With the defaults (step 1, offset 0, no clipping, values) the grid is the
identity and nothing is computed: the output is bit-for-bit the unit-grid
method's.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import tensorflow as tf

from diffround import registry

#: Grid keys of `DiffRound.get_config`, with their defaults.
GRID_DEFAULTS: dict[str, Any] = {
    "step": 1.0,
    "offset": 0.0,
    "min_value": None,
    "max_value": None,
    "bits": None,
    "signed": False,
    "narrow_range": False,
    "return_codes": False,
}

#: Values of the bounded code sets, in code units (`MethodSpec.codes`).
CODE_SETS: dict[str, tuple[float, ...]] = {
    "sign": (-1.0, 1.0),
    "binary": (0.0, 1.0),
    "ternary": (-1.0, 0.0, 1.0),
}

# Relative tolerance for min_value / max_value that sit on a grid point up to
# float error (0.3 / 0.1 is 2.9999999999999996 in float64).
_ON_GRID_RTOL = 1e-9


def _invalid(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def _finite(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _invalid(name, "a positive float" if positive else "a finite float", value)
    if positive and value <= 0:
        raise _invalid(name, "a positive float", value)
    return float(value)


def bit_range(bits: int, signed: bool = False, narrow_range: bool = False) -> tuple[int, int]:
    """The integer codes of a bit width.

    unsigned: `[0, 2^b - 1]`; signed (two's complement): `[-2^(b-1),
    2^(b-1) - 1]`; `narrow_range` raises the lowest code by one (unsigned
    `[1, 2^b - 1]`, signed symmetric `[-(2^(b-1) - 1), 2^(b-1) - 1]`), as
    TensorFlow's `fake_quant_with_min_max_vars(narrow_range=True)`.

    Args:
        bits: Bit width, 1 to 32.
        signed: Signed codes (default False).
        narrow_range: Drop the lowest code (default False).

    Returns:
        `(q_min, q_max)`.

    Raises:
        ValueError: Bits out of range, or a range with no codes left.
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 32:
        raise _invalid("bits", "an int from 1 to 32", bits)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if narrow_range:
        low += 1
    if low >= high:
        raise ValueError(
            f"Invalid value received for argument `bits`. {bits} bit(s) with signed={signed} "
            f"and narrow_range={narrow_range} leave fewer than two codes."
        )
    return low, high


@dataclass(frozen=True)
class Grid:
    """Where a rounding layer's outputs lie: `step * k + offset`, `k` in a code range.

    Attributes:
        step: Grid spacing (positive float, default 1.0).
        offset: Grid offset (finite float, default 0.0).
        min_value: Lowest value (the grid points at or above it are kept);
            None (default): unbounded. Not with `bits`.
        max_value: Highest value, likewise.
        bits: Clip the codes to a bit width (see `bit_range`); None: no clip.
        signed: Signed codes for `bits` (default False).
        narrow_range: Drop the lowest code for `bits` (default False).
        return_codes: Output the codes `k` instead of the values (default False).
    """

    step: float = 1.0
    offset: float = 0.0
    min_value: float | None = None
    max_value: float | None = None
    bits: int | None = None
    signed: bool = False
    narrow_range: bool = False
    return_codes: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", _finite("step", self.step, positive=True))
        object.__setattr__(self, "offset", _finite("offset", self.offset))
        for name in ("min_value", "max_value"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _finite(name, value))
        for name in ("signed", "narrow_range", "return_codes"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, "a bool", getattr(self, name))
        if self.bits is not None:
            if self.min_value is not None or self.max_value is not None:
                raise ValueError(
                    "Invalid grid: give either `bits` or `min_value`/`max_value`, not both. "
                    f"Received: bits={self.bits!r}, min_value={self.min_value!r}, "
                    f"max_value={self.max_value!r}"
                )
            bit_range(self.bits, self.signed, self.narrow_range)
            object.__setattr__(self, "bits", int(self.bits))
        elif self.signed or self.narrow_range:
            raise ValueError(
                "Invalid grid: `signed` and `narrow_range` apply to `bits`, which is None."
            )
        low, high = self.code_bounds
        if low is not None and high is not None and low > high:
            raise ValueError(
                "Invalid grid: no grid point lies in [min_value, max_value]. "
                f"Received: min_value={self.min_value!r}, max_value={self.max_value!r}, "
                f"step={self.step!r}, offset={self.offset!r}"
            )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Grid:
        """The grid of a layer config (missing keys take their defaults)."""
        return cls(**{k: config.get(k, v) for k, v in GRID_DEFAULTS.items()})

    def get_config(self) -> dict[str, Any]:
        """Every grid argument (the `GRID_DEFAULTS` keys)."""
        return asdict(self)

    @property
    def code_bounds(self) -> tuple[float | None, float | None]:
        """`(q_min, q_max)` in code units; None where unbounded."""
        if self.bits is not None:
            low, high = bit_range(self.bits, self.signed, self.narrow_range)
            return float(low), float(high)

        def code(value: float | None, rounding: Any) -> float | None:
            if value is None:
                return None
            k = (value - self.offset) / self.step
            tolerance = _ON_GRID_RTOL * max(1.0, abs(k))
            return float(rounding(k - tolerance if rounding is math.ceil else k + tolerance))

        return code(self.min_value, math.ceil), code(self.max_value, math.floor)

    @property
    def bounded(self) -> bool:
        """Whether the codes are clipped."""
        return self.code_bounds != (None, None)

    @property
    def is_unit(self) -> bool:
        """The default grid: step 1, offset 0, no clip, values (nothing to compute)."""
        return self == Grid()

    def spec(self, codes: str = "integers", step: float | None = None) -> dict[str, float | None]:
        """`{"step", "offset", "min", "max"}` of the outputs (codes or values).

        Args:
            codes: The method's code set (`MethodSpec.codes`).
            step: The step to describe (a learned step's current value);
                default `self.step`.

        Returns:
            The grid the outputs lie on: `min`/`max` None where unbounded.
        """
        s, o = (1.0, 0.0) if self.return_codes else (self.step if step is None else step, 0.0)
        if not self.return_codes:
            o = self.offset
        if codes in CODE_SETS:
            values = CODE_SETS[codes]
            spacing = values[1] - values[0]
            low, high = values[0], values[-1]
            return {
                "step": spacing * s,
                "offset": o + low * s,
                "min": o + low * s,
                "max": o + high * s,
            }
        q_min, q_max = self.code_bounds
        return {
            "step": s,
            "offset": o,
            "min": None if q_min is None else o + q_min * s,
            "max": None if q_max is None else o + q_max * s,
        }


def clip_codes(z: tf.Tensor, q_min: float | None, q_max: float | None) -> tf.Tensor:
    """`clip(z, q_min, q_max)` with derivative 1 strictly inside, 0 at and outside the ends.

    LSQ's eq. 4 (`d v_hat / d v = 1[-Q_N < v/s < Q_P]`). The clipped value is
    held under `stop_gradient`, so at and beyond an end the output is the
    constant code `q_max` (or `q_min`) and a step gradient sees `q_max`.

    Args:
        z: Codes, float tensor.
        q_min: Lowest code or None.
        q_max: Highest code or None.

    Returns:
        The clipped codes.
    """
    if q_min is None and q_max is None:
        return z
    low = -math.inf if q_min is None else q_min
    high = math.inf if q_max is None else q_max
    inside = tf.logical_and(z > low, z < high)
    clipped = tf.clip_by_value(z, tf.cast(low, z.dtype), tf.cast(high, z.dtype))
    return tf.where(inside, z, tf.stop_gradient(clipped))


def on_grid(
    x: Any,
    fn: Any,
    grid: Grid,
    step: float | tf.Tensor | None = None,
) -> tf.Tensor:
    """Applies a unit-grid function `fn` on `grid`: `s * fn(clip((x - o) / s)) + o`.

    Computed in float32 (float64 for float64 inputs) and returned in the
    input's float dtype, like the unit-grid methods (`diffround.registry`).

    Args:
        x: Pre-round tensor.
        fn: Code tensor -> code tensor (a method's training, relaxed or
            exact forward on the unit grid).
        grid: The grid.
        step: The step to use, a float or a tensor broadcastable against
            `x` (a learned step); default `grid.step`.

    Returns:
        The values (or codes, with `grid.return_codes`).
    """
    x = tf.convert_to_tensor(x)
    if step is None and grid.is_unit:
        return fn(x)
    out_dtype = x.dtype if x.dtype.is_floating else tf.float32
    compute_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    x = tf.cast(x, compute_dtype)
    s = tf.cast(grid.step if step is None else step, compute_dtype)
    z = (x - grid.offset) / s if grid.offset != 0.0 else x / s
    z = clip_codes(z, *grid.code_bounds)
    codes = tf.cast(fn(z), compute_dtype)
    if grid.return_codes:
        return tf.cast(codes, out_dtype)
    return tf.cast(codes * s + grid.offset, out_dtype)


MODES = ("train", "relaxed", "exact")


def quantize(
    x: Any,
    method: str = "ste",
    mode: str = "train",
    *,
    step: float | tf.Tensor = 1.0,
    offset: float = 0.0,
    min_value: float | None = None,
    max_value: float | None = None,
    bits: int | None = None,
    signed: bool = False,
    narrow_range: bool = False,
    return_codes: bool = False,
    **params: Any,
) -> tf.Tensor:
    """`method` applied on the grid `step * k + offset` (the function behind `DiffRound`).

    Args:
        x: Pre-round tensor.
        method: A name in `diffround.METHODS` (default "ste").
        mode: "train" (default): the training surrogate (`surrogate`);
            "relaxed": its deterministic form (`relaxed`); "exact": inference
            rounding (`exact`).
        step: Grid spacing, a positive float, or a tensor (e.g. a trainable
            step, broadcast against `x`; autodiff then gives the step's
            gradient through the method).
        offset: Grid offset (default 0.0).
        min_value: Lowest output value or None.
        max_value: Highest output value or None.
        bits: Clip the codes to a bit width or None.
        signed: Signed codes for `bits`.
        narrow_range: Drop the lowest code for `bits`.
        return_codes: Return the codes `k` instead of the values.
        **params: The method's parameters (and `seed` for the stochastic ones).

    Returns:
        A tensor of the shape and float dtype of `x`.

    Raises:
        ValueError: Unknown method, mode, parameter, or an invalid grid.
    """
    if mode not in MODES:
        raise _invalid("mode", f"one of {', '.join(MODES)}", mode)
    tensor_step = isinstance(step, tf.Tensor | tf.Variable)
    grid = Grid(
        step=1.0 if tensor_step else step,
        offset=offset,
        min_value=min_value,
        max_value=max_value,
        bits=bits,
        signed=signed,
        narrow_range=narrow_range,
        return_codes=return_codes,
    )
    if registry.get_spec(method).codes != "integers" and grid.bounded:
        raise ValueError(
            f"Method {method!r} already has bounded codes; `bits`, `min_value` and "
            "`max_value` apply to the rounding methods only."
        )
    forward = {"train": registry.surrogate, "relaxed": registry.relaxed, "exact": registry.exact}
    return on_grid(
        x, lambda z: forward[mode](z, method, **params), grid, step if tensor_step else None
    )
