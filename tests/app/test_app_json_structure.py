"""The JSON-level checks of `app.validation`: depth, duplicate keys, numeric headers.

Each is compared with an independent reference: Python's own `json` module
(`object_pairs_hook` sees every object's pairs) and a recursive depth count.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.validation import (
    MAX_JSON_DEPTH,
    count_keys,
    decode_json,
    json_structure,
    parse_numeric_header,
)


class Pairs(list):
    """An object as the standard library's parser saw it: every (key, value) pair, repeats kept."""


def reference_depth(value: Any) -> int:
    if isinstance(value, Pairs):
        return 1 + max((reference_depth(v) for _, v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def reference_counts(value: Any) -> tuple[int, int]:
    """(containers, strings) of a document parsed with `object_pairs_hook=Pairs`."""
    if isinstance(value, Pairs):
        counts = [reference_counts(v) for _, v in value]
        return 1 + sum(c for c, _ in counts), len(value) + sum(s for _, s in counts)
    if isinstance(value, list):
        counts = [reference_counts(v) for v in value]
        return 1 + sum(c for c, _ in counts), sum(s for _, s in counts)
    return 0, int(isinstance(value, str))


def reference_pairs(text: str) -> tuple[int, bool]:
    """(keys in the text, whether some object repeats a key), by the standard library."""
    keys = 0
    repeated = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal keys, repeated
        keys += len(pairs)
        repeated |= len({k for k, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return keys, repeated


# Keys drawn from a tiny alphabet (so repeats are common) with every character JSON
# escapes or that the scan treats specially.
keys = st.text(alphabet='ab"\\:[]{}\n', max_size=4)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-1, 1) | keys
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.lists(st.tuples(keys, children), max_size=4)
    ),  # pairs: an object, repeats allowed
    max_leaves=30,
)


def to_text(value: Any) -> str:
    """JSON text of a generated value, where a list of (key, value) tuples is an object."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{to_text(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_text(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "[" + to_text(value[0]) + "," + to_text(value[1]) + "]"
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(documents, st.sampled_from(["", " ", "\n  "]))
def test_structure_scan_matches_the_standard_library(value: Any, space: str) -> None:
    text = to_text(value).replace(",", "," + space)
    keys_expected, repeated = reference_pairs(text)
    depth_expected = reference_depth(json.loads(text, object_pairs_hook=Pairs))
    parsed = json.loads(text, object_pairs_hook=Pairs)
    assert json_structure(text.encode()) == (
        keys_expected,
        depth_expected,
        *reference_counts(parsed),
    )
    document = orjson.loads(text)
    if repeated:
        with pytest.raises(InvalidInput, match="Duplicate key"):
            decode_json(text.encode())
    elif depth_expected <= MAX_JSON_DEPTH:
        assert decode_json(text.encode()) == document
        assert count_keys(document) == keys_expected


@pytest.mark.parametrize("many", [3, 100])  # the few-strings path and the one-pass path
def test_duplicate_key_is_named_after_escaped_quotes(many: int) -> None:
    filler = ",".join(f'"k{i}\\"":[1]' for i in range(many))
    body = ('{"x":{' + filler + ',"a\\\\":1,"b":"\\"a\\\\\\":","a\\\\":2}}').encode()
    with pytest.raises(InvalidInput, match=r"Duplicate key 'a\\'"):
        decode_json(body)


V2_TENSOR = '{"name":"x","shape":[1,2],"datatype":"FP32","data":[1.5,2]%s}'


@pytest.mark.parametrize(
    ("body", "repeated"),
    [
        ('{"inputs":[%s]}' % (V2_TENSOR % ""), None),
        ('{"inputs":[%s]}' % (V2_TENSOR % ',"name":"y"'), "name"),  # in an object of a list
        ('{"inputs":[%s],"id":"1","id":"2"}' % (V2_TENSOR % ""), "id"),  # at the top
        ('{"inputs":[%s]}' % (V2_TENSOR % ',"parameters":{"a":1,"a":2}'), "a"),  # deeper
        ('{"p":{"a":1,"b":{"c":1}},"q":{"a":2}}', None),
        ('{"p":{"a":1,"b":{"c":1,"c":2}}}', "c"),
        # Objects in a list of more than 16 items are counted by the full walk.
        ("[" + ",".join(f'{{"k":{i}}}' for i in range(20)) + "]", None),
        ('{"rows":[' + ",".join(['{"k":1}'] * 19 + ['{"k":1,"k":2}']) + "]}", "k"),
    ],
)
def test_repeated_keys_are_found_at_every_level(body: str, repeated: str | None) -> None:
    if repeated is None:
        assert decode_json(body.encode()) == json.loads(body)
    else:
        with pytest.raises(InvalidInput, match=f"Duplicate key '{repeated}'"):
            decode_json(body.encode())


@pytest.mark.parametrize("depth", [1, 2, 63, 64, 65, 100, 999, 1000, 1023, 1024, 1025, 2000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_any_depth_is_accepted_or_refused_by_name(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = (opener * depth + "1" + closer * depth).encode()
    if depth <= MAX_JSON_DEPTH:
        document = decode_json(body)
        assert reference_depth(document) == depth
    else:
        with pytest.raises(InvalidInput, match="nested too deeply"):
            decode_json(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" + b"[1]," * 600_000 + b"1]", "arrays and objects, over the limit"),
        (b"[" + b'"a",' * 300_000 + b"1]", "strings, over the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_large_bodies_too_costly_to_parse_are_refused_before_parsing(
    body: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_json(body)


@pytest.mark.parametrize("strings", [1, 3, 101])  # an odd number of quotes, few and many
def test_a_large_body_cut_off_inside_a_string_is_invalid_json(strings: int) -> None:
    body = b'{"inputs": [' + b"1," * 40_000 + b'"a", ' * (strings // 2) + b'"cut off'
    assert body.count(b'"') % 2 == 1
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_json(body)


def test_a_large_batch_scans_in_linear_time() -> None:
    rows = np.random.default_rng(0).random((4096, 64)).tolist()
    body = orjson.dumps({"inputs": rows})
    assert decode_json(body) == {"inputs": rows}
    huge_string = b'{"inputs": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    start = time.perf_counter()
    json_structure(huge_string)
    # The old regex scan took about 1 s (6 s on a loaded 2-core machine) for this body.
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0), ("17", 17), (" 42 ", 42), ("9" * 18, int("9" * 18))]
)
def test_numeric_header_parses(value: str, expected: int) -> None:
    assert parse_numeric_header(value, "X-Length") == expected


@pytest.mark.parametrize("value", ["", "-1", "1e3", "0x10", "٣", "9" * 19, "9" * 5000, "1 2"])
def test_numeric_header_refuses_what_int_would_choke_on(value: str) -> None:
    with pytest.raises(InvalidInput, match="X-Length must be a non-negative integer"):
        parse_numeric_header(value, "X-Length")


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64)
    | st.lists(st.sampled_from(list(b'[]{}:,"\\ 1a')), max_size=200).map(bytes)
)
def test_any_bytes_decode_or_raise_invalid_input_only(body: bytes) -> None:
    json_structure(body)  # never raises, valid JSON or not
    for padded in (body, body + b" " * 70_000):  # also the checked-before-parsing path
        with contextlib.suppress(InvalidInput):
            decode_json(padded)
