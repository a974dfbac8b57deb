"""Quantized layers, grids and LSQ: values, training, `.keras`, SavedModels without diffround."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround

X = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype(np.float32)
X_FLAT = X.reshape(6, 64)[:, :10]
X_SECOND = np.random.default_rng(1).normal(size=(11, 8, 8, 1)).astype(np.float32)

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    root, names = sys.argv[1], json.loads(sys.argv[2])
    data = np.load(root + "/inputs.npz")
    results = {}
    for name in names:
        loaded = tf.saved_model.load(root + "/" + name)
        x = tf.constant(data[name])
        x2 = tf.constant(data[name + "_second"])
        with tf.GradientTape() as tape:
            tape.watch(x)
            relaxed = loaded.relaxed(x)
        results[name] = {
            "serve": loaded.serve(x).numpy().tolist(),
            "serve_second": loaded.serve(x2).numpy().tolist(),
            "relaxed": relaxed.numpy().tolist(),
            "grad": tape.gradient(relaxed, x).numpy().tolist(),
        }
    results["diffround_imported"] = any(m.split(".")[0] == "diffround" for m in sys.modules)
    print(json.dumps(results))
    """
)


def _conv_model():
    keras.utils.set_random_seed(0)
    quantizer = diffround.LearnedStepRound(bits=4, signed=True, axis=-1)
    inputs = keras.Input((8, 8, 1))
    x = diffround.QuantizedConv2D(3, 3, kernel_quantizer=quantizer, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = diffround.QuantizedDense(4, kernel_quantizer=diffround.DiffRound("ste_sign"))(x)
    outputs = diffround.DiffRound("ste", step=0.5, bits=3, signed=True, name="q")(x)
    return keras.Model(inputs, outputs)


def _grid_model(method, **grid):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(5, name="dense")(inputs)
    outputs = diffround.DiffRound(method, name="q", **grid)(x)
    return keras.Model(inputs, outputs)


def _lsq_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(5, name="dense")(inputs)
    outputs = diffround.LearnedStepRound(bits=3, signed=True, name="q")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    model.fit(X_FLAT, X_FLAT[:, :5], epochs=2, verbose=0)
    return model


MODELS = {
    "conv": (_conv_model, X, X_SECOND),
    "stochastic_grid": (lambda: _grid_model("stochastic", step=0.25, bits=4, signed=True),
                        X_FLAT, X_FLAT[::-1]),
    "soft_round_noise_grid": (lambda: _grid_model("soft_round_noise", step=0.5, offset=0.25),
                              X_FLAT, X_FLAT[::-1]),
    "tern_grid": (lambda: _grid_model("ste_tern", step=0.1), X_FLAT, X_FLAT[::-1]),
    "codes": (lambda: _grid_model("sine", step=0.25, bits=2, return_codes=True), X_FLAT,
              X_FLAT[::-1]),
    "lsq": (_lsq_model, X_FLAT, X_FLAT[::-1]),
}  # fmt: skip


def _serve(model):
    return lambda x: model(x, training=False)


def _relaxed(model):
    """Every DiffRound in its relaxed form (the export's grad signature does the same)."""

    def run(x):
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, diffround.DiffRound):
                x = layer.relaxed(x)
            elif isinstance(layer, diffround.QuantizedDense | diffround.QuantizedConv2D):
                kernel = layer.kernel_quantizer.relaxed(layer.kernel)
                if isinstance(layer, diffround.QuantizedDense):
                    x = keras.ops.matmul(x, kernel) + layer.bias
                else:
                    x = layer.convolution_op(x, kernel) + layer.bias
            else:
                x = layer(x)
        return x

    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized_exports")
    arrays, expected = {}, {}
    for name, (make, x, x2) in MODELS.items():
        model = make()
        signature = [tf.TensorSpec([None, *x.shape[1:]], tf.float32)]
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", _serve(model), signature)
        archive.add_endpoint("relaxed", _relaxed(model), signature)
        archive.write_out(str(root / name), verbose=False)
        arrays[name], arrays[name + "_second"] = x, x2
        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            relaxed = _relaxed(model)(t)
        expected[name] = {
            "model": model,
            "serve": model.predict(x, verbose=0),
            "serve_second": model.predict(x2, verbose=0),
            "relaxed": relaxed.numpy(),
            "grad": tape.gradient(relaxed, t).numpy(),
        }
    np.savez(root / "inputs.npz", **arrays)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), json.dumps(list(MODELS))],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return expected, json.loads(result.stdout.strip().splitlines()[-1])


