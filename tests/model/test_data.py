"""The digits split and the binary codes."""

import numpy as np
import pytest

from model.data import base_code, binary_code, decode_base, decode_binary, load_split


def test_split_is_stratified_disjoint_and_fixed():
    first, second = load_split(), load_split()
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert len(first.y_train) + len(first.y_test) == 1797
    assert 0.24 < len(first.y_test) / 1797 < 0.26
    # Every digit is held out in proportion to its frequency (stratified).
    counts = np.bincount(first.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    train_rows = {row.tobytes() for row in first.x_train}
    duplicates = sum(row.tobytes() in train_rows for row in first.x_test)
    # load_digits has a few identical images; the split itself shares no row index.
    assert duplicates < 5
    assert first.x_train.dtype == np.float32
    assert first.x_train.min() == 0.0 and first.x_train.max() == 16.0


def test_binary_code_is_msb_first():
    np.testing.assert_array_equal(
        binary_code(np.array([6, 9, 0])), [[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    )


@pytest.mark.parametrize("bits", [4, 8])
def test_decode_inverts_binary_code(bits):
    labels = np.arange(2**bits)
    np.testing.assert_array_equal(decode_binary(binary_code(labels, bits)), labels)


def test_base_code_is_msb_first_and_decodes_back():
    np.testing.assert_array_equal(
        base_code(np.array([9, 3, 0]), base=4, digits=2), [[2, 1], [0, 3], [0, 0]]
    )
    labels = np.arange(27)
    np.testing.assert_array_equal(decode_base(base_code(labels, base=3, digits=3), base=3), labels)
