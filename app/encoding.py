"""JSON encoding of responses that hold NumPy arrays, without stalling the event loop.

`orjson.dumps` holds the GIL for its whole run: one call on a 4096-row
`/grad` answer (tens of MB) would stall the loop, and every other request
with it, for hundreds of milliseconds even in a worker thread. So a large
answer is encoded in a worker thread in pieces of `CHUNK_VALUES` values
(each a few milliseconds), between which the interpreter switches back to
the loop; the bytes are exactly those of one `orjson.dumps` call.
"""

from typing import Any

import numpy as np
import orjson

from app.limits import array_json_bound

OPTIONS = orjson.OPT_SERIALIZE_NUMPY
#: Values per `orjson.dumps` call when encoding in pieces (about 1 MB of JSON, ~5 ms).
CHUNK_VALUES = 65536
#: Answers holding at least this many array values are encoded off the loop, in pieces.
OFFLOAD_VALUES = 4 * CHUNK_VALUES


def array_footprint(content: Any) -> tuple[int, int]:
    """How many array values a response holds, and an upper bound on their JSON bytes.

    Walks dicts, lists and tuples without recursion; an array referenced
    twice counts twice (it is written twice). Strings and scalars are not
    counted: only arrays can be large.

    Returns:
        (values, bytes bound), summed over every NumPy array in `content`.
    """
    values = 0
    bound = 0
    stack = [content]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:  # the usual leaves first: exact types cost less than isinstance
            continue
        if kind is np.ndarray or isinstance(item, np.ndarray):
            values += item.size
            bound += array_json_bound(item.shape, item.dtype)
        elif kind is dict or isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple) and item:
            if not isinstance(item[0], _CONTAINERS):  # a list of scalars: as wide as doubles
                values += len(item)
                bound += 25 * len(item)
            else:
                stack.extend(item)
    return values, bound


#: What a list of values may nest (a list starting with anything else is one of scalars).
_CONTAINERS = (list, tuple, dict, np.ndarray)
#: Leaves that hold no array: skipped without further checks.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def encode_in_pieces(content: Any) -> bytes:
    """`orjson.dumps(content, OPT_SERIALIZE_NUMPY)`, large arrays written `CHUNK_VALUES` at a time.

    Args:
        content: dicts (str keys), lists, tuples, NumPy arrays (C-contiguous)
            and JSON scalars, nested as the routers build their answers.

    Returns:
        The same bytes as one `orjson.dumps` call.
    """
    parts: list[bytes] = []
    _encode(content, parts)
    return b"".join(parts)


def _encode(content: Any, parts: list[bytes]) -> None:
    # Recursion depth is the answer's nesting (a handful of levels): the routers build it.
    if isinstance(content, np.ndarray) and content.ndim >= 1 and content.size > CHUNK_VALUES:
        row_values = max(1, content.size // max(1, len(content)))
        step = max(1, CHUNK_VALUES // row_values)
        parts.append(b"[")
        for start in range(0, len(content), step):
            if start:
                parts.append(b",")
            parts.append(orjson.dumps(content[start : start + step], option=OPTIONS)[1:-1])
        parts.append(b"]")
    elif isinstance(content, dict):
        parts.append(b"{")
        for i, (key, value) in enumerate(content.items()):
            parts.append(b"," if i else b"")
            parts.append(orjson.dumps(key) + b":")
            _encode(value, parts)
        parts.append(b"}")
    elif isinstance(content, list | tuple) and any(
        isinstance(item, np.ndarray | dict | list | tuple) for item in content
    ):
        parts.append(b"[")
        for i, item in enumerate(content):
            parts.append(b"," if i else b"")
            _encode(item, parts)
        parts.append(b"]")
    else:
        parts.append(orjson.dumps(content, option=OPTIONS))
