"""`noise` and `binary_concrete`: noise distribution, seeds, unbiasedness, relaxed forward."""

import numpy as np
import pytest
import tensorflow as tf

import diffround


def test_noise_adds_uniform_noise_in_half_open_unit_interval():
    x = tf.fill([20000], 0.3)
    y = diffround.surrogate(x, "noise", seed=1).numpy()
    u = y - 0.3
    assert u.min() >= -0.5 - 1e-6 and u.max() <= 0.5 + 1e-6
    assert abs(u.mean()) < 0.01
    assert abs(u.var() - 1.0 / 12.0) < 0.003


def test_noise_gradient_is_one():
    x = tf.constant([0.1, 0.5, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, "noise", seed=3)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), 1.0)


def test_int_seed_is_reproducible_and_layer_draws_fresh_noise():
    x = tf.zeros([64])
    a = diffround.surrogate(x, "noise", seed=7).numpy()
    b = diffround.surrogate(x, "noise", seed=7).numpy()
    np.testing.assert_array_equal(a, b)
    layer = diffround.DiffRound("noise", seed=7)
    first, second = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    assert not np.array_equal(first, second)
    again = diffround.DiffRound("noise", seed=7)
    np.testing.assert_array_equal(again(x, training=True).numpy(), first)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_binary_concrete_straight_through_is_bernoulli_p(p):
    # P(sigmoid((logit p + L)/t) > 0.5) = P(L > -logit p) = p for logistic L,
    # whatever the temperature: the hard sample is an unbiased Bernoulli(p).
    x = tf.fill([40000], p)
    for temperature in (0.1, 2.0 / 3.0, 5.0):
        y = diffround.surrogate(x, "binary_concrete", temperature=temperature, seed=11).numpy()
        assert set(np.unique(y)) <= {0.0, 1.0}
        assert abs(y.mean() - p) < 0.015


def test_binary_concrete_gradient_is_that_of_the_relaxed_sample():
    x = tf.fill([5000], 0.3)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        hard = diffround.surrogate(x, "binary_concrete", seed=5)
        soft = diffround.surrogate(x, "binary_concrete", straight_through=False, seed=5)
    np.testing.assert_allclose(tape.gradient(hard, x).numpy(), tape.gradient(soft, x).numpy())
    np.testing.assert_array_equal(hard.numpy(), (soft.numpy() > 0.5).astype(np.float32))
    assert np.all(tape.gradient(hard, x).numpy() >= 0)


def test_relaxed_fixes_noise_at_its_mean():
    x = tf.constant([0.2, 0.5, 0.7, 1.0])
    np.testing.assert_array_equal(diffround.relaxed(x, "noise", seed=1).numpy(), x.numpy())
    np.testing.assert_array_equal(
        diffround.relaxed(x, "binary_concrete").numpy(), [0.0, 0.0, 1.0, 1.0]
    )
    t = 0.5
    soft = diffround.relaxed(x, "binary_concrete", temperature=t, straight_through=False)
    p = np.clip(x.numpy().astype(np.float64), 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(soft.numpy(), 1 / (1 + (p / (1 - p)) ** (-1 / t)), rtol=1e-5)


def test_binary_concrete_is_finite_at_probability_ends():
    x = tf.constant([0.0, 1e-9, 1.0 - 1e-9, 1.0, -3.0, 4.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, "binary_concrete", temperature=1e-3, seed=0)
    assert np.all(np.isfinite(y.numpy()))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))
