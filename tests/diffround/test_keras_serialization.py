"""get_config/from_config, `diffround.get`, and `.keras` round trips for every method."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import CASES

import diffround


def _case_id(case):
    method, params = case
    return method + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_get_config_from_config_round_trip(case):
    method, params = case
    layer = diffround.DiffRound(method, name="rounding", **params)
    config = layer.get_config()
    clone = diffround.DiffRound.from_config(config)
    assert clone.get_config() == config
    assert clone.method == method
    x = tf.constant(np.linspace(-1, 2, 25, dtype=np.float32)[None, :])
    np.testing.assert_array_equal(clone.relaxed(x).numpy(), layer.relaxed(x).numpy())


@pytest.mark.parametrize("method", diffround.METHODS)
def test_keras_serialize_deserialize_every_registered_name(method):
    layer = diffround.DiffRound(method)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, diffround.DiffRound)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize("method", diffround.METHODS)
def test_get_resolves_name_dict_instance_and_layer(method):
    by_name = diffround.get(method)
    assert by_name.method == method
    assert diffround.get(by_name) is by_name
    assert diffround.get(by_name.get_config()) == by_name
    layer = diffround.DiffRound(method)
    # A layer holds float parameters in float32 variables: equal up to float32.
    expected = {k: pytest.approx(v, rel=1e-7) for k, v in by_name.params.items()}
    for identifier in (layer, layer.get_config(), keras.saving.serialize_keras_object(layer)):
        resolved = diffround.get(identifier)
        assert resolved.method == method
        assert resolved.params == expected


def test_get_flat_config_with_params_and_errors():
    s = diffround.get({"method": "soft_round", "alpha": 3.0})
    assert s.params == {"alpha": 3.0}
    x = tf.constant([0.3, 0.6])
    np.testing.assert_array_equal(s(x).numpy(), diffround.soft_round(x, 3.0).numpy())
    np.testing.assert_array_equal(s(x, training=False).numpy(), [0.0, 1.0])
    with pytest.raises(ValueError, match="Expected one of"):
        diffround.get("nearest")
    with pytest.raises(ValueError, match="'method' key"):
        diffround.get({"alpha": 3.0})
    with pytest.raises(ValueError, match="Could not interpret"):
        diffround.get(3)


def _model(method, **params):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="sigmoid", name="dense")(inputs)
    outputs = diffround.DiffRound(method, name="rounding", **params)(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("case", CASES[::2], ids=_case_id)
def test_keras_file_round_trip_keeps_outputs_and_parameters(case, tmp_path):
    method, params = case
    model = _model(method, **params)
    x = np.random.default_rng(1).uniform(-0.5, 1.5, size=(5, 6)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    layer, original = loaded.get_layer("rounding"), model.get_layer("rounding")
    assert layer.get_config() == original.get_config()
    np.testing.assert_array_equal(
        layer.relaxed(tf.constant(x)).numpy(), original.relaxed(tf.constant(x)).numpy()
    )


def test_annealed_values_survive_keras_file_and_from_config(tmp_path):
    model = _model("soft_round", alpha=1.0)
    layer = model.get_layer("rounding")
    layer.parameter_variables["alpha"].assign(7.5)
    layer.anneal_step.assign(3)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").get_layer("rounding")
    assert float(loaded.parameter_variables["alpha"].numpy()) == 7.5
    assert int(loaded.anneal_step.numpy()) == 3
    clone = diffround.DiffRound.from_config(layer.get_config())
    assert float(clone.parameter_variables["alpha"].numpy()) == 7.5
    rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.get_layer("rounding").current_params() == {"alpha": 7.5}
