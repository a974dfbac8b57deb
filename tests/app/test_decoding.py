"""The metadata's `decoding`, parsed once, reads class ids as a NumPy positional sum does."""

from __future__ import annotations

import numpy as np
import pytest

from app.interpret import Decoding, parse_decoding


def reference(code: np.ndarray, base: int, classes: int | None) -> list[int | None]:
    """`sum_k d_k * base^(K-1-k)` per row; None for a digit outside [0, base) or id >= classes."""
    digits = np.rint(np.asarray(code, dtype=np.float64))
    weights = base ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.float64)
    ids = digits @ weights
    valid = ((digits >= 0) & (digits < base)).all(axis=1)
    if classes is not None:
        valid &= ids < classes
    return [int(i) if ok else None for i, ok in zip(ids, valid, strict=True)]


@pytest.mark.parametrize(
    ("document", "base", "classes"),
    [
        ({"kind": "binary_msb_first", "classes": 10}, 2, 10),
        ({"kind": "binary_msb_first"}, 2, None),
        ({"kind": "base_msb_first", "base": 3, "classes": 20}, 3, 20),
        ({"kind": "base_msb_first", "base": 10}, 10, None),
    ],
)
@pytest.mark.parametrize("as_integers", [False, True])
def test_decoding_matches_the_positional_sum(
    document: dict, base: int, classes: int | None, as_integers: bool
) -> None:
    rng = np.random.default_rng(base)
    code = rng.integers(-1, base + 1, size=(200, 4)).astype(np.float32)  # some digits invalid
    code[:3] = [[0, 0, 0, 0], [base - 1] * 4, [1, 0, 0, 1]]
    decoding = parse_decoding(document)
    assert decoding == Decoding(base, None, classes)
    value = code.astype(np.int64) if as_integers else code
    assert decoding.decode({"bits": value, "other": np.zeros((200, 4))}) == reference(
        code, base, classes
    )


def test_floats_are_rounded_before_they_are_read() -> None:
    decoding = parse_decoding({"kind": "binary_msb_first"})
    assert decoding.decode({"b": np.array([[0.9999999, 1e-7, 0.5, 1.5]])}) == [None]
    assert decoding.decode({"b": np.array([[0.9999999, 1e-7, 0.4, 1.4]])}) == [9]


def test_the_named_output_is_read_else_the_first() -> None:
    outputs = {"first": np.array([[1.0, 1.0]]), "second": np.array([[0.0, 1.0]])}
    assert parse_decoding({"kind": "binary_msb_first"}).decode(outputs) == [3]
    assert parse_decoding({"kind": "binary_msb_first", "output": "second"}).decode(outputs) == [1]
    assert parse_decoding({"kind": "binary_msb_first", "output": "absent"}).decode(outputs) is None


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        {"kind": "gray_code"},
        {"kind": "base_msb_first"},
        {"kind": "base_msb_first", "base": 1},
        {"kind": "base_msb_first", "base": 2.0},
        {"kind": "base_msb_first", "base": True},
        {"kind": "binary_msb_first", "output": None},
        {"kind": "binary_msb_first", "output": 3},
    ],
)
def test_unknown_or_malformed_decodings_decode_nothing(document: object) -> None:
    assert parse_decoding(document) is None


@pytest.mark.parametrize(
    "code",
    [
        np.zeros(4),  # not [rows, digits]
        np.zeros((2, 2, 2)),
        np.array([["a", "b"]], dtype=object),  # strings are no digits
    ],
)
def test_codes_of_the_wrong_shape_or_kind_decode_to_none(code: np.ndarray) -> None:
    assert parse_decoding({"kind": "binary_msb_first"}).decode({"c": code}) is None


def test_non_integer_classes_bound_nothing() -> None:
    decoding = parse_decoding({"kind": "binary_msb_first", "classes": 2.5})
    assert decoding is not None and decoding.classes is None
    assert decoding.decode({"c": np.array([[1.0, 1.0]])}) == [3]


def test_the_code_is_read_from_the_answered_integers_where_there_are_some() -> None:
    decoding = parse_decoding({"kind": "binary_msb_first", "output": "b"})
    outputs = {"b": np.array([[1.0, 0.0, 1.0]]), "s": np.array([[b"x"]], dtype=object)}
    # The answer writes `b` as integers: those are read (here deliberately other digits).
    assert decoding.decode(outputs, {"b": np.array([[1, 1, 1]]), "s": [["x"]]}) == [7]
    # Not an array in the answer (strings become lists): the model's output is read.
    assert decoding.decode(outputs, {"b": [[0, 0, 0]]}) == [5]
    assert decoding.decode(outputs, {}) == [5]
