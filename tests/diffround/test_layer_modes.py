"""`DiffRound`: surrogate in training, exact round at inference, variables, validation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import STOCHASTIC, exact, grid

import diffround

SEEDED = {method: {"seed": 1} for method in STOCHASTIC}


@pytest.mark.parametrize("method", diffround.METHODS)
def test_inference_is_exact_round_half_to_even(method):
    x = np.concatenate([grid(), np.float32([2.5, -1.5, 0.5, 1.5])])[None, :]
    layer = diffround.DiffRound(method, **SEEDED.get(method, {}))
    y = layer(x, training=False).numpy()
    np.testing.assert_array_equal(y, exact(method, x))
    np.testing.assert_array_equal(layer(x).numpy(), exact(method, x))  # default training=False


@pytest.mark.parametrize("method", diffround.ROUNDING_METHODS)
def test_probabilities_round_to_exact_zero_and_one(method):
    p = np.random.default_rng(0).uniform(0, 1, size=(8, 16)).astype(np.float32)
    model = keras.Sequential([keras.Input((16,)), diffround.DiffRound(method)])
    y = model.predict(p, verbose=0)
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, (p > 0.5).astype(np.float32))


@pytest.mark.parametrize("method", diffround.METHODS)
def test_training_applies_the_surrogate(method):
    x = tf.constant(grid()[None, :])
    layer = diffround.DiffRound(method)
    y = layer(x, training=True).numpy()
    if method in SEEDED:
        assert y.shape == x.shape
    else:
        np.testing.assert_array_equal(y, diffround.surrogate(x, method).numpy())
    np.testing.assert_array_equal(layer.relaxed(x).numpy(), diffround.relaxed(x, method).numpy())


def test_sharpness_lives_in_non_trainable_variables():
    layer = diffround.DiffRound("sigmoid", slope=20.0, center=0.4)
    names = sorted(v.path.split("/")[-1] for v in layer.non_trainable_variables)
    assert names == ["anneal_step_center", "anneal_step_slope", "center", "slope"]
    assert layer.trainable_variables == []
    layer.parameter_variables["slope"].assign(1000.0)
    x = tf.constant([[0.39, 0.41]])
    np.testing.assert_allclose(
        layer(x, training=True).numpy(), 1 / (1 + np.exp(-1000 * (x.numpy() - 0.4))), rtol=1e-4
    )


def test_seed_constants_are_reachable():
    clamp = diffround.DiffRound("clamp", threshold=0.499, slope=1e4)
    assert clamp.current_params() == {"threshold": pytest.approx(0.499), "slope": 1e4}
    sigmoid = diffround.DiffRound("sigmoid", slope=1000.0)
    assert sigmoid.current_params()["slope"] == 1000.0
    fourier = diffround.DiffRound("fourier", terms=5)
    assert fourier.current_params() == {"terms": 5}


def test_layer_rejects_unknown_parameters_and_bad_values():
    with pytest.raises(ValueError, match="Valid parameters: alpha"):
        diffround.DiffRound("soft_round", slope=3.0)
    with pytest.raises(ValueError, match="Received: alpha=-1"):
        diffround.DiffRound("soft_round", alpha=-1)
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) seed for method 'ste'"):
        diffround.DiffRound("ste", seed=1)
    with pytest.raises(ValueError, match="Received: seed='x'"):
        diffround.DiffRound("noise", seed="x")
    with pytest.raises(ValueError, match="Expected one of sine, clamp"):
        diffround.DiffRound("round")


def test_compute_output_shape_is_input_shape():
    layer = diffround.DiffRound("soft_round")
    assert layer.compute_output_shape((None, 3, 5)) == (None, 3, 5)


def test_gradient_reaches_inputs_in_training_mode_only():
    x = tf.constant([[0.2, 0.7]])
    layer = diffround.DiffRound("ste")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        train = layer(x, training=True)
        infer = layer(x, training=False)
    np.testing.assert_array_equal(tape.gradient(train, x).numpy(), [[1.0, 1.0]])
    assert tape.gradient(infer, x) is None  # tf.round has no gradient


def test_numpy_scalars_are_accepted_as_parameters():
    layer = diffround.DiffRound(
        "binary_concrete",
        temperature=np.float32(0.5),
        straight_through=np.bool_(False),
        seed=np.int64(3),
    )
    assert layer.current_params() == {"temperature": 0.5, "straight_through": False}
    assert layer.get_config()["seed"] == 3 and isinstance(layer.get_config()["seed"], int)
    assert diffround.DiffRound("fourier", terms=np.int64(6)).current_params() == {"terms": 6}
    annealer = diffround.Annealer("alpha", np.float64(1.0), np.float32(4.0), np.int64(3))
    assert annealer.duration == 3
