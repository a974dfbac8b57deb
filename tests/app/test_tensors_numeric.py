"""JSON numbers into float tensors: the quick range test agrees with a value-by-value reference.

`json_to_array` casts with one dot product as its range test (`sum(x^2) < max^2`)
and falls back to checking each value; whichever path runs, a value is accepted
exactly when NumPy's cast of it is finite, and the array is NumPy's cast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from app.errors import InvalidInput
from app.predictor import TensorSpec
from app.tensors import all_finite, json_to_array

F32_MAX = float(np.finfo(np.float32).max)
F16_MAX = float(np.finfo(np.float16).max)
# float32's largest value, and the doubles on either side of the point where a cast
# stops rounding down to it (half a float32 ulp above: 2**103 at that exponent).
F32_EDGE = F32_MAX + 2.0**103
AWKWARD = [
    0.0,
    -0.0,
    0.5,
    -2.5,
    1e-45,  # below float32's smallest subnormal: casts to 0
    F32_MAX,
    -F32_MAX,
    np.nextafter(F32_EDGE, 0.0),  # rounds down to F32_MAX: accepted
    F32_EDGE,  # ties away from the max: infinity, refused
    3.5e38,
    1e39,
    -1e39,
    1.4e154,  # its square overflows a double: the quick test cannot decide
    1e300,
    F16_MAX,
    65519.0,  # rounds down to float16's max
    65520.0,  # rounds to infinity in float16
    70000,
    2**53 + 1,
    2**63 - 1,
]


def reference(value: list, dtype: np.dtype) -> np.ndarray | None:
    """NumPy's cast of the values, or None when any of them is not finite after it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cast = np.array(value).astype(dtype)
    return cast if np.isfinite(cast).all() else None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_one_value_is_accepted_exactly_when_its_cast_is_finite(value: float, dtype: type) -> None:
    spec = TensorSpec("x", np.dtype(dtype), (-1, 3))
    row = [[1.0, value, -3.0]]
    expected = reference(row, np.dtype(dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither path may leak a NumPy warning
        if expected is None:
            with pytest.raises(InvalidInput, match="range"):
                json_to_array(row, spec, what="Input 'x'", strict_shape=True)
            return
        got = json_to_array(row, spec, what="Input 'x'", strict_shape=True)
    assert got.dtype == dtype
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    assert np.signbit(got).tolist() == np.signbit(expected).tolist()  # -0.0 stays -0.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_random_batches_equal_numpys_cast(dtype: type) -> None:
    rng = np.random.default_rng(7)
    spec = TensorSpec("x", np.dtype(dtype), (-1, 5))
    for scale in (1.0, 1e3, 1e30, 1e37):
        rows = (rng.standard_normal((17, 5)) * scale).tolist()
        expected = reference(rows, np.dtype(dtype))
        if expected is None:
            with pytest.raises(InvalidInput):
                json_to_array(rows, spec, what="Input 'x'", strict_shape=True)
        else:
            got = json_to_array(rows, spec, what="Input 'x'", strict_shape=True)
            np.testing.assert_array_equal(got, expected)


def test_the_refusal_names_the_first_value_out_of_range() -> None:
    spec = TensorSpec("x", np.dtype(np.float32), (-1, 3))
    with pytest.raises(InvalidInput, match=r"Input 'x' row 1, index \[2\] \(1e\+39\)"):
        rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 1e39]]
        json_to_array(rows, spec, what="Input 'x'", strict_shape=True)


SPECIAL = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_agrees_with_numpy(dtype: type) -> None:
    rng = np.random.default_rng(3)
    info = np.finfo(dtype)
    cases = [
        np.zeros((0, 4), dtype),
        np.array(7.0, dtype),
        np.full((3, 2), info.max, dtype),  # its squares overflow: decided value by value
        np.array([info.max, -info.max], dtype),
        (rng.standard_normal((8, 9)) * 100).astype(dtype),
        (rng.standard_normal((8, 9)) * 100).astype(dtype).T,  # not contiguous
    ]
    for special in SPECIAL:
        for position in (0, 5, 71):
            array = rng.standard_normal(72).astype(dtype)
            array[position] = special
            cases.append(array.reshape(8, 9))
    inf_minus_inf = np.array([np.inf, -np.inf], dtype)  # sums to NaN
    cases.append(inf_minus_inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for array in cases:
            assert all_finite(array) == bool(np.isfinite(array).all()), array
