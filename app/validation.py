"""Request bodies -> JSON documents, safely: content type, numeric headers, depth, keys.

The happy path is one `orjson.loads` call; only when it fails does a slower
walk run to say exactly what is wrong. Turning the decoded values into
arrays of a signature's dtype and shape is `app.tensors`' job.
"""

import asyncio
import json
import re
from typing import Any, NamedTuple

import numpy as np
import orjson

from app.errors import InvalidInput, UnsupportedMediaType

#: Deepest nesting of arrays and objects a request body may have. Real requests need a
#: handful of levels (an envelope, a list of tensors, a tensor's rank); orjson alone
#: would accept 1024, deep enough to exhaust Python's recursion limit in any recursive
#: walk that a route (or NumPy, or `repr`) does on the decoded document.
MAX_JSON_DEPTH = 64
#: Most arrays and objects, and most strings, a request body may hold. orjson spends
#: ~100-200 ns on each (and the garbage collector revisits every container), all
#: holding the GIL: 8 MB of `[1],` (2 million lists) stalled the event loop for 3 s.
#: A 4096-row batch holds 4097 lists; TF Serving's nested form of 4096 images of
#: 8 x 8 x 1 about 300k.
MAX_JSON_CONTAINERS = 1 << 19
MAX_JSON_STRINGS = 1 << 18
#: Bodies from this size on are checked (depth, containers, strings) before parsing,
#: and `decode_json_async` decodes them in a worker thread.
LARGE_BODY_BYTES = 64 * 1024
#: Most digits a numeric header may have (Python's `int()` refuses more than 4300).
MAX_HEADER_DIGITS = 18

# Byte classes for the structure scan: 1 `[` or `{`, 2 `]` or `}`, 4 `:`, 8 `"`.
_OPEN, _CLOSE, _COLON, _QUOTE = 1, 2, 4, 8
_CLASSES = bytearray(256)
for _char, _class in zip(b'[{]}:"', (_OPEN, _OPEN, _CLOSE, _CLOSE, _COLON, _QUOTE), strict=True):
    _CLASSES[_char] = _class
_CLASS_TABLE = bytes(_CLASSES)
# A JSON string token (the "unrolled loop" form: linear time), then the colon of a key.
# Scanning a valid text left to right, every match starts at an opening quote.
_STRING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?', re.DOTALL)
#: Up to this many string tokens, their bytes are blanked slice by slice; above, in one pass.
_FEW_STRINGS = 32
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


def parse_numeric_header(value: str, name: str, max_digits: int = MAX_HEADER_DIGITS) -> int:
    """A non-negative integer from an HTTP header, length-checked before `int()`.

    `int()` on more than 4300 digits raises `ValueError` (Python's guard
    against quadratic conversion), and `str.isdigit()` accepts non-ASCII
    digits that `int()` reads too; so only 1..`max_digits` ASCII digits pass.

    Args:
        value: The header's value.
        name: The header's name, for the message.
        max_digits: Most digits accepted (default 18: every value fits an int64).

    Returns:
        The value.

    Raises:
        InvalidInput: Empty, not ASCII digits, or longer than `max_digits`.
    """
    text = value.strip()
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        shown = text[:32] + ("..." if len(text) > 32 else "")
        raise InvalidInput(
            f"{name} must be a non-negative integer of at most {max_digits} digits, got {shown!r}."
        )
    return int(text)


def decode_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body as JSON.

    Parsing is one `orjson.loads`; the checks after it (nesting depth,
    duplicate keys) scan the text with NumPy in time linear in its length
    (about 10 ms per MB of plain data) and walk the document without recursion.

    Args:
        body: The raw request body.
        max_depth: Deepest nesting of arrays and objects accepted (`MAX_JSON_DEPTH`).

    Returns:
        The decoded document.

    Raises:
        InvalidInput: Empty body, invalid JSON or UTF-8, NaN/Infinity literals,
            numbers that overflow a double, nesting deeper than `max_depth`
            levels, or duplicate object keys; the message names which.
    """
    if not body.strip():
        raise InvalidInput("The request body is empty: send a JSON object.")
    structure = None
    if len(body) >= LARGE_BODY_BYTES:
        # Refuse what would be slow to parse before parsing it. On a text that is not
        # valid JSON the counts may be off, but then the body is refused either way.
        structure = json_structure(body, MAX_JSON_CONTAINERS)
        _check_counts(structure, max_depth)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(_explain_decode_error(body, str(exc), max_depth)) from None
    if isinstance(document, dict | list):
        _check_structure(body, document, max_depth, structure)
    return document


async def decode_json_async(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`decode_json`, in a worker thread for bodies of `LARGE_BODY_BYTES` or more.

    The Python-level walks then share the GIL with the event loop (the
    interpreter switches every 5 ms); the C-level steps (orjson's parse, the
    byte scans) are bounded by the limits on depth, containers and strings.
    """
    if len(body) < LARGE_BODY_BYTES:
        return decode_json(body, max_depth)
    return await asyncio.to_thread(decode_json, body, max_depth)


