"""Inputs that prove a faster runtime equal to the SavedModel, and batching safe, at load.

A runtime is kept only where its answers are bit-identical to the SavedModel's
on every probe (`app.runtimes.choose_runner`). The metadata's examples (or a
row of zeros) alone prove little: a model without examples was probed with
zeros and one random row tiled to every batch size, and TFLite summing a
reduction in another order went unnoticed (`reduce_sum` over 6 values: 39 of
64 random rows differed in the last bit). So the probes are, together:

- the warm-up inputs (`app.metadata.warm_up_inputs`);
- `range_probes`: the first one scaled to the guarded bound, and uniform noise
  up to it;
- `random_probes`: `ROWS` distinct rows drawn from the signature's specs in
  two value ranges (wide, and small non-negative), at each of `OPEN_WIDTHS`
  for every dimension the signature leaves open, with exact integers and
  half-integers among the floats (where rounding breaks ties); kept only where
  the SavedModel answers them (`answered`: a model may refuse an index out of
  its range).

The same drawn rows decide whether a signature's requests may be stacked into
one call (`row_independence`).
"""

from collections.abc import Sequence

import numpy as np

from app.batching import Tensors
from app.predictor import SignatureRunner, TensorSpec

#: Distinct rows per generated probe (the largest probe batch, `PROBE_BATCH_SIZES`).
ROWS = 64
#: Fewest rows a generated probe has (what `row_independence` needs), however large a row.
MIN_ROWS = 7
#: Widths tried for a non-batch dimension the signature leaves open (-1).
OPEN_WIDTHS = (1, 7, 64)
#: Most values one generated probe holds, all inputs together (rows shrink to fit).
PROBE_VALUES = 1 << 18
#: Value ranges drawn: "wide" (floats over many magnitudes, integers in [-100, 100]
#: or [0, 200]) and "small" (floats in [0, 1], integers 0 and 1: indices, flags).
RANGES = ("wide", "small")


def range_probes(runner: SignatureRunner, probes: list[Tensors], bound: float) -> list[Tensors]:
    """Probes whose float inputs reach `bound`: one scaled to it, one uniform in [-bound, bound]."""
    extra: list[Tensors] = []
    rng = np.random.default_rng(0)
    for probe in probes[:1]:
        scaled, uniform = dict(probe), dict(probe)
        for name, value in probe.items():
            if runner.inputs[name].dtype.kind == "f":
                peak = float(np.max(np.abs(value), initial=0.0)) or 1.0
                scaled[name] = (value * (bound / peak)).astype(value.dtype)
                uniform[name] = rng.uniform(-bound, bound, value.shape).astype(value.dtype)
        if any(scaled[n] is not probe[n] for n in probe):
            extra += [scaled, uniform]
    return extra


