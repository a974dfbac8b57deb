"""The bundled tasks' SavedModels against the serving contract (docs/contract.md, section 2)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import diffround
from diffround.export import CURVE_POINTS, METADATA_PATH
from model import tasks, train
from model.data import decode_base, load_split

# Smooth surrogates, so the grad signature's Jacobians have a finite-difference check.
CASES = {
    "digit-bits/soft_round": train.TrainConfig(
        task="digit-bits",
        method="soft_round",
        anneal={
            "parameter": "alpha",
            "schedule": "linear",
            "start": 1.0,
            "end": 4.0,
            "unit": "epoch",
            "duration": None,
        },
        epochs=2,
    ),
    "digit-hash/sigmoid": train.TrainConfig(
        task="digit-hash", method="sigmoid", params={"slope": 6.0}, epochs=1
    ),
    "digit-levels/soft_round": train.TrainConfig(
        task="digit-levels", method="soft_round", params={"alpha": 3.0}, epochs=2
    ),
}


def soft_round_reference(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """soft_round and its derivative in float64 NumPy (Agustsson & Theis 2020)."""
    x = x.astype(np.float64)
    m = np.floor(x) + 0.5
    denominator = 2.0 * np.tanh(alpha / 2.0)
    value = m + np.tanh(alpha * (x - m)) / denominator
    derivative = alpha / np.cosh(alpha * (x - m)) ** 2 / denominator
    return value, derivative


def sigmoid_reference(x: np.ndarray, slope: float, center: float) -> tuple[np.ndarray, np.ndarray]:
    """The shifted logistic and its derivative in float64 NumPy."""
    s = 1.0 / (1.0 + np.exp(-slope * (x.astype(np.float64) - center)))
    return s, slope * s * (1.0 - s)


def reference(method: str, params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "soft_round":
        return soft_round_reference(x, params["alpha"])
    return sigmoid_reference(x, params["slope"], params["center"])


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> train.TrainResult:
    root = tmp_path_factory.mktemp("export")
    return train.train_and_export(CASES[request.param], root, verbose=0)


@pytest.fixture(scope="module")
def split():
    return load_split()


def model_input(result, x):
    spec = result.task_model.spec
    return spec.input_name, tasks.model_inputs(spec, x)


def test_savedmodel_serves_in_a_process_without_diffround(exported, split, tmp_path):
    name, x = model_input(exported, split.x_test[:7])
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(exported.path)!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        sigs = loaded.signatures
        out = {{"signatures": sorted(sigs)}}
        for sig in ("serving_default", "serve", "grad"):
            result = sigs[sig](**{{{name!r}: x}})
            out[sig] = {{k: v.numpy().tolist() for k, v in result.items()}}
            out[sig + ":shapes"] = {{k: [list(v.shape), v.dtype.name] for k, v in result.items()}}
        one_row = sigs["serving_default"](**{{{name!r}: x[:1]}})
        out["one_row"] = {{k: v.numpy().tolist() for k, v in one_row.items()}}
        out["modules"] = [m for m in ("diffround", "model") if m in sys.modules]
        print(json.dumps(out))
        """
    )
    # Run from an empty directory so neither package is even on the path.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["modules"] == []
    assert out["signatures"] == ["grad", "serve", "serving_default"]
    meta = exported.metadata
    spec = exported.task_model.spec
    keras_out = exported.task_model.export_model(x, training=False)
    if not isinstance(keras_out, dict):
        keras_out = {spec.rounding_name: keras_out}
    assert sorted(out["serving_default"]) == sorted(o["name"] for o in meta["outputs"])
    for output, value in keras_out.items():
        served = np.array(out["serving_default"][output], np.float32)
        if output == spec.rounding_name:
            np.testing.assert_array_equal(served, np.asarray(value))
        else:  # float outputs: graph and eager kernels may differ in the last ulp
            np.testing.assert_allclose(served, np.asarray(value), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["serve"][output], served)
        np.testing.assert_array_equal(out["one_row"][output], served[:1])
    code = np.array(out["serving_default"][spec.rounding_name])
    assert code.shape == (7, spec.code_bits)
    assert set(np.unique(code)) <= set(range(spec.levels))
    np.testing.assert_array_equal(out["grad"][f"{spec.rounding_name}__hard"], code)
    # Every key the metadata declares, with its shape.
    expected = {}
    for output in meta["outputs"]:
        keys = meta["grad"]["outputs"][output["name"]]
        expected[keys["relaxed"]] = [[7, *output["shape"][1:]], "float32"]
        for jacobian in keys["jacobians"].values():
            expected[jacobian] = [[7, *output["shape"][1:], *spec.input_shape], "float32"]
    for layer in meta["rounding_layers"]:
        for key in meta["grad"]["layers"][layer["name"]].values():
            expected[key] = [[7, *layer["shape"][1:]], "float32"]
    assert out["grad:shapes"] == expected


