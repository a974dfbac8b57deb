"""Decoded JSON values -> NumPy arrays of a signature's dtype and shape, with clear messages.

The happy path is one `np.array` call and one cast with no per-element
Python work; only when that fails does a walk (iterative: a hostile body may
nest a thousand levels) run to say exactly what is wrong: which input, which
row, which value, what was expected.
"""

import base64
import binascii
import functools
import math
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.predictor import TensorSpec

#: v2 (Open Inference Protocol) datatype names by NumPy dtype, and back.
V2_DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}
NUMPY_OF_V2 = {v2: np.dtype(name) for name, v2 in V2_DATATYPES.items()}

#: TensorFlow's DataType enum names (TF Serving's metadata) by NumPy dtype name.
TF_DATATYPES: dict[str, str] = {
    "bool": "DT_BOOL",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "float16": "DT_HALF",
    "bfloat16": "DT_BFLOAT16",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "object": "DT_STRING",
}


@functools.lru_cache(maxsize=64)
def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype name of a NumPy dtype (`FP32`, `INT64`, `BYTES`, ...)."""
    return V2_DATATYPES.get(dtype.name, dtype.name.upper())


def kind(value: Any) -> str:
    """A JSON-ish name for a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def show_shape(shape: tuple[int, ...] | list[int] | None) -> str:
    """`[8, 8, 1]`, `[-1, 3]` (-1 variable) or `[...]` for an unknown rank."""
    return "[...]" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 40 else text[:37] + "..."


def _where(what: str, index: tuple[int, ...], batched: bool) -> str:
    if not index:
        return what
    if batched:
        rest = f", index {list(index[1:])}" if len(index) > 1 else ""
        return f"{what} row {index[0]}{rest}"
    return f"{what} index {list(index)}"


def nested_shape(value: Any, max_rank: int = 64) -> tuple[int, ...]:
    """The shape a nested list has along its first elements (`[[1, 2], [3]]` -> (2, 2))."""
    shape: list[int] = []
    while isinstance(value, list) and len(shape) < max_rank:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _first_irregular(value: Any, expected: tuple[int, ...]) -> tuple[tuple[int, ...], Any] | None:
    """The first position (depth first, iteratively) where `value` departs from `expected`.

    Returns:
        `(index, sub_value)` of the first list of the wrong length, scalar where a
        list belongs, or list where a scalar belongs; None when regular.
    """
    stack: list[tuple[tuple[int, ...], Any]] = [((), value)]
    while stack:
        index, item = stack.pop()
        depth = len(index)
        if depth == len(expected):
            if isinstance(item, list):
                return index, item
            continue
        if not isinstance(item, list) or len(item) != expected[depth]:
            return index, item
        stack.extend(((*index, i), child) for i, child in reversed(list(enumerate(item))))
    return None


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(
        d in (-1, n) for d, n in zip(declared, shape, strict=True)
    )


def _explain_shape(value: Any, spec: TensorSpec, what: str, batched: bool) -> None:
    """Raise InvalidInput for a ragged value or one whose shape does not fit `spec`.

    Returns without raising when the value is a regular nested list of the
    declared shape (then its values are the problem).
    """
    declared = spec.shape
    rank = len(declared) if declared is not None else 64
    if declared is not None and batched and isinstance(value, list) and value:
        row_declared = declared[1:]
        for r, row in enumerate(value):
            row_shape = nested_shape(row, max_rank=len(row_declared) + 1)
            if not _fits(row_shape, row_declared):
                raise InvalidInput(
                    f"{what} row {r} has shape {show_shape(row_shape)}, "
                    f"expected {show_shape(row_declared)}."
                )
    expected = nested_shape(value, max_rank=rank)
    irregular = _first_irregular(value, expected)
    if irregular is not None:
        index, item = irregular
        inner = len(index) >= len(expected)
        raise InvalidInput(
            f"{_where(what, index, batched)} is {kind(item)}: "
            + (
                "nested too deep, each value must be a single value."
                if inner
                else "expected a list like the others at that depth; the tensor must be "
                "rectangular."
            )
        )
    if declared is not None and not _fits(expected, declared):
        raise InvalidInput(
            f"{what} has shape {show_shape(expected)}, expected {show_shape(declared)}."
        )


def _scan_values(value: Any, check: Any) -> None:
    """Call `check(index, scalar)` on every scalar of a nested list, iteratively, in order."""
    stack: list[tuple[tuple[int, ...], Any]] = [((), value)]
    while stack:
        index, item = stack.pop()
        if isinstance(item, list):
            stack.extend(((*index, i), child) for i, child in reversed(list(enumerate(item))))
        else:
            check(index, item)


