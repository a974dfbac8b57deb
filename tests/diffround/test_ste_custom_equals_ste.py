"""`ste` (stop-gradient trick) and `ste_custom` (tf.custom_gradient) agree exactly."""

import numpy as np
import tensorflow as tf
from surrogate_reference import grid

import diffround


def _value_and_grad(method, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, method)
    return y.numpy(), tape.gradient(y, x, output_gradients=upstream).numpy()


def test_ste_and_ste_custom_give_identical_values_and_gradients():
    x = tf.constant(np.concatenate([grid(), np.float32([2.5, 3.5, -0.5, 1e7 + 1])]))
    upstream = tf.constant(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))
    value, grad = _value_and_grad("ste", x, upstream)
    value_custom, grad_custom = _value_and_grad("ste_custom", x, upstream)
    np.testing.assert_array_equal(value, value_custom)
    np.testing.assert_array_equal(grad, grad_custom)
    np.testing.assert_array_equal(grad, upstream.numpy())


def test_ste_and_ste_custom_agree_inside_tf_function_and_layers():
    x = tf.constant(grid()[None, :])
    ste, ste_custom = diffround.DiffRound("ste"), diffround.DiffRound("ste_custom")

    @tf.function
    def both(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a = ste(x, training=True)
            b = ste_custom(x, training=True)
        return a, b, tape.gradient(a, x), tape.gradient(b, x)

    a, b, ga, gb = both(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ga.numpy(), gb.numpy())