def _too_deep(max_depth: int) -> InvalidInput:
    return InvalidInput(
        f"The JSON is nested too deeply (more than {max_depth} levels of arrays and objects)."
    )


def _explain_decode_error(body: bytes, reason: str, max_depth: int) -> str:
    if "infinity when parsed as double" in reason:
        return (
            "A number in the body is too large: it overflows to Infinity, which is not a valid "
            f"input ({reason})."
        )
    if "depth limit" in reason or "recursion" in reason:
        return _too_deep(max_depth).message
    if "UTF-8" in reason:
        return f"The request body is not valid UTF-8 ({_first_invalid_utf8(body) or reason})."
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


def _first_invalid_utf8(body: bytes) -> str | None:
    """Where a body stops being UTF-8 ("byte 0xff at offset 30"), or None when it is UTF-8
    (orjson also refuses encoded surrogates, which Python's decoder names the same way)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{body[exc.start]:02x} at offset {exc.start}: {exc.reason}"
    return None


class JsonStructure(NamedTuple):
    """What a JSON text holds, counted without parsing it (see `json_structure`)."""

    keys: int  #: object keys
    depth: int  #: deepest nesting of arrays and objects (1 for `[]`, 0 for a scalar)
    containers: int  #: arrays and objects
    strings: int  #: string tokens, keys included


def _check_counts(structure: JsonStructure, max_depth: int) -> None:
    if structure.containers > MAX_JSON_CONTAINERS:
        raise InvalidInput(
            f"The JSON holds {structure.containers} arrays and objects, over the limit of "
            f"{MAX_JSON_CONTAINERS}: send tensors flat (v2 'data' is row major) or in fewer "
            "requests."
        )
    if structure.strings > MAX_JSON_STRINGS:
        raise InvalidInput(
            f"The JSON holds {structure.strings} strings, over the limit of {MAX_JSON_STRINGS}."
        )
    if structure.depth > max_depth:
        raise _too_deep(max_depth)


def json_structure(body: bytes, max_containers: int | None = None) -> JsonStructure:
    """How many keys, containers and strings a valid JSON text holds, and how deeply it nests.

    A linear scan with no per-byte Python work: blank every string token
    (escaped quotes first: `\\\\` pairs, then `\\"`, left to right as JSON reads
    them), then count the `:` left (each follows exactly one key) and take the
    running sum of +1 per `[`/`{` and -1 per `]`/`}`: its maximum is the depth.

    Args:
        body: A JSON text (on one that is not valid the counts are only approximate).
        max_containers: When the text holds more arrays and objects than this,
            skip the depth (reported as -1): the text is refused anyway.

    Returns:
        The counts and the depth.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    classes = np.frombuffer(body.translate(_CLASS_TABLE), np.uint8)
    strings = 0
    if b'"' in body:
        classes = classes.copy()
        quotes = np.flatnonzero(classes == _QUOTE)
        strings = len(quotes) // 2
        if len(quotes) <= 2 * _FEW_STRINGS:
            # An odd count (a text cut off inside a string): the last one runs to the end.
            stops = [*quotes[1::2].tolist(), len(classes)]
            for start, stop in zip(quotes[0::2].tolist(), stops, strict=False):
                classes[start:stop] = 0
        else:
            # Inside a string after an odd number of quotes (the opening one included).
            inside = np.bitwise_xor.accumulate((classes == _QUOTE).view(np.uint8))
            classes[inside.view(bool)] = 0
    keys = int(np.count_nonzero(classes == _COLON))
    opens = int(np.count_nonzero(classes == _OPEN))
    if opens <= 1:
        return JsonStructure(keys, opens, opens, strings)
    if max_containers is not None and opens > max_containers:
        return JsonStructure(keys, -1, opens, strings)
    brackets = classes[(classes & (_OPEN | _CLOSE)) != 0]
    # +1 for an opening bracket (class 1), -1 for a closing one (class 2): 3 - 2 * class
    # in uint8 is 1 or 255, which is -1 as int8. The running sum in int32: a text checked
    # before parsing may nest as deep as it is long.
    steps = (3 - 2 * brackets).view(np.int8)
    return JsonStructure(keys, int(steps.cumsum(dtype=np.int32).max()), opens, strings)


