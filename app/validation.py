"""Fast request parsing: bytes -> JSON -> float32 NumPy arrays, with messages a person can act on.

The happy path is one `orjson.loads` and one `np.array` call, with no
per-element Python work; only when that fails does a slower walk run to say
exactly what is wrong (which row, which value, what was expected).
"""

import json
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import orjson

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

FLOAT32_MAX = float(np.finfo(np.float32).max)

# A JSON string token optionally followed by a colon (then it is an object key).
# Scanning left to right, each match starts at a quote outside any string, so
# every match is exactly one string token of a valid document.
_STRING_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)
_NON_FINITE_NAMES = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}


class _NonFiniteLiteral(Exception):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _reject_constant(literal: str) -> float:
    raise _NonFiniteLiteral(literal)


def check_json_content_type(content_type: str | None) -> None:
    """Accept `application/json` (and `+json` types, or no Content-Type); raise 415 otherwise.

    Args:
        content_type: The request's Content-Type header, if any.

    Raises:
        UnsupportedMediaType: For any other media type (e.g. a form post from `curl -d`).
    """
    if not content_type:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return
    shown = media_type[:80]
    raise UnsupportedMediaType(
        f"Unsupported Content-Type '{shown}': send the body as JSON with "
        "'Content-Type: application/json'."
    )


def decode_json(body: bytes) -> Any:
    """Parse a request body as JSON.

    Args:
        body: The raw request body.

    Returns:
        The decoded document.

    Raises:
        InvalidInput: Empty body, invalid JSON or UTF-8, NaN/Infinity literals,
            numbers that overflow a double, nesting deeper than 1024 levels, or
            duplicate object keys; the message names which.
    """
    if not body.strip():
        raise InvalidInput("The request body is empty: send a JSON object.")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(_explain_decode_error(body, str(exc))) from None
    _check_duplicate_keys(body, document)
    return document


def _explain_decode_error(body: bytes, reason: str) -> str:
    if "infinity when parsed as double" in reason:
        return (
            "A number in the body is too large: it overflows to Infinity, which is not a valid "
            f"input ({reason})."
        )
    if "depth limit" in reason or "recursion" in reason:
        return "The JSON is nested too deeply (more than 1024 levels)."
    if "UTF-8" in reason:
        return f"The request body is not valid UTF-8 ({reason})."
    # orjson rejects the NaN/Infinity literals Python's json module writes;
    # re-parse with the standard library only to say so by name.
    try:
        json.loads(body, parse_constant=_reject_constant)
    except _NonFiniteLiteral as literal:
        name = _NON_FINITE_NAMES.get(literal.literal, literal.literal)
        return (
            f"{name} is not a valid input value: inputs must be finite numbers "
            "(JSON has no NaN or Infinity)."
        )
    except (ValueError, RecursionError):
        pass
    return f"The request body is not valid JSON: {reason}."


_CONTAINER_TYPES = {dict, list}