def test_grad_jacobians_match_central_finite_differences(exported, split):
    grad = tf.saved_model.load(str(exported.path)).signatures["grad"]
    name, rows = model_input(exported, split.x_test[[0, 5, 17]])
    meta = exported.metadata
    out = grad(**{name: tf.constant(rows)})
    eps = 0.05  # in raw grey levels (0..16): small next to the model's 1/16 rescale
    for keys in meta["grad"]["outputs"].values():
        jacobian = out[keys["jacobians"][name]].numpy()
        for row, expected in zip(rows, jacobian, strict=True):
            steps = np.eye(64, dtype=np.float32).reshape(64, *row.shape) * eps
            plus = grad(**{name: tf.constant(row + steps)})[keys["relaxed"]].numpy()
            minus = grad(**{name: tf.constant(row - steps)})[keys["relaxed"]].numpy()
            differences = (plus.astype(np.float64) - minus) / (2 * eps)  # [64, *out]
            differences = np.moveaxis(differences.reshape(64, -1), 0, 1)  # [out, 64]
            expected = expected.reshape(differences.shape)
            scale = np.abs(expected).max()
            assert scale > 1e-4, "the relaxed output must depend on the inputs"
            close = np.isclose(expected, differences, atol=2e-2 * scale, rtol=2e-2)
            # A step may cross a ReLU kink (the conv net): a few entries may differ there.
            assert close.mean() >= 0.97, f"{(~close).sum()} of {close.size} entries differ"
            np.testing.assert_allclose(
                np.median(np.abs(expected - differences)), 0, atol=1e-3 * scale
            )