_CONTAINER_TYPES = frozenset((dict, list))


def _outer_keys(document: Any) -> int:
    """The keys of a top-level object and of the objects its values hold directly.

    A value that is a list counts the objects among its items only when it has at
    most `_OUTER_ITEMS` of them (a batch of rows is not scanned); the result is a
    lower bound of `count_keys`.
    """
    if type(document) is not dict:
        return 0
    total = len(document)
    for value in document.values():
        kind = type(value)
        if kind is dict:
            total += len(value)
        elif kind is list and len(value) <= _OUTER_ITEMS:
            total += sum(len(item) for item in value if type(item) is dict)
    return total


#: Lists of up to this many items have their objects counted by `_outer_keys`.
_OUTER_ITEMS = 16


def count_keys(document: Any) -> int:
    """How many keys the objects of a decoded document hold, all levels (no recursion).

    `document` comes from orjson, whose objects and arrays are exactly `dict` and
    `list`, so `type(...) in` (one hash lookup) stands in for `isinstance`.
    """
    total = 0
    stack = [document]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            total += len(value)
            items: Any = value.values()
        elif kind is list:
            items = value
        else:
            continue
        # A row of numbers holds no container: `isdisjoint(map(type, ...))` runs in C
        # (stopping at the first container), several times faster than a Python loop.
        if _CONTAINER_TYPES.isdisjoint(map(type, items)):
            continue
        stack.extend(item for item in items if type(item) in _CONTAINER_TYPES)
    return total


def _check_structure(
    body: bytes,
    document: dict[str, Any] | list[Any],
    max_depth: int,
    structure: JsonStructure | None = None,
) -> None:
    """Reject nesting deeper than `max_depth` and objects with a repeated key.

    orjson silently keeps the last of repeated keys, so each repetition makes
    the decoded document hold one key fewer than the text: compare the counts.
    """
    if structure is not None:
        text_keys = structure.keys
    elif body.count(b"[") + body.count(b"{") > max_depth:
        structure = json_structure(body)
        _check_counts(structure, max_depth)
        text_keys = structure.keys
    elif b":" not in body:
        return  # too few brackets to nest too deeply, and no key at all
    else:
        # A small body (the usual one-row request): one regex pass in C costs ~1 us where
        # the NumPy scan's fixed cost is ~25 us. The pattern is linear (no nested
        # quantifier can backtrack); each match is one string token, with its colon if
        # it is a key, and findall gives b"" for the tokens that are not keys.
        found = _STRING_TOKEN.findall(body)
        text_keys = len(found) - found.count(b"")
    if text_keys == 0:
        return
    # The decoded objects never hold more keys than the text names, and fewer exactly when
    # a key repeats; so once the keys of the outer objects alone add up to the text's count,
    # no object anywhere repeats a key, and walking every value of a large batch is
    # unnecessary. The usual requests: {"inputs": [[...], ...]} (the top-level object)
    # and v2's {"inputs": [{"name", "shape", "datatype", "data"}]} (one level more).
    if text_keys == _outer_keys(document) or text_keys == count_keys(document):
        return
    key = _first_duplicate_key(body)
    raise InvalidInput(f"Duplicate key '{key[:64]}' in a JSON object: give each key once.")


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _first_duplicate_key(body: bytes) -> str:
    """The first repeated key, in document order (only called when there is one).

    The standard library's parser is slower than orjson but reports every
    object's pairs; the depth was checked first, so its recursion stays shallow.
    """
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as duplicate:
        return duplicate.key
    except (ValueError, RecursionError):
        pass
    return "?"
