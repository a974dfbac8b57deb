"""`LearnedStepRound` (LSQ) against the paper's equations written in NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround


def lsq_reference(v, s, q_n, q_p, g):
    """Esser et al. 2019, eq. 1-5: value, d/dv and d/ds (before summing), float64."""
    z = v / s
    inside = (z > -q_n) & (z < q_p)
    value = np.round(np.clip(z, -q_n, q_p)) * s
    dv = inside.astype(np.float64)
    ds = np.where(inside, np.round(z) - z, np.where(z <= -q_n, -q_n, q_p)) * g
    return value, dv, ds


def _grads(layer, x, upstream, training=True):
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    return y.numpy(), tape.gradient(loss, x).numpy(), tape.gradient(loss, layer.step_variable)


def _inputs(step, q_n, q_p, shape):
    """Codes at integers, half-integers, the clip ends and beyond (times the step)."""
    codes = np.concatenate(
        [np.arange(-q_n - 2, q_p + 2.5, 0.5), [-q_n - 1e-3, q_p + 1e-3, -q_n + 1e-3, q_p - 0.25]]
    )
    codes = np.resize(codes, int(np.prod(shape))).reshape(shape)
    return (codes * step).astype(np.float32)


@pytest.mark.parametrize(
    ("bits", "signed", "narrow_range"), [(3, True, False), (4, False, False), (2, True, True)]
)
def test_per_tensor_values_and_gradients_match_the_paper(bits, signed, narrow_range):
    low, high = diffround.bit_range(bits, signed, narrow_range)
    q_n, q_p = -low, high
    layer = diffround.LearnedStepRound(
        bits=bits, signed=signed, narrow_range=narrow_range, initial_step=0.5
    )
    x = _inputs(0.5, q_n, q_p, (4, 8))
    upstream = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    y, dx, ds = _grads(layer, x, upstream)
    g = 1.0 / np.sqrt(8 * q_p)  # N = 8 features per example (the batch axis is not counted)
    assert layer.effective_grad_scale == pytest.approx(g)
    value, dv, ds_ref = lsq_reference(x.astype(np.float64), 0.5, q_n, q_p, g)
    np.testing.assert_allclose(y, value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, dv * upstream, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds.numpy(), np.sum(ds_ref * upstream), rtol=1e-4, atol=1e-5)


def test_per_channel_steps_and_gradients_match_the_paper():
    steps = np.float32([0.25, 0.5, 2.0])
    layer = diffround.LearnedStepRound(bits=3, signed=True, axis=-1, initial_step=1.0)
    layer.build((None, 5, 3))
    layer.step_variable.assign(steps)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 5, 3)) * 2).astype(np.float32)
    x[0, 0] = [-1.0, 1.75, 8.0]  # clip ends (-4 * 0.25, 3.5 * 0.5 inside, 4 * 2 beyond)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    y, dx, ds = _grads(layer, x, upstream)
    g = 1.0 / np.sqrt(5 * 3)  # N = 5 elements per channel per example
    value, dv, ds_ref = lsq_reference(x.astype(np.float64), steps.astype(np.float64), 4, 3, g)
    np.testing.assert_allclose(y, value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, dv * upstream, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds.numpy(), np.sum(ds_ref * upstream, axis=(0, 1)), rtol=1e-4)
    spec = layer.grid_spec()
    assert spec["step"] == pytest.approx(steps.tolist())
    assert spec["min"] == pytest.approx((-4 * steps).tolist())


def test_first_training_batch_initialises_the_step_as_in_the_paper():
    x = np.random.default_rng(2).normal(size=(16, 6)).astype(np.float32)
    layer = diffround.LearnedStepRound(bits=4)
    layer(x)  # inference does not initialise
    assert float(layer.step_variable.numpy()) == 1.0
    layer(x, training=True)
    expected = 2 * np.mean(np.abs(x)) / np.sqrt(15)
    assert float(layer.step_variable.numpy()) == pytest.approx(expected, rel=1e-6)
    layer.step_variable.assign(0.3)
    layer(x * 10, training=True)  # only once
    assert float(layer.step_variable.numpy()) == pytest.approx(0.3)


def test_step_learns_and_the_model_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    inputs = keras.Input((4,))
    outputs = diffround.LearnedStepRound(bits=3, signed=True, axis=-1, name="lsq")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=True)
    layer = model.get_layer("lsq")
    history = model.fit(x, x, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert layer.step_variable.trainable
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(
        loaded.get_layer("lsq").step_variable.numpy(), layer.step_variable.numpy()
    )
    assert loaded.get_layer("lsq").get_config() == layer.get_config()


def test_lsq_rejects_sign_methods_and_bad_arguments():
    with pytest.raises(ValueError, match="rounding method"):
        diffround.LearnedStepRound("ste_sign")
    with pytest.raises(ValueError, match="Received: initial_step=0"):
        diffround.LearnedStepRound(initial_step=0)
    with pytest.raises(ValueError, match="the axis must exist"):
        diffround.LearnedStepRound(axis=3)(np.zeros((2, 3), np.float32))