def test_loader_never_imports_diffround(exported):
    assert exported[1]["diffround_imported"] is False


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_quantized_models_match_keras_at_two_batch_sizes(exported, name):
    expected, loaded = exported
    np.testing.assert_array_equal(np.float32(loaded[name]["serve"]), expected[name]["serve"])
    np.testing.assert_array_equal(
        np.float32(loaded[name]["serve_second"]), expected[name]["serve_second"]
    )
    np.testing.assert_allclose(loaded[name]["relaxed"], expected[name]["relaxed"], atol=1e-5)
    np.testing.assert_allclose(loaded[name]["grad"], expected[name]["grad"], atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_outputs_lie_on_the_last_layers_grid(exported, name):
    expected, loaded = exported
    spec = expected[name]["model"].layers[-1].grid_spec()
    y = np.float64(loaded[name]["serve"])
    k = (y - spec["offset"]) / spec["step"]
    np.testing.assert_allclose(k, np.round(k), atol=1e-5)
    if spec["min"] is not None:
        assert y.min() >= spec["min"] - 1e-6 and y.max() <= spec["max"] + 1e-6


def test_quantized_dense_computes_with_the_exact_quantized_kernel():
    quantizer = diffround.DiffRound("ste", step=0.25, bits=3, signed=True)
    layer = diffround.QuantizedDense(3, kernel_quantizer=quantizer, activation="relu")
    x = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    y = layer(x).numpy()
    kernel = layer.kernel.numpy().astype(np.float64)
    q = np.clip(np.round(kernel / 0.25), -4, 3) * 0.25
    np.testing.assert_allclose(y, np.maximum(x @ q + layer.bias.numpy(), 0), rtol=1e-6, atol=1e-6)
    # In training the kernel's gradient is the straight-through one (1 inside the range).
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(out, layer.kernel).numpy()
    inside = (kernel / 0.25 > -4) & (kernel / 0.25 < 3)
    active = (x @ q + layer.bias.numpy() > 0).astype(np.float64)
    np.testing.assert_allclose(grad, (x.T @ active) * inside, rtol=1e-5, atol=1e-6)


def test_quantized_conv_lsq_starts_from_the_kernel_and_trains(tmp_path):
    model = _conv_model()
    conv = model.get_layer("conv")
    kernel = conv.kernel.numpy()
    expected = 2 * np.mean(np.abs(kernel), axis=(0, 1, 2)) / np.sqrt(7)
    np.testing.assert_allclose(conv.kernel_quantizer.step_variable.numpy(), expected, rtol=1e-5)
    y = np.sign(X.reshape(6, 64)[:, :4]).astype(np.float32)
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    before = conv.kernel_quantizer.step_variable.numpy().copy()
    history = model.fit(X, y, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.array_equal(before, conv.kernel_quantizer.step_variable.numpy())
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_grids_and_lsq_under_mixed_precision_and_xla(policy):
    x = np.random.default_rng(3).normal(size=(32, 6)).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            diffround.QuantizedDense(
                6, kernel_quantizer=diffround.LearnedStepRound(bits=4, signed=True, axis=-1),
                dtype=policy,
            ),
            diffround.DiffRound("stochastic", step=0.25, bits=4, signed=True, dtype=policy),
        ]
    )  # fmt: skip
    model.compile("adam", "mse", jit_compile=True)
    history = model.fit(x, np.clip(x, -2, 1.75), epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    y = model.predict(x, verbose=0).astype(np.float64)
    assert y.dtype == np.float64 and np.all(y >= -2) and np.all(y <= 1.75)
    np.testing.assert_array_equal(y / 0.25, np.round(y / 0.25))
