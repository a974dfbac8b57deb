"""The task metrics against hand-computed values."""

import numpy as np
import pytest

from model import metrics


def test_exact_match_and_bit_accuracy():
    outputs = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    targets = np.array([[0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    assert metrics.exact_match(outputs, targets) == pytest.approx(1 / 3)
    assert metrics.bit_accuracy(outputs, targets) == pytest.approx(9 / 12)


def test_soft_bit_accuracy_equals_hard_on_exact_bits_and_penalises_soft_values():
    targets = np.array([[0, 1], [1, 0]], np.float32)
    assert metrics.soft_bit_accuracy(targets, targets) == 1.0
    assert metrics.soft_bit_accuracy(np.full((2, 2), 0.5), targets) == pytest.approx(0.5)


def test_precision_at_k_ranks_by_hamming_and_excludes_the_query():
    codes = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    # Each row's nearest other row has its label.
    assert metrics.precision_at_k(codes, labels, k=1) == 1.0
    # With k=3 every query retrieves all three others: one of three shares the label.
    assert metrics.precision_at_k(codes, labels, k=3) == pytest.approx(1 / 3)
    swapped = np.array([0, 1, 0, 1])
    assert metrics.precision_at_k(codes, swapped, k=1) == 0.0


def test_precision_at_k_l2_uses_float_distances():
    codes = np.array([[0.0], [0.1], [0.9], [1.0]])
    assert metrics.precision_at_k(codes, np.array([0, 0, 1, 1]), k=1, metric="l2") == 1.0
    with pytest.raises(ValueError, match="hamming"):
        metrics.precision_at_k(codes, np.array([0, 0, 1, 1]), metric="cosine")


def test_soft_level_accuracy_scores_integer_outputs_as_exact_matches():
    targets = np.array([[0.0, 3.0], [2.0, 1.0]])
    np.testing.assert_allclose(
        metrics.soft_level_accuracy(np.array([[0, 1], [2, 1]]), targets), 0.75
    )
    np.testing.assert_allclose(
        metrics.soft_level_accuracy(np.array([[0.25, 3.0], [2.0, 1.5]]), targets),
        (0.75 + 1 + 1 + 0.5) / 4,
    )
