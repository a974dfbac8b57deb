"""Every method under XLA (`jit_compile=True`) and in float16/bfloat16 mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import STOCHASTIC, exact, grid

import diffround


def _value_and_grad(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training) if training is not None else layer.relaxed(x)
    return y, tape.gradient(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


@pytest.mark.parametrize("method", diffround.METHODS)
def test_xla_matches_eager_values_and_gradients(method):
    layer = diffround.DiffRound(method, **({"seed": 4} if method in STOCHASTIC else {}))
    x = tf.constant(np.concatenate([grid(), np.float32([2.5, -0.5, 3.5])])[None, :])
    compiled = tf.function(_value_and_grad, jit_compile=True)
    for training in (False, None, True):
        y_xla, g_xla = compiled(layer, x, training)
        assert np.all(np.isfinite(y_xla.numpy())) and np.all(np.isfinite(g_xla.numpy()))
        if training is True and method in STOCHASTIC:
            continue  # fresh noise per call; the relaxed forward (None) covers the formula
        y, g = _value_and_grad(layer, x, training)
        np.testing.assert_allclose(y_xla.numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
        scale = max(1.0, float(np.max(np.abs(g.numpy()))))
        np.testing.assert_allclose(g_xla.numpy(), g.numpy(), rtol=1e-4, atol=1e-4 * scale)
    # XLA's round is half to even, like tf.round.
    np.testing.assert_array_equal(compiled(layer, x, False)[0].numpy(), exact(method, x.numpy()))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("method", diffround.METHODS)
def test_mixed_precision_keeps_exact_rounding_and_close_surrogates(method, policy):
    params = {"seed": 4} if method in STOCHASTIC else {}
    layer = diffround.DiffRound(method, dtype=policy, **params)
    reference = diffround.DiffRound(method, **params)
    x = tf.constant(np.linspace(-1.5, 1.5, 49, dtype=np.float32)[None, :])
    half = keras.ops.cast(x, layer.compute_dtype)
    y = layer(x, training=False)
    assert y.dtype == layer.compute_dtype
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(y).astype(np.float32),
        exact(method, half.numpy().astype(np.float32)),
    )
    y_relaxed, grad = _value_and_grad(layer, half, None)
    assert y_relaxed.dtype == layer.compute_dtype
    # The surrogate computes in float32: the result equals the float32 layer
    # applied to the half-precision input, up to the final cast.
    expected, expected_grad = _value_and_grad(reference, tf.cast(half, tf.float32), None)
    tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-3
    np.testing.assert_allclose(
        tf.cast(y_relaxed, tf.float32).numpy(), expected.numpy(), rtol=tolerance, atol=tolerance
    )
    g = tf.cast(grad, tf.float32).numpy()
    assert np.all(np.isfinite(g))
    scale = max(1.0, float(np.max(np.abs(expected_grad.numpy()))))
    np.testing.assert_allclose(g, expected_grad.numpy(), rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_every_method_fits_and_predicts_under_xla(policy):
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    for method in diffround.METHODS:
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(3, activation="sigmoid", dtype=policy),
                diffround.DiffRound(method, dtype=policy),
            ]
        )
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        history = model.fit(x, np.ones((16, 3)), epochs=1, batch_size=16, verbose=0)
        assert np.isfinite(history.history["loss"][0]), method
        prediction = model.predict(x, verbose=0)
        assert set(np.unique(prediction.astype(np.float32))) <= {-1.0, 0.0, 1.0}, method
        if method in diffround.ROUNDING_METHODS:
            assert set(np.unique(prediction.astype(np.float32))) <= {0.0, 1.0}, method
