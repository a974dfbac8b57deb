"""`fourier`: converges to round away from half-integers; the slope at integers is pinned."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import diffround


def _max_error_away_from_half_integers(terms: int) -> float:
    x = np.linspace(-2.0, 2.0, 4001)
    distance = np.abs(x - np.floor(x) - 0.5)
    x = x[distance > 0.1].astype(np.float32)
    y = diffround.surrogate(tf.constant(x), "fourier", terms=terms).numpy()
    return float(np.max(np.abs(y - np.round(x))))


def test_fourier_error_shrinks_as_terms_grow():
    errors = [_max_error_away_from_half_integers(t) for t in (2, 8, 32, 128)]
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    # Away from the jumps the error of the truncated sawtooth is O(1/terms):
    # terms * error stays bounded (about 0.2..0.5 here).
    scaled = [t * e for t, e in zip((2, 8, 32, 128), errors, strict=True)]
    assert max(scaled) < 1.0, scaled
    assert errors[-1] < 0.005


@pytest.mark.parametrize("terms", [1, 2, 3, 4, 5, 10, 11])
def test_fourier_slope_at_integers_is_minus_one_for_odd_plus_one_for_even(terms):
    x = tf.constant([-2.0, -1.0, 0.0, 1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, "fourier", terms=terms)
    expected = 1.0 if terms % 2 == 0 else -1.0
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-5)


def test_fourier_default_terms_is_even():
    x = tf.constant([0.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, "fourier")
    assert np.all(tape.gradient(y, x).numpy() > 0)