def test_grad_local_derivative_and_surrogate_match_numpy_reference(exported, split):
    meta = exported.metadata
    name, x = model_input(exported, split.x_test[:50])
    out = tf.saved_model.load(str(exported.path)).signatures["grad"](**{name: tf.constant(x)})
    (layer,) = meta["rounding_layers"]
    keys = meta["grad"]["layers"][layer["name"]]
    pre_round = out[keys["pre_round"]].numpy()
    value, derivative = reference(layer["method"], layer["params"], pre_round)
    np.testing.assert_allclose(out[keys["surrogate"]].numpy(), value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[keys["local_grad"]].numpy(), derivative, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(out[keys["hard"]].numpy(), np.round(pre_round))


def test_metadata_is_complete_strict_json(exported, split):
    text = (exported.path / METADATA_PATH).read_text()

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    meta = json.loads(text, parse_constant=reject)
    spec = exported.task_model.spec
    assert meta["format"] == "diffround.savedmodel/v2"
    assert meta["version"] == int(exported.path.name) == 1
    assert meta["model_name"] == exported.path.parent.name == spec.name
    assert meta["task"] == spec.name and meta["description"] == spec.description
    (model_input_meta,) = meta["inputs"]
    assert model_input_meta["name"] == spec.input_name
    assert model_input_meta["shape"] == [-1, *spec.input_shape]
    assert model_input_meta["image_shape"] == [8, 8] and model_input_meta["range"] == [0.0, 16.0]
    outputs = {o["name"]: o for o in meta["outputs"]}
    code = outputs[spec.rounding_name]
    assert code["shape"] == [-1, spec.code_bits] and code["rounding_layer"] == spec.rounding_name
    assert code["grid"] == {"step": 1.0, "offset": 0.0, "min": None, "max": None}
    assert len(code["bits"]) == spec.code_bits
    (layer,) = meta["rounding_layers"]
    assert (
        layer["name"] == spec.rounding_name
        and layer["method"] == exported.metadata["rounding_layers"][0]["method"]
    )
    assert meta["decoding"] == spec.decoding
    if spec.name == "digit-hash":
        assert outputs["reconstruction"]["rounding_layer"] is None
        assert outputs["reconstruction"]["shape"] == [-1, 64]
        assert {"reconstruction_mse", "precision_at_10"} <= set(meta["metrics"])
    else:
        assert set(outputs) == {spec.rounding_name}
        assert "exact_match" in meta["metrics"]
    if spec.name == "digit-bits":
        assert meta["anneal"]["duration"] == meta["training"]["epochs"]
        assert layer["params"]["alpha"] == pytest.approx(meta["anneal"]["end"])
    assert meta["grad"]["omitted_jacobians"] == []
    assert "dead_gradient_share" in meta["metrics"]
    assert meta["training"]["command"].startswith("python -m model.train --task ")
    assert {"tensorflow", "keras", "diffround", "python"} <= set(meta["versions"])
    assert meta["created_at"].endswith("Z")
    # Examples: held-out rows, one per digit, with the served code.
    assert len(meta["examples"]) == 10
    assert sorted(e["label"] for e in meta["examples"]) == list(range(10))
    rows = np.array([e["inputs"][spec.input_name] for e in meta["examples"]], np.float32)
    assert rows.shape == (10, *spec.input_shape)
    served = (
        tf.saved_model.load(str(exported.path))
        .signatures["serving_default"](**{spec.input_name: tf.constant(rows)})[spec.rounding_name]
        .numpy()
    )
    np.testing.assert_array_equal(
        [e["outputs"][spec.rounding_name] for e in meta["examples"]], served
    )
    # The surrogate curve is the method's function at its final parameters.
    curve = layer["surrogate_curve"]
    x = np.array(curve["x"])
    assert len(x) == CURVE_POINTS and x[0] == -0.5 and x[-1] == 1.5
    value, derivative = reference(layer["method"], layer["params"], x)
    np.testing.assert_allclose(curve["value"], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(curve["derivative"], derivative, rtol=1e-3, atol=1e-5)


def test_digit_levels_rounds_to_base4_digits_that_decode_to_the_label(split):
    spec = tasks.DIGIT_LEVELS
    np.testing.assert_array_equal(
        tasks.code_targets(spec, np.arange(10)),
        [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3], [2, 0], [2, 1]],
    )
    np.testing.assert_array_equal(
        decode_base(tasks.code_targets(spec, split.y_test), base=4), split.y_test
    )
    assert spec.decoding == {
        "kind": "base_msb_first",
        "base": 4,
        "classes": 10,
        "output": "levels",
    }


@pytest.mark.parametrize("method", diffround.METHODS)
def test_every_method_exports_a_grad_signature_matching_the_library(method, tmp_path, split):
    config = train.TrainConfig(task="digit-bits", method=method, epochs=1)
    result = train.train_and_export(config, tmp_path, verbose=0)
    signatures = tf.saved_model.load(str(result.path)).signatures
    x = np.concatenate([split.x_test[:6], np.zeros((1, 64)), np.full((1, 64), 16.0)])
    out = signatures["grad"](inputs=tf.constant(x, tf.float32))
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())
    served = signatures["serving_default"](inputs=tf.constant(x, tf.float32))["bits"].numpy()
    assert set(np.unique(served)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out["bits__hard"].numpy(), served)
    params = result.metadata["rounding_layers"][0]["params"]
    value, local = diffround.local_gradient(out["bits__pre_round"], method, **params)
    np.testing.assert_allclose(
        out["bits__surrogate"].numpy(), np.asarray(value), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        out["bits__local_grad"].numpy(), np.asarray(local), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        out["bits__relaxed"].numpy(), np.asarray(value), rtol=1e-5, atol=1e-6
    )
