"""The exported SavedModel against the serving contract (docs/contract.md, section 2)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import diffround
from model import train
from model.data import load_split
from model.export import CURVE_POINTS, METADATA_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]

# Smooth surrogates, so the grad signature's Jacobian has a finite-difference check.
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


def test_savedmodel_serves_in_a_process_without_diffround(exported, split, tmp_path):
    x = split.x_test[:7]
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(exported.path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        sigs = loaded.signatures
        out = {{"signatures": sorted(sigs)}}
        for name in ("serving_default", "serve"):
            out[name] = sigs[name](inputs=tf.constant(x))["outputs"].numpy().tolist()
        one_row = sigs["serving_default"](inputs=tf.constant(x[:1]))
        out["one_row"] = one_row["outputs"].numpy().tolist()
        grad = sigs["grad"](inputs=tf.constant(x))
        out["grad"] = {{k: [list(v.shape), v.dtype.name] for k, v in grad.items()}}
        out["grad_hard"] = grad["hard"].numpy().tolist()
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
    k = exported.task_model.spec.code_bits
    served = np.array(out["serving_default"])
    assert served.shape == (7, k)
    assert set(np.unique(served)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out["serve"], served)
    np.testing.assert_array_equal(out["grad_hard"], served)
    # A second batch size gives the same row.
    np.testing.assert_array_equal(out["one_row"], served[:1])
    # Equal to the Keras model's hard inference.
    keras_hard = exported.task_model.rounding(
        exported.task_model.encoder(x, training=False), training=False
    )
    np.testing.assert_array_equal(served, np.asarray(keras_hard))
    assert out["grad"] == {
        "hard": [[7, k], "float32"],
        "surrogate": [[7, k], "float32"],
        "pre_round": [[7, k], "float32"],
        "local_grad": [[7, k], "float32"],
        "input_grad": [[7, k, 64], "float32"],
    }


def test_grad_input_gradients_match_central_finite_differences(exported, split):
    grad = tf.saved_model.load(str(exported.path)).signatures["grad"]
    rows = split.x_test[[0, 5, 17]].astype(np.float32)
    jacobian = grad(inputs=tf.constant(rows))["input_grad"].numpy()
    eps = 0.05  # in raw grey levels (0..16): small next to the model's 1/16 rescale
    for row, expected in zip(rows, jacobian, strict=True):
        step = np.eye(64, dtype=np.float32) * eps
        plus = grad(inputs=tf.constant(row + step))["surrogate"].numpy().astype(np.float64)
        minus = grad(inputs=tf.constant(row - step))["surrogate"].numpy().astype(np.float64)
        finite_differences = ((plus - minus) / (2 * eps)).T  # [K, 64]
        scale = np.abs(expected).max()
        assert scale > 1e-4, "the surrogate must depend on the inputs"
        np.testing.assert_allclose(expected, finite_differences, atol=2e-2 * scale, rtol=2e-2)


def test_grad_local_derivative_and_surrogate_match_numpy_reference(exported, split):
    meta = exported.metadata
    out = tf.saved_model.load(str(exported.path)).signatures["grad"](
        inputs=tf.constant(split.x_test[:50])
    )
    pre_round = out["pre_round"].numpy()
    value, derivative = reference(meta["method"], meta["params"], pre_round)
    np.testing.assert_allclose(out["surrogate"].numpy(), value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["local_grad"].numpy(), derivative, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(out["hard"].numpy(), np.round(pre_round))
    # The input Jacobian is the chain rule through the local derivative.
    assert np.all(np.isfinite(out["input_grad"].numpy()))


def test_metadata_is_complete_strict_json(exported, split):
    text = (exported.path / METADATA_PATH).read_text()

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    meta = json.loads(text, parse_constant=reject)
    expected_keys = {
        "format",
        "model_name",
        "version",
        "task",
        "description",
        "method",
        "params",
        "anneal",
        "inputs",
        "outputs",
        "decoding",
        "metrics",
        "training",
        "versions",
        "created_at",
        "examples",
        "surrogate_curve",
    }
    assert expected_keys <= set(meta)
    spec = exported.task_model.spec
    assert meta["format"] == "diffround.savedmodel/v1"
    assert meta["version"] == int(exported.path.name) == 1
    assert meta["model_name"] == exported.path.parent.name == spec.name
    assert meta["task"] == spec.name
    assert meta["inputs"][0]["name"] == "inputs" and meta["inputs"][0]["shape"] == [-1, 64]
    assert meta["outputs"][0]["shape"] == [-1, spec.code_bits]
    assert len(meta["outputs"][0]["bits"]) == spec.code_bits
    if spec.name == "digit-bits":
        assert meta["decoding"] == {"kind": "binary_msb_first", "classes": 10}
        assert {"exact_match", "bit_accuracy"} <= set(meta["metrics"])
        assert meta["anneal"]["duration"] == meta["training"]["epochs"]
        assert meta["params"]["alpha"] == pytest.approx(meta["anneal"]["end"])
    else:
        assert meta["decoding"] is None
        assert {"reconstruction_mse", "precision_at_10"} <= set(meta["metrics"])
    assert "dead_gradient_share" in meta["metrics"]
    assert meta["training"]["command"].startswith("python -m model.train --task ")
    assert {"tensorflow", "keras", "diffround", "python"} <= set(meta["versions"])
    assert meta["versions"]["tensorflow"] == tf.__version__
    assert meta["created_at"].endswith("Z")
    # Examples: held-out rows, one per digit, with the served outputs.
    assert len(meta["examples"]) == 10
    assert sorted(e["label"] for e in meta["examples"]) == list(range(10))
    served = (
        tf.saved_model.load(str(exported.path))
        .signatures["serving_default"](
            inputs=tf.constant([e["inputs"] for e in meta["examples"]], tf.float32)
        )["outputs"]
        .numpy()
    )
    np.testing.assert_array_equal([e["outputs"] for e in meta["examples"]], served)
    # The surrogate curve is the method's function at its final parameters.
    curve = meta["surrogate_curve"]
    x = np.array(curve["x"])
    assert len(x) == CURVE_POINTS and x[0] == -0.5 and x[-1] == 1.5
    value, derivative = reference(meta["method"], meta["params"], x)
    np.testing.assert_allclose(curve["value"], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(curve["derivative"], derivative, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", diffround.METHODS)
def test_every_method_exports_a_grad_signature_matching_the_library(method, tmp_path, split):
    config = train.TrainConfig(task="digit-bits", method=method, epochs=1)
    result = train.train_and_export(config, tmp_path, verbose=0)
    signatures = tf.saved_model.load(str(result.path)).signatures
    x = np.concatenate([split.x_test[:6], np.zeros((1, 64)), np.full((1, 64), 16.0)])
    out = signatures["grad"](inputs=tf.constant(x, tf.float32))
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())
    served = signatures["serving_default"](inputs=tf.constant(x, tf.float32))["outputs"].numpy()
    assert set(np.unique(served)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out["hard"].numpy(), served)
    value, local = diffround.local_gradient(out["pre_round"], method, **result.metadata["params"])
    np.testing.assert_allclose(out["surrogate"].numpy(), np.asarray(value), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["local_grad"].numpy(), np.asarray(local), rtol=1e-4, atol=1e-6)
