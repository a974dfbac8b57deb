"""What the codecs share: the encoded response, JSON values of arrays, named-input forms."""

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.dataplane import DataPlane
from app.encoding import OFFLOAD_VALUES, array_footprint, encode_in_pieces
from app.errors import InvalidInput
from app.limits import check_response_budget
from app.predictor import SignatureRunner
from app.tensors import all_finite, kind

JSON = "application/json"


@dataclass(slots=True)
class Encoded:
    """A response body ready to send."""

    body: bytes
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


def dumps(document: Any) -> bytes:
    """JSON via orjson, NumPy arrays serialised natively (float32 printed as float32)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


async def encode_json(plane: DataPlane, document: Any, extra_bytes: int = 0) -> bytes:
    """A response document as JSON, within the response budget and without stalling the loop.

    The answer's size is bounded first (`MAX_RESPONSE_BYTES`: 413 before any
    encoding); an answer holding many values is encoded in a worker thread,
    in pieces (`app.encoding`).

    Args:
        plane: The data plane (its settings hold the budget).
        document: dicts, lists and NumPy arrays.
        extra_bytes: Bytes the response carries besides the JSON (v2's binary tensors).

    Raises:
        ResponseTooLarge: Over `MAX_RESPONSE_BYTES`.
    """
    values, bound = array_footprint(document)
    check_response_budget(bound + extra_bytes, plane.settings)
    if values >= OFFLOAD_VALUES:
        return await asyncio.to_thread(encode_in_pieces, document)
    return dumps(document)


def json_value(array: np.ndarray, *, integral: bool = False) -> Any:
    """An array as orjson can write it.

    Args:
        array: Any output.
        integral: The values are known integers (a rounded output on an
            integer grid): write them as JSON integers.
    """
    if array.dtype == np.object_:
        return string_values(array)
    if integral and array.dtype.kind == "f" and all_finite(array):
        return np.asarray(array, dtype=np.int64, order="C")  # rank kept, also for 0-d
    if array.dtype.kind == "f" and array.dtype.itemsize == 2:
        array = array.astype(np.float32)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def string_values(array: np.ndarray, *, binary: bool = False) -> Any:
    """A string tensor as JSON values: UTF-8 text, or TF Serving's `{"b64": ...}` where the
    bytes are not UTF-8, or for every value when `binary` (TF Serving's `*_bytes` tensors)."""

    def one(value: Any) -> Any:
        raw = value if isinstance(value, bytes) else str(value).encode()
        if not binary:
            try:
                return raw.decode()
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(raw).decode()}

    return np.vectorize(one, otypes=[object])(array).tolist() if array.size else array.tolist()


def may_hold_booleans(body: bytes) -> bool:
    """Whether a body might hold a JSON `true`/`false` (then conversion scans for them)."""
    return b"true" in body or b"false" in body


def columnar_inputs(value: Any, runner: SignatureRunner, field_name: str) -> dict[str, Any]:
    """TF Serving's columnar form: a tensor (one-input signatures) or an object of named tensors."""
    names = list(runner.inputs)
    if isinstance(value, dict) and not (len(names) == 1 and set(value) == {"b64"}):
        return value
    if len(names) != 1:
        raise InvalidInput(
            f"'{field_name}' must be an object of named tensors: the signature takes "
            f"{len(names)} inputs ({', '.join(names)})."
        )
    return {names[0]: value}


def row_inputs(
    plane: DataPlane, rows: Any, runner: SignatureRunner, field_name: str
) -> dict[str, Any]:
    """TF Serving's row form: a list of rows, each a value or an object naming every input.

    Returns:
        Input name -> the list of that input's rows.
    """
    names = list(runner.inputs)
    if not isinstance(rows, list):
        raise InvalidInput(f"'{field_name}' must be a list of rows, got {kind(rows)}.")
    if not rows:
        raise InvalidInput(f"Empty batch: '{field_name}' has no rows; send at least one row.")
    plane.check_rows(len(rows))
    named = isinstance(rows[0], dict) and not (len(names) == 1 and set(rows[0]) == {"b64"})
    if not named:
        if len(names) != 1:
            raise InvalidInput(
                f"Each row of '{field_name}' must be an object naming every input "
                f"({', '.join(names)})."
            )
        return {names[0]: rows}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput(f"Row {r} is {kind(row)}, but row 0 is an object: mix no forms.")
        for name in names:
            if name not in row:
                raise InvalidInput(f"Row {r} is missing named input: {name}.")
            columns[name].append(row[name])
        if len(row) != len(names):
            extra = next(key for key in row if key not in columns)
            raise InvalidInput(
                f"Row {r} has unknown input '{extra[:64]}': inputs are {', '.join(names)}."
            )
    return columns


def require_object(document: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Check that a document is a JSON object with only known keys.

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