def random_probes(specs: dict[str, TensorSpec], *, bound: float, seed: int = 0) -> list[Tensors]:
    """Inputs drawn at random from a signature's specs, rows all different.

    Every probe fills each input's declared shape: `ROWS` rows for a batch
    dimension (fewer when a row is large: `PROBE_VALUES` in all, but at least
    `MIN_ROWS`), each open non-batch dimension at one of `OPEN_WIDTHS` (all
    open dimensions of a probe share it, so inputs that must agree do; wider
    ones only within `PROBE_VALUES`). Floats: normal values at scales
    from 1e-3 to 1e3 (at most `bound`), every fourth row snapped to
    half-integers; integers and booleans uniform; strings short decimal numbers.

    Args:
        specs: The signature's inputs.
        bound: Largest float magnitude drawn.
        seed: The generator's seed (probes are the same at every load).

    Returns:
        Probes (`{name: array}`), or none when an input's rank is unknown or its
        dtype has no generator (complex).
    """
    if not specs or any(spec.shape is None for spec in specs.values()):
        return []
    rng = np.random.default_rng(seed)
    has_open = any(-1 in _row_dims(spec) for spec in specs.values())
    probes: list[Tensors] = []
    for width in OPEN_WIDTHS if has_open else OPEN_WIDTHS[:1]:
        row_values = sum(_row_size(spec, width) for spec in specs.values())
        rows = min(ROWS, max(MIN_ROWS, PROBE_VALUES // max(row_values, 1)))
        if has_open and width != OPEN_WIDTHS[0] and row_values * rows > PROBE_VALUES:
            continue
        for value_range in RANGES:
            probe: Tensors = {}
            for name, spec in specs.items():
                drawn = _draw(rng, spec, _shape(spec, rows, width), value_range, bound)
                if drawn is None:
                    return []
                probe[name] = drawn
            probes.append(probe)
    return probes


def answered(reference: SignatureRunner, probes: Sequence[Tensors]) -> list[Tensors]:
    """The probes the reference runner answers (a refused one proves nothing)."""
    kept = []
    for probe in probes:
        try:
            reference(probe)
        except Exception:  # the model's own refusal (index out of range, a failed check)
            continue
        kept.append(probe)
    return kept


def _shape(spec: TensorSpec, rows: int, width: int) -> list[int]:
    assert spec.shape is not None
    return [
        (rows if i == 0 and spec.batched else width) if d == -1 else d
        for i, d in enumerate(spec.shape)
    ]


def _row_dims(spec: TensorSpec) -> tuple[int, ...]:
    """The dimensions of one row (all of them when there is no batch dimension)."""
    assert spec.shape is not None
    return spec.shape[1:] if spec.batched else spec.shape


def _row_size(spec: TensorSpec, width: int) -> int:
    return int(np.prod([width if d == -1 else d for d in _row_dims(spec)], dtype=np.int64))


def _draw(
    rng: np.random.Generator, spec: TensorSpec, shape: list[int], value_range: str, bound: float
) -> np.ndarray | None:
    dtype = spec.dtype
    if dtype.kind == "f":
        return _floats(rng, shape, dtype, value_range, bound)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value_range == "small":
            low, high = 0, 1
        else:
            low, high = (-100, 100) if dtype.kind == "i" else (0, 200)
        values = rng.integers(max(low, info.min), min(high, info.max), shape, endpoint=True)
        return values.astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype == np.object_:
        numbers = rng.integers(0, 1000, shape)
        return np.vectorize(lambda n: str(n).encode(), otypes=[object])(numbers)
    return None


def _floats(
    rng: np.random.Generator, shape: list[int], dtype: np.dtype, value_range: str, bound: float
) -> np.ndarray:
    limit = min(bound, float(np.finfo(dtype).max) / 4)
    if value_range == "small":
        values = rng.random(shape)
    else:
        values = rng.standard_normal(shape)
        if shape:  # one magnitude per row: 1e-3 .. 1e3
            scales = 10.0 ** rng.uniform(-3.0, 3.0, shape[0])
            values *= scales.reshape([-1] + [1] * (len(shape) - 1))
    if shape and shape[0] >= 4:
        values[3::4] = np.round(values[3::4] * 2.0) / 2.0  # exact integers and half-integers
    return np.clip(values, -limit, limit).astype(dtype)


#: Float outputs of a row may differ by this many units in the last place of the output's
#: largest value between batch sizes and still count as the same answer for batching.
BATCH_ULPS = 8


def row_independence(runner: SignatureRunner, probes: Sequence[Tensors]) -> tuple[bool, str]:
    """Whether stacking requests keeps each request's answer, and how closely.

    Dynamic batching answers each request with its rows of a larger call. That is
    the answer a call on the request alone gives only when every row's outputs
    depend on that row alone: not for a model that normalises over the batch
    (`x - reduce_mean(x, axis=0)`). TensorFlow's kernels may also round the last
    bits of a row differently at another batch size (a vectorised `exp` for
    most elements, a scalar one for the tail), as they do for a direct caller
    who batches differently; such differences are tolerated up to `BATCH_ULPS`
    units in the last place of each output's largest value. Non-float outputs
    (hard integer codes, strings) must be identical. The check calls the runner
    on 7 distinct rows and on the slices [0:1], [1:3] and [3:7], and compares.

    Args:
        runner: The signature's serving runner (batch-major inputs and outputs).
        probes: Probes it answers; the first whose inputs share at least 7 rows,
            not all equal, is used.

    Returns:
        `(True, "bit for bit")` or `(True, "floats within N ulps ...")` when
        batching keeps the answers; `(False, the first difference)` otherwise.

    Raises:
        LookupError: No probe has 7 rows with at least two of them different.
    """
    rows = MIN_ROWS
    for probe in probes:
        counts = {value.shape[0] if value.ndim else 0 for value in probe.values()}
        if len(counts) != 1 or counts.pop() < rows:
            continue
        sample = {name: value[:rows] for name, value in probe.items()}
        if all((value == value[:1]).all() for value in sample.values()):
            continue  # copies of one row cannot show rows influencing each other
        whole = runner(sample)
        exact = True
        for start, stop in ((0, 1), (1, 3), (3, rows)):
            part = runner({name: value[start:stop] for name, value in sample.items()})
            for name, value in whole.items():
                expected = np.ascontiguousarray(value[start:stop])
                got = np.ascontiguousarray(part[name])
                if expected.tobytes() == got.tobytes():
                    continue
                exact = False
                if not _within_ulps(expected, got, value):
                    return False, (
                        f"output '{name}' of rows {start}..{stop - 1} called alone differs from "
                        f"the same rows in a {rows}-row call"
                    )
        if exact:
            return True, "bit for bit"
        return True, (
            f"floats within {BATCH_ULPS} ulps of each output's largest value: kernels round "
            "the last bits differently at another batch size"
        )
    raise LookupError("no probe with 7 distinct rows that the model answers")


def _within_ulps(expected: np.ndarray, got: np.ndarray, whole: np.ndarray) -> bool:
    """Float arrays equal to within `BATCH_ULPS` ulps of `whole`'s largest finite magnitude
    (NaN where NaN, infinities equal); any difference in a non-float array is too much."""
    if expected.dtype.kind != "f" or expected.shape != got.shape:
        return False
    finite = np.isfinite(expected)
    if not np.array_equal(finite, np.isfinite(got)):
        return False
    if not np.array_equal(expected[~finite], got[~finite], equal_nan=True):
        return False
    scale = float(np.max(np.abs(whole[np.isfinite(whole)]), initial=0.0))
    tolerance = BATCH_ULPS * float(np.spacing(np.asarray(scale, dtype=expected.dtype)))
    gap = np.abs(expected[finite].astype(np.float64) - got[finite].astype(np.float64))
    return bool(np.all(gap <= tolerance))
