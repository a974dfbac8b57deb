"""`soft_round`: identity as alpha -> 0, round as alpha -> inf, inverse, NaN-free gradients."""

import numpy as np
import pytest
import tensorflow as tf

import diffround

X = np.linspace(-2.0, 2.0, 401).astype(np.float32)
AWAY_FROM_HALF = X[np.abs(X - np.floor(X) - 0.5) > 0.05]


@pytest.mark.parametrize("alpha", [1e-6, 1e-4, 2e-3, 1e-2])
def test_soft_round_small_alpha_is_identity(alpha):
    y = diffround.soft_round(tf.constant(X), alpha).numpy()
    np.testing.assert_allclose(y, X, atol=1e-3)


def test_soft_round_approaches_identity_as_alpha_decreases():
    errors = [np.max(np.abs(diffround.soft_round(X, a).numpy() - X)) for a in (4.0, 1.0, 0.1)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("alpha", [200.0, 1e3, 1e6])
def test_soft_round_large_alpha_is_round(alpha):
    y = diffround.soft_round(tf.constant(AWAY_FROM_HALF), alpha).numpy()
    np.testing.assert_allclose(y, np.round(AWAY_FROM_HALF), atol=1e-4)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0, 12.0])
def test_soft_round_inverse_undoes_soft_round(alpha):
    x = tf.constant(AWAY_FROM_HALF)
    back = diffround.soft_round_inverse(diffround.soft_round(x, alpha), alpha).numpy()
    np.testing.assert_allclose(back, AWAY_FROM_HALF, atol=2e-4)


def test_soft_round_inverse_is_identity_for_tiny_alpha():
    np.testing.assert_array_equal(diffround.soft_round_inverse(tf.constant(X), 1e-5).numpy(), X)


@pytest.mark.parametrize("alpha", [0.0, 1e-9, 1e-3, 1e3, 1e8])
def test_soft_round_gradients_are_finite_including_in_alpha(alpha):
    x = tf.constant(X)
    a = tf.Variable(alpha)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.soft_round(x, a)
    dx, da = tape.gradient(y, [x, a])
    assert np.all(np.isfinite(dx.numpy()))
    assert np.isfinite(da.numpy())


def test_soft_round_fixes_integers_and_half_integers():
    x = np.arange(-8, 9, dtype=np.float32) / 2.0
    for alpha in (0.1, 5.0, 100.0):
        np.testing.assert_allclose(diffround.soft_round(x, alpha).numpy(), x, atol=1e-5)