def _count_keys(value: Any, counts: Counter[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            counts[key] += 1
            _count_keys(item, counts)
    elif isinstance(value, list):
        # A row of numbers holds no object: `set(map(type, ...))` runs in C, about 4x
        # faster than testing each item in Python.
        if _CONTAINER_TYPES.isdisjoint(set(map(type, value))):
            return
        for item in value:
            if isinstance(item, dict | list):
                _count_keys(item, counts)


def _check_duplicate_keys(body: bytes, document: Any) -> None:
    """Reject objects with a repeated key (orjson silently keeps the last one)."""
    if b":" not in body:
        return
    in_text: Counter[str] = Counter()
    for match in _STRING_TOKEN.finditer(body):
        if match.group(1) is not None:
            token = match.group(0)[: match.start(1) - match.start(0)]
            in_text[orjson.loads(token)] += 1
    # The usual request ({"inputs": [[...], ...]}): the text holds exactly one key token
    # per key of the top-level object, so no object anywhere repeats a key, and walking
    # every value of a large batch to count keys (6 ms for 1024 rows) is unnecessary.
    if isinstance(document, dict) and sum(in_text.values()) == len(document):
        return
    parsed: Counter[str] = Counter()
    _count_keys(document, parsed)
    if in_text == parsed:
        return
    for key, count in in_text.items():
        if count > parsed.get(key, 0):
            raise InvalidInput(f"Duplicate key '{key[:64]}' in a JSON object: give each key once.")


def require_object(document: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Check that a document is a JSON object with only known keys.

    Args:
        document: The decoded body.
        allowed: The keys the route reads.

    Returns:
        The object.

    Raises:
        InvalidInput: Not an object, or an unknown key (named, with the allowed ones).
    """
    if not isinstance(document, dict):
        raise InvalidInput(f"The request body must be a JSON object, got {kind(document)}.")
    unknown = [key for key in document if key not in allowed]
    if unknown:
        raise InvalidInput(
            f"Unknown field '{unknown[0][:64]}': allowed fields are {', '.join(allowed)}."
        )
    return document


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


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rows_to_array(
    rows: Any, *, field: str, width: int, max_rows: int, strict_types: bool = True
) -> np.ndarray:
    """Turn a decoded list of rows into a float32 array of shape `[n, width]`.

    Args:
        rows: The decoded value of the request's rows field.
        field: The field's name, for messages (`inputs`, `instances`).
        width: Values per row (64 for the contract's models).
        max_rows: Most rows allowed (`MAX_BATCH_ROWS`).
        strict_types: Also reject booleans hidden among numbers (NumPy would
            read `true` as 1); callers pass False when the body has no `true`
            or `false` token, which skips that scan.

    Returns:
        A C-contiguous float32 array `[n, width]`, every value finite.

    Raises:
        InvalidInput: Not a list of rows, empty batch, a row of the wrong
            width (which row, how many values), a value that is not a number,
            NaN/Infinity, or a value outside float32's range.
        PayloadTooLarge: More rows than `max_rows`.
    """
    if not isinstance(rows, list):
        raise InvalidInput(
            f"'{field}' must be a list of rows, each a list of {width} numbers; got {kind(rows)}."
        )
    if not rows:
        raise InvalidInput(f"Empty batch: '{field}' has no rows; send at least one row.")
    if not isinstance(rows[0], list):  # e.g. one flat row: say so rather than "too many rows"
        _explain_rows(rows[:1], field=field, width=width)
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f"Batch of {len(rows)} rows is over the limit of {max_rows} rows "
            "(MAX_BATCH_ROWS); split it into smaller requests."
        )
    try:
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        array = None
    if (
        array is not None
        and array.ndim == 2
        and array.shape[1] == width
        and array.dtype.kind in "fiu"
        and not (strict_types and _has_bool(rows))
    ):
        with np.errstate(over="ignore", invalid="ignore"):
            values = array.astype(np.float32)
        if np.isfinite(values).all():
            return np.ascontiguousarray(values)
    _explain_rows(rows, field=field, width=width)
    raise InvalidInput(f"'{field}' must be a list of rows, each a list of {width} numbers.")


def unwrap_named_instances(rows: Any, input_name: str) -> Any:
    """TF Serving's row form with named inputs: `[{"inputs": [...]}, ...]` -> `[[...], ...]`.

    Args:
        rows: The decoded `instances` value.
        input_name: The model's only input name.

    Returns:
        The rows, unwrapped when they were objects; anything else unchanged.

    Raises:
        InvalidInput: An object row without the input, or with another key.
    """
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return rows
    unwrapped = []
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput(f"Row {r} is {kind(row)}, but row 0 is an object: mix no forms.")
        if input_name not in row:
            raise InvalidInput(f"Row {r} is missing named input: {input_name}.")
        extra = [key for key in row if key != input_name]
        if extra:
            raise InvalidInput(
                f"Row {r} has unknown input '{extra[0][:64]}': the model's only input is "
                f"'{input_name}'."
            )
        unwrapped.append(row[input_name])
    return unwrapped


def _has_bool(rows: list[Any]) -> bool:
    return any(type(value) is bool for row in rows for value in row)


def _explain_rows(rows: list[Any], *, field: str, width: int) -> None:
    """Raise InvalidInput describing the first problem in `rows` (in row order)."""
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            hint = " (wrap a single row in a list: [[...]])" if _is_number(row) else ""
            raise InvalidInput(
                f"Row {r} of '{field}' is {kind(row)}, expected a list of {width} numbers{hint}."
            )
        if len(row) != width:
            raise InvalidInput(f"Row {r} has {len(row)} values, expected {width}.")
        for c, value in enumerate(row):
            _check_number(value, f"Row {r}, value {c}")


def _check_number(value: Any, where: str) -> None:
    if isinstance(value, list | dict):
        raise InvalidInput(
            f"{where} is {kind(value)}: nested too deep, each value must be a single number."
        )
    if not _is_number(value):
        raise InvalidInput(f"{where} is {kind(value)} ({_show(value)}), expected a number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{where} is {value}: inputs must be finite numbers.")
    if abs(float(value)) > FLOAT32_MAX:
        raise InvalidInput(f"{where} ({_show(value)}) is outside float32's range (about +-3.4e38).")


def numbers_to_array(data: Any, *, what: str, count: int, strict_types: bool = True) -> np.ndarray:
    """Turn a flat or nested list of numbers into a flat float32 array of `count` values.

    Args:
        data: The decoded list (v2's `data`, row major, flat or nested).
        what: What it is, for messages (e.g. "input 'inputs'").
        count: How many values the declared shape needs.
        strict_types: Also scan for booleans hidden among numbers (see `rows_to_array`).

    Returns:
        A flat float32 array.

    Raises:
        InvalidInput: Not a list, a non-number, NaN/Infinity, out of float32's
            range, or the wrong number of values.
    """
    if not isinstance(data, list):
        raise InvalidInput(f"The data of {what} must be a list of numbers, got {kind(data)}.")
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is not None and array.dtype.kind in "fiu":
        flat = array.reshape(-1)
        if flat.size != count:
            raise InvalidInput(
                f"The data of {what} has {flat.size} values, but its shape needs {count}."
            )
        with np.errstate(over="ignore", invalid="ignore"):
            values = flat.astype(np.float32)
        if np.isfinite(values).all() and not (strict_types and _nested_has_bool(data)):
            return values
    flat_values: list[Any] = []
    _flatten(data, flat_values)
    for i, value in enumerate(flat_values):
        _check_number(value, f"Value {i} of {what}")
    raise InvalidInput(
        f"The data of {what} has {len(flat_values)} values, but its shape needs {count}."
    )


def _nested_has_bool(data: Any) -> bool:
    if isinstance(data, list):
        return any(_nested_has_bool(item) for item in data)
    return type(data) is bool


def _flatten(data: Any, out: list[Any]) -> None:
    if isinstance(data, list):
        for item in data:
            if isinstance(item, list):
                _flatten(item, out)
            else:
                out.append(item)
    else:
        out.append(data)


def check_finite(array: np.ndarray, what: str, width: int) -> None:
    """Raise InvalidInput naming the first NaN/Infinity in a binary tensor.

    Args:
        array: A float32 array `[n, width]`.
        what: What it is, for messages.
        width: Values per row.
    """
    finite = np.isfinite(array)
    if finite.all():
        return
    flat_index = int(np.argmin(finite.reshape(-1)))
    row, col = divmod(flat_index, width)
    value = array.reshape(-1)[flat_index]
    raise InvalidInput(
        f"Row {row}, value {col} of {what} is {value}: inputs must be finite numbers."
    )