def _strings_to_array(value: Any, what: str, batched: bool) -> np.ndarray:
    def convert(item: Any, index: tuple[int, ...]) -> bytes:
        if isinstance(item, str):
            return item.encode()
        if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
            try:
                return base64.b64decode(item["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(
                    f"{_where(what, index, batched)} has invalid base64 in 'b64'."
                ) from None
        raise InvalidInput(
            f"{_where(what, index, batched)} is {kind(item)}, expected a string "
            'or {"b64": "..."}.'
        )

    shape = nested_shape(value)
    flat: list[bytes] = []

    def collect(index: tuple[int, ...], item: Any) -> None:
        flat.append(convert(item, index))

    if isinstance(value, list):
        _scan_values(value, collect)
    else:
        flat.append(convert(value, ()))
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    try:
        return array.reshape(shape)
    except ValueError:
        raise InvalidInput(f"{what} is not a rectangular tensor of strings.") from None


def _reject_booleans(value: Any, what: str, batched: bool) -> None:
    def check(index: tuple[int, ...], item: Any) -> None:
        if type(item) is bool:
            raise InvalidInput(
                f"{_where(what, index, batched)} is a boolean ({str(item).lower()}), "
                "expected a number."
            )

    _scan_values(value, check)


def _explain_values(value: Any, dtype: np.dtype, what: str, batched: bool) -> None:
    wanted = "true or false" if dtype.kind == "b" else "a number"

    def check(index: tuple[int, ...], item: Any) -> None:
        ok = type(item) is bool if dtype.kind == "b" else isinstance(item, int | float)
        if not ok or (dtype.kind != "b" and type(item) is bool):
            raise InvalidInput(
                f"{_where(what, index, batched)} is {kind(item)} ({_show(item)}), "
                f"expected {wanted}."
            )

    if isinstance(value, list):
        _scan_values(value, check)
    else:
        check((), value)


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of a float array is finite.

    One dot product in the usual case: a NaN or an infinity makes `sum(x_i^2)`
    non-finite, so a finite sum proves every value finite; a sum that overflowed
    is checked again value by value. (The dot product raises no floating-point
    warnings, where `np.sum` warns on `inf - inf` and on overflow.)
    """
    return math.isfinite(np.vdot(array, array)) or bool(np.isfinite(array).all())


def _fits_float(array: np.ndarray, dtype: np.dtype) -> bool:
    """Whether a cast of `array` to the float `dtype` surely gives finite values (a quick test).

    One dot product for a float array: `sum(x_i^2) < max^2` implies `|x_i| < max`
    for every value, where `max` is `dtype`'s largest finite value; a NaN or an
    infinity makes the sum NaN or infinite. The sum of non-negative terms is at
    least each term in floating point too, so the test never says yes wrongly; it
    says no for values near the limit (or squares past float64's range), and then
    the caller checks value by value. An integer array always fits a float32 or
    float64 (2**64 < float32's max).
    """
    if array.dtype.kind in "iu":
        return dtype.itemsize >= 4
    limit = _SQUARED_MAX.get(dtype.itemsize, 0.0)  # another float type: check value by value
    return array.dtype.kind == "f" and float(np.vdot(array, array)) < limit


#: The square of the largest finite value of float16, float32 and float64 (by itemsize);
#: float64's own square overflows, so its test is that the sum is finite.
_SQUARED_MAX = {2: 65504.0**2, 4: float(np.finfo(np.float32).max) ** 2, 8: math.inf}


def _cast(array: np.ndarray, dtype: np.dtype, what: str, batched: bool) -> np.ndarray:
    """Cast a numeric array to `dtype`, refusing values that do not survive the cast."""
    if dtype.kind == "f":
        if _fits_float(array, dtype):
            return array.astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            values = array.astype(dtype)
        finite = np.isfinite(values)
        if not finite.all():
            index = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), values.shape))
            original = array[index] if array.ndim else array
            raise InvalidInput(
                f"{_where(what, index, batched)} ({_show(original.item())}) is outside "
                f"{dtype.name}'s range: inputs must be finite numbers."
            )
        return values
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            integral = np.equal(np.mod(array, 1), 0)
            if not integral.all():
                index = tuple(
                    int(i) for i in np.unravel_index(int(np.argmin(integral)), array.shape)
                )
                raise InvalidInput(
                    f"{_where(what, index, batched)} is {_show(array[index].item())}, "
                    f"expected an integer ({dtype.name})."
                )
        info = np.iinfo(dtype)
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            index = tuple(int(i) for i in np.unravel_index(int(np.argmax(outside)), array.shape))
            raise InvalidInput(
                f"{_where(what, index, batched)} ({_show(array[index].item())}) is outside "
                f"{dtype.name}'s range [{info.min}, {info.max}]."
            )
        return array.astype(dtype)
    return array.astype(dtype)


def check_shape(array: np.ndarray, spec: TensorSpec, what: str) -> None:
    """Raise InvalidInput when `array`'s shape does not fit the declared one (-1 matches any)."""
    declared = spec.shape
    if declared is None:
        return
    shape = array.shape
    if len(shape) == len(declared):
        for wanted, size in zip(declared, shape, strict=True):
            if wanted != -1 and wanted != size:
                break
        else:
            return
    if spec.batched and len(shape) >= 1:
        raise InvalidInput(
            f"{what} rows have shape {show_shape(shape[1:])}, expected {show_shape(declared[1:])}."
        )
    raise InvalidInput(f"{what} has shape {show_shape(shape)}, expected {show_shape(declared)}.")


def _contiguous(array: np.ndarray) -> np.ndarray:
    """C-contiguous, rank kept (`np.ascontiguousarray` turns a 0-d array into a 1-d one)."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def json_to_array(
    value: Any, spec: TensorSpec, *, what: str, strict_shape: bool, strict_types: bool = True
) -> np.ndarray:
    """Convert a decoded JSON value into an array of the spec's dtype (and shape, when strict).

    Args:
        value: A number, boolean, string, or nested lists of them.
        spec: The signature input it feeds.
        what: How messages name it (`Input 'image'`).
        strict_shape: Check the declared shape (TF1 graph exports skip this).
        strict_types: Scan for booleans hidden among numbers (NumPy reads `true`
            as 1); pass False when the body holds no `true`/`false` token.

    Returns:
        A C-contiguous array.

    Raises:
        InvalidInput: Wrong type, ragged, wrong shape, or a value the dtype cannot hold.
    """
    batched = spec.batched
    if isinstance(value, dict):
        raise InvalidInput(f"{what} is an object, expected a tensor (nested lists of values).")
    if batched and isinstance(value, list) and not value:
        raise InvalidInput(f"Empty batch: {what} has no rows; send at least one row.")
    declared = spec.shape
    if strict_shape and declared is not None and len(declared) >= 2 and batched:
        depth = len(nested_shape(value, max_rank=len(declared)))
        if depth < len(declared):
            hint = " (wrap a single row in a list: [[...]])" if depth == len(declared) - 1 else ""
            raise InvalidInput(
                f"{what} has shape {show_shape(nested_shape(value))}, expected "
                f"{show_shape(declared)}: a batch of rows{hint}."
            )
    if spec.dtype == np.object_:
        array = _strings_to_array(value, what, batched)
    else:
        try:
            array = np.array(value)
        except (ValueError, TypeError, OverflowError, RecursionError):
            array = None
        if array is None or array.dtype == np.object_:
            _explain_shape(value, spec, what, batched)
            _explain_values(value, spec.dtype, what, batched)
            raise InvalidInput(f"{what} is not a tensor of {spec.dtype_name} values.")
        if spec.dtype.kind == "b":
            if array.dtype.kind != "b":
                _explain_values(value, spec.dtype, what, batched)
        elif array.dtype.kind not in "iuf":
            _explain_values(value, spec.dtype, what, batched)
            raise InvalidInput(f"{what} holds values that are not numbers.")
        elif strict_types:
            _reject_booleans(value, what, batched)
        array = _cast(array, spec.dtype, what, batched)
    if strict_shape:
        if spec.shape is not None and array.ndim != len(spec.shape) and isinstance(value, list):
            _explain_shape(value, spec, what, batched)
        check_shape(array, spec, what)
    return _contiguous(array)


def binary_to_array(
    raw: bytes | memoryview, spec: TensorSpec, shape: tuple[int, ...], what: str
) -> np.ndarray:
    """A little-endian, row-major binary tensor (v2's binary extension) as an array.

    Args:
        raw: Exactly the tensor's bytes (the caller checked the declared size).
        spec: The signature input (its dtype is the tensor's).
        shape: The shape the request declared.
        what: How messages name it.

    Raises:
        InvalidInput: Byte count off, NaN/Infinity in a float tensor, bytes not 0/1 for BOOL.
    """
    dtype = spec.dtype.newbyteorder("<") if spec.dtype.kind in "iuf" else spec.dtype
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"{what} needs {count * dtype.itemsize} bytes for shape {show_shape(shape)}, "
            f"got {len(raw)}."
        )
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    if spec.dtype.kind == "b":
        as_bytes = np.frombuffer(raw, dtype=np.uint8, count=count)
        if (as_bytes > 1).any():
            raise InvalidInput(f"{what}: BOOL bytes must be 0 or 1.")
    array = array.astype(spec.dtype)
    if spec.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            index = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), array.shape))
            raise InvalidInput(
                f"{_where(what, index, spec.batched)} is {array[index]}: "
                "inputs must be finite numbers."
            )
    return _contiguous(array)
