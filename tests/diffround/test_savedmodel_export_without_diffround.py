"""Every method exports as a SavedModel that a process without `diffround` can serve.

The loading process also differentiates the exported surrogate endpoint.

One module-scoped fixture exports all methods once; one subprocess (which
never imports `diffround`, and asserts so) loads them all.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import REFERENCES, grid

import diffround

SIGNATURE = [tf.TensorSpec([None, 6], tf.float32, name="inputs")]
PRE_ROUND_SIGNATURE = [tf.TensorSpec([None, 4], tf.float32, name="pre_round")]
PRE_ROUND = grid().reshape(-1, 4)
X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
X_SECOND_BATCH = np.random.default_rng(1).normal(size=(13, 6)).astype(np.float32)
NO_CUSTOM_GRADIENTS = "ste_custom-no-custom-gradients"

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    root, names = sys.argv[1], json.loads(sys.argv[2])
    data = np.load(root + "/inputs.npz")
    pre_round = tf.constant(data["pre_round"])
    results = {}
    for name in names:
        loaded = tf.saved_model.load(root + "/" + name)
        out = {"signatures": sorted(loaded.signatures)}
        out["serve"] = loaded.serve(tf.constant(data["x"])).numpy().tolist()
        out["serve_second"] = loaded.serve(tf.constant(data["x2"])).numpy().tolist()
        x = tf.constant(data["x"])
        try:
            with tf.GradientTape() as tape:
                tape.watch(x)
                relaxed = loaded.relaxed(x)
            out["relaxed"] = relaxed.numpy().tolist()
            out["grad"] = tape.gradient(relaxed, x).numpy().tolist()
            with tf.GradientTape() as tape:
                tape.watch(pre_round)
                local = loaded.rounding_relaxed(pre_round)
            out["local_value"] = local.numpy().tolist()
            out["local_grad"] = tape.gradient(local, pre_round).numpy().tolist()
        except Exception as error:  # the known trap, reported to the test
            out["error"] = type(error).__name__ + ": " + str(error)[:300]
        results[name] = out
    results["diffround_imported"] = any(m.split(".")[0] == "diffround" for m in sys.modules)
    print(json.dumps(results))
    """
)


def _model(method):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    probabilities = keras.layers.Dense(4, activation="sigmoid", name="dense")(inputs)
    outputs = diffround.DiffRound(method, name="rounding")(probabilities)
    return keras.Model(inputs, outputs)


def _relaxed_fn(model):
    dense, rounding = model.get_layer("dense"), model.get_layer("rounding")
    return lambda x: rounding.relaxed(dense(x))


def _export(model, path, options=None):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=SIGNATURE)
    archive.add_endpoint("relaxed", _relaxed_fn(model), input_signature=SIGNATURE)
    archive.add_endpoint(
        "rounding_relaxed", model.get_layer("rounding").relaxed, input_signature=PRE_ROUND_SIGNATURE
    )
    archive.write_out(str(path), options=options, verbose=False)


def _keras_side(model):
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        relaxed = _relaxed_fn(model)(x)
    return {
        "serve": model.predict(X, verbose=0),
        "serve_second": model.predict(X_SECOND_BATCH, verbose=0),
        "relaxed": relaxed.numpy(),
        "grad": tape.gradient(relaxed, x).numpy(),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports every method once; returns (keras-side results, loaded-side results)."""
    root = tmp_path_factory.mktemp("exports")
    np.savez(root / "inputs.npz", x=X, x2=X_SECOND_BATCH, pre_round=PRE_ROUND)
    expected = {}
    for method in diffround.METHODS:
        model = _model(method)
        _export(model, root / method)
        expected[method] = _keras_side(model)
    # The trap: the same ste_custom model saved without its custom gradient.
    _export(
        _model("ste_custom"),
        root / NO_CUSTOM_GRADIENTS,
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    names = [*diffround.METHODS, NO_CUSTOM_GRADIENTS]
    env_free = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert env_free.returncode == 0, env_free.stderr[-3000:]
    return expected, json.loads(env_free.stdout.strip().splitlines()[-1])


def test_loading_process_never_imports_diffround(exported):
    _, loaded = exported
    assert loaded["diffround_imported"] is False


@pytest.mark.parametrize("method", diffround.METHODS)
def test_exported_inference_equals_keras_and_is_exactly_binary(exported, method):
    expected, loaded = exported
    result = loaded[method]
    assert {"serve", "serving_default", "relaxed"} <= set(result["signatures"])
    for key in ("serve", "serve_second"):
        served = np.asarray(result[key], dtype=np.float32)
        np.testing.assert_array_equal(served, expected[method][key])
        assert set(np.unique(served)) <= {0.0, 1.0}
    assert np.asarray(result["serve_second"]).shape == (13, 4)


@pytest.mark.parametrize("method", diffround.METHODS)
def test_gradient_through_exported_surrogate_endpoint_is_correct(exported, method):
    expected, loaded = exported
    result = loaded[method]
    assert "error" not in result, result.get("error")
    np.testing.assert_allclose(result["relaxed"], expected[method]["relaxed"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result["grad"], expected[method]["grad"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", diffround.METHODS)
def test_exported_local_gradient_matches_numpy_reference(exported, method):
    _, loaded = exported
    result = loaded[method]
    value, grad = REFERENCES[method](PRE_ROUND.ravel().astype(np.float64))
    value, grad = value.reshape(PRE_ROUND.shape), grad.reshape(PRE_ROUND.shape)
    np.testing.assert_allclose(result["local_value"], value, rtol=1e-5, atol=1e-5)
    scale = max(1.0, float(np.max(np.abs(grad))))
    np.testing.assert_allclose(result["local_grad"], grad, rtol=1e-4, atol=1e-4 * scale)
    if method in ("ste", "ste_custom"):
        np.testing.assert_array_equal(result["local_grad"], 1.0)


def test_exported_ste_custom_gradient_is_that_of_identity(exported):
    expected, loaded = exported
    # ste_custom and ste share the same dense weights (same seed): same gradient.
    np.testing.assert_allclose(
        loaded["ste_custom"]["grad"], expected["ste"]["grad"], rtol=1e-5, atol=1e-6
    )
    assert np.any(np.asarray(loaded["ste_custom"]["grad"]) != 0)


def test_ste_custom_saved_without_custom_gradients_cannot_be_differentiated(exported):
    """What breaks without `experimental_custom_gradients=True`: forward works, gradient fails."""
    expected, loaded = exported
    result = loaded[NO_CUSTOM_GRADIENTS]
    np.testing.assert_array_equal(np.asarray(result["serve"], np.float32), expected["ste"]["serve"])
    assert "error" in result
    assert "LookupError" in result["error"] and "IdentityN" in result["error"]
