"""app/runtimes.py: SavedModel, TFLite and graph runners, and choose_runner's proof of equality.

Every SavedModel here is built by the test itself (a Keras `model.export()`, a
`tf.Module` with named multi-inputs of rank 1..4 and int and float dtypes, a
TF1 `half_plus_two`, a signature with ops TFLite lacks) except the last,
trained by `python -m model.train` with few epochs. Answers are checked
against NumPy references, and TFLite and the graph runtime against the
SavedModel bit for bit.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import tf1_graph_export

from app import runtimes
from app.graph_runner import GraphRunner
from app.predictor import ModelCallError, SavedModelRunner, TensorSpec
from app.runtimes import TFLiteRunner, choose_runner

REPO_ROOT = Path(__file__).resolve().parents[2]


def _bits_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a
    )


# --- models -------------------------------------------------------------------------------


def _keras_model(path: Path) -> tuple[Path, list[np.ndarray]]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,), name="features"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.export(str(path), verbose=False)
    return path, [w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()]


class MultiInput(tf.Module):
    """Named inputs of rank 1..4, float32/int32/int64; outputs with NumPy formulas below."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable([1.5, -2.0, 0.25], dtype=tf.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="a"),
            tf.TensorSpec([None, 3], tf.float32, name="b"),
            tf.TensorSpec([None, 2, 2], tf.int32, name="c"),
            tf.TensorSpec([None, 2, 2, 2], tf.float32, name="d"),
            tf.TensorSpec([None, 2], tf.int64, name="e"),
        ]
    )
    def __call__(self, a, b, c, d, e):
        return {
            "mixed": a[:, None] * b * self.scale + tf.reduce_sum(d, axis=[2, 3])[:, :1],
            "count": tf.reduce_sum(c, axis=[1, 2]) * 2 + 1,
            "shifted": e * 3 - 1,
            "doubled": d * 2.0,
        }


def _multi_reference(a, b, c, d, e) -> dict[str, np.ndarray]:
    scale = np.array([1.5, -2.0, 0.25], np.float32)
    return {
        "mixed": a[:, None] * b * scale + d.sum(axis=(2, 3))[:, :1],
        "count": (c.sum(axis=(1, 2)) * 2 + 1).astype(np.int32),
        "shifted": e * 3 - 1,
        "doubled": d * np.float32(2.0),
    }


def _multi_probe(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.integers(-8, 8, rows).astype(np.float32) / 4,
        "b": rng.integers(-8, 8, (rows, 3)).astype(np.float32) / 2,
        "c": rng.integers(-5, 5, (rows, 2, 2)).astype(np.int32),
        "d": rng.integers(-4, 4, (rows, 2, 2, 2)).astype(np.float32) / 8,
        "e": rng.integers(-1000, 1000, (rows, 2)).astype(np.int64),
    }


class WithGradient(tf.Module):
    """`y` and its input gradient: Erfc and the gradient ops are not TFLite builtins, and
    Erfc has no rewrite in `app.lowering` (so this one never converts)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[1.0, -1.0], [0.5, 2.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def grad(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.math.erfc(tf.nn.relu(x @ self.w)), axis=1)
        return {"y": y, "dy_dx": tape.gradient(y, x)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every hand-built SavedModel, saved and loaded back: `{name: (path, loaded)}`
    (the Keras one also with its weights)."""
    root = tmp_path_factory.mktemp("runtimes")
    keras_path, weights = _keras_model(root / "keras")
    multi = MultiInput()
    tf.saved_model.save(multi, str(root / "multi"), signatures={"serving_default": multi.__call__})
    grad = WithGradient()
    tf.saved_model.save(grad, str(root / "grad"), signatures={"grad": grad.grad})
    tf1_graph_export(root / "hpt", declared_shape=[None], matmul=False)
    paths = {
        "keras": keras_path,
        "multi": root / "multi",
        "grad": root / "grad",
        "hpt": root / "hpt",
    }
    out = {name: (str(p), tf.saved_model.load(str(p))) for name, p in paths.items()}
    out["keras"] = (*out["keras"], weights)
    return out


# --- runners ------------------------------------------------------------------------------


def test_specs_come_from_the_signature(built):
    _, loaded = built["multi"]
    runner = SavedModelRunner("serving_default", loaded.signatures["serving_default"])
    assert runner.name == "serving_default"
    assert runner.inputs["a"] == TensorSpec("a", np.dtype(np.float32), (-1,))
    assert runner.inputs["c"] == TensorSpec("c", np.dtype(np.int32), (-1, 2, 2))
    assert runner.inputs["d"].shape == (-1, 2, 2, 2)
    assert runner.inputs["e"].dtype == np.int64
    assert runner.outputs["count"] == TensorSpec("count", np.dtype(np.int32), (-1,))
    assert runner.outputs["doubled"].shape == (-1, 2, 2, 2)


def test_multi_input_runners_match_numpy_and_each_other(built):
    path, loaded = built["multi"]
    runner, reason = choose_runner(path, loaded, "serving_default", [_multi_probe(3, 0)])
    assert isinstance(runner, TFLiteRunner), reason
    reference = SavedModelRunner("serving_default", loaded.signatures["serving_default"])
    for rows in (1, 5, 64, 2, 0):
        probe = _multi_probe(rows, rows + 10)
        want = _multi_reference(**probe)
        got_saved, got_lite = reference(probe), runner(probe)
        for name, value in want.items():
            np.testing.assert_array_equal(got_saved[name], value, err_msg=name)
        assert _bits_equal(got_saved, got_lite), rows


def test_tflite_runner_reused_across_batch_sizes_stays_equal(built):
    """The known pitfall: one interpreter reused across shapes (NaN at batch 64 once)."""
    path, loaded = built["multi"]
    runner, reason = choose_runner(path, loaded, "serving_default", [_multi_probe(2, 1)])
    assert isinstance(runner, TFLiteRunner), reason
    first_probe = _multi_probe(64, 99)
    first = runner(first_probe)
    for rows in (1, 64, 2, 7, 64, 1, 64, 3, 128, 1, 64):
        probe = _multi_probe(rows, 100 + rows)
        got = runner(probe)
        assert not np.isnan(got["mixed"]).any()
        for name, value in _multi_reference(**probe).items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{name} at {rows} rows")
    # Answers are copies: later calls leave an earlier answer as it was.
    for name, value in _multi_reference(**first_probe).items():
        np.testing.assert_array_equal(first[name], value, err_msg=name)


@pytest.mark.parametrize("mode", ["auto", "graph"])
def test_tflite_and_graph_runners_are_thread_safe(built, mode):
    path, loaded = built["multi"]
    runner, reason = choose_runner(path, loaded, "serving_default", [_multi_probe(2, 1)], mode)
    assert isinstance(runner, TFLiteRunner if mode == "auto" else GraphRunner), reason
    cases = [_multi_probe(rows, rows) for rows in (1, 64, 7, 2)]
    wanted = [_multi_reference(**case) for case in cases]
    failures: list[str] = []

    def hammer(start: int) -> None:
        for i in range(200):
            j = (start + i) % len(cases)
            got = runner(cases[j])
            if any(not np.array_equal(got[k], v) for k, v in wanted[j].items()):
                failures.append(f"thread {start} call {i}")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_runners_refuse_bad_inputs_alike(built):
    path, loaded = built["hpt"]
    lite, reason = choose_runner(path, loaded, "serving_default", [{"x": np.arange(3.0)}])
    assert isinstance(lite, TFLiteRunner), reason
    saved = SavedModelRunner("serving_default", loaded.signatures["serving_default"])
    for runner in (lite, saved):
        with pytest.raises(ValueError, match="missing"):
            runner({})
        with pytest.raises(ValueError, match="unknown"):
            runner({"x": np.zeros(2, np.float32), "z": np.zeros(2, np.float32)})
        with pytest.raises((TypeError, ValueError)):
            runner({"x": np.array(["a"])})
        # float64 and int inputs are cast to float32, as tf.constant would.
        np.testing.assert_array_equal(runner({"x": np.array([2.0, 4.0])})["y"], [3.0, 4.0])
    # TFLite refuses a shape its signature does not declare; the TF1 graph itself takes it
    # (like TF Serving, the service checks a TF1 export's dtypes only, and its graph decides).
    with pytest.raises(ValueError, match="does not fit"):
        lite({"x": np.zeros((2, 2), np.float32)})
    with pytest.raises(TypeError, match="cannot be cast"):
        lite({"x": np.array(["a"])})
    assert saved({"x": np.zeros((2, 2), np.float32)})["y"].shape == (2, 2)


def test_half_plus_two_tf1_model_on_tflite(built):
    path, loaded = built["hpt"]
    probes = [{"x": np.array([0.0, 1.0, -3.5], np.float32)}, {"x": np.array([1e6], np.float32)}]
    runner, reason = choose_runner(path, loaded, "serving_default", probes)
    assert isinstance(runner, TFLiteRunner), reason
    assert runner.inputs == {"x": TensorSpec("x", np.dtype(np.float32), (-1,))}
    x = np.linspace(-100, 100, 501, dtype=np.float32)
    want = np.float32(0.5) * x + np.float32(2.0)
    np.testing.assert_array_equal(runner({"x": x})["y"], want)
    np.testing.assert_array_equal(runner({"x": x[:1]})["y"], want[:1])


def test_keras_export_on_tflite_matches_savedmodel(built):
    path, loaded, weights = built["keras"]
    rng = np.random.default_rng(3)
    probes = [{"features": rng.normal(size=(1, 6)).astype(np.float32)} for _ in range(3)]
    key = "serve"
    reference = SavedModelRunner(key, loaded.signatures[key])
    (name,) = reference.inputs
    probes = [{name: p["features"]} for p in probes]
    runner, reason = choose_runner(path, loaded, key, probes)
    w1, b1, w2, b2 = weights
    x = np.concatenate([p[name] for p in probes])
    want = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(runner({name: x})[next(iter(reference.outputs))], want, rtol=1e-5)
    if isinstance(runner, TFLiteRunner):
        for label, inputs in runtimes.probe_batches(probes, reference.inputs):
            assert _bits_equal(runner(inputs), reference(inputs)), label
    else:  # allowed only with a stated difference, never silently
        assert "differ" in reason, reason


def _erfc_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """`WithGradient.grad` in NumPy (float64): y = sum_j erfc(relu(x w)_j) and dy/dx."""
    w = np.array([[1.0, -1.0], [0.5, 2.0]])
    z = x.astype(np.float64) @ w
    y = np.vectorize(math.erfc)(np.maximum(z, 0)).sum(axis=1)
    # d erfc(u)/du = -2/sqrt(pi) exp(-u^2); relu passes the gradient where z > 0.
    dz = np.where(z > 0, -2 / math.sqrt(math.pi) * np.exp(-(z**2)), 0.0)
    return {"y": y, "dy_dx": dz @ w.T}


def test_unsupported_ops_fall_back_to_the_graph_runtime_with_the_op_names(built):
    path, loaded = built["grad"]
    probes = [{"x": np.array([[1.0, 2.0], [-1.0, 0.5]], np.float32)}]
    runner, reason = choose_runner(path, loaded, "grad", probes)
    assert isinstance(runner, GraphRunner), reason
    assert reason.startswith(
        "graph (frozen graph in the caller's thread, single-threaded executor): "
        "bit-identical to the SavedModel on 1 probes x 1/2/7/64 rows"
    )
    assert "TFLite not used (from_concrete_functions: conversion failed" in reason
    assert "Erfc" in reason and "ReluGrad" in reason
    assert "gradient ops lowered" not in reason  # Erfc has no rewrite: not tried
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.25, -3.0], [0.0, 0.0]], np.float32)
    reference = SavedModelRunner("grad", loaded.signatures["grad"])
    assert _bits_equal(runner({"x": x}), reference({"x": x}))
    for name, want in _erfc_reference(x).items():
        np.testing.assert_allclose(runner({"x": x})[name], want, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="Erfc"):
        choose_runner(path, loaded, "grad", probes, mode="tflite")


def test_different_answers_fall_back_and_forced_tflite_says_by_how_much(built, monkeypatch):
    """A conversion that answers differently (here: half_plus_three's) is never chosen in auto."""
    path, loaded = built["hpt"]

    other = tf.Module()
    other.f = tf.function(
        lambda x: {"y": 0.5 * x + 3.0},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    wrong = runtimes.convert_concrete_function(other.f.get_concrete_function(), other)
    monkeypatch.setattr(runtimes, "convert_concrete_function", lambda function, loaded: wrong)
    monkeypatch.setattr(runtimes, "convert_saved_model", lambda path, key: wrong)
    probes = [{"x": np.array([1.0, 2.0], np.float32)}]
    runner, reason = choose_runner(path, loaded, "serving_default", probes)
    assert isinstance(runner, GraphRunner), reason  # the next runtime, proven equal
    assert "probe 0 x 1 rows: output 'y': 1 of 1 values differ, largest difference 1" in reason
    np.testing.assert_array_equal(runner({"x": np.array([2.0], np.float32)})["y"], [3.0])
    forced, why = choose_runner(path, loaded, "serving_default", probes, mode="tflite")
    assert isinstance(forced, TFLiteRunner)
    assert why.startswith("tflite (from_concrete_functions, XNNPACK): forced by the setting")
    np.testing.assert_array_equal(forced({"x": np.array([2.0], np.float32)})["y"], [4.0])


def test_modes(built):
    path, loaded = built["hpt"]
    probe = [{"x": np.array([1.0], np.float32)}]
    runner, reason = choose_runner(path, loaded, "serving_default", probe, mode="savedmodel")
    assert isinstance(runner, SavedModelRunner) and reason == "savedmodel: forced by the setting"
    for mode in ("auto", "graph"):
        runner, reason = choose_runner(path, loaded, "serving_default", [], mode=mode)
        assert isinstance(runner, SavedModelRunner) and "no probe inputs" in reason
    runner, reason = choose_runner(path, loaded, "serving_default", [], mode="tflite")
    assert isinstance(runner, TFLiteRunner)
    with pytest.raises(ValueError, match="Expected one of"):
        choose_runner(path, loaded, "serving_default", probe, mode="fast")
    with pytest.raises(KeyError, match="no signature 'nope'"):
        choose_runner(path, loaded, "nope", probe)


# --- the graph runtime ----------------------------------------------------------------------


class Checked(tf.Module):
    """A graph that checks its own input (x >= 0) and a string signature."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def checked(self, x):
        with tf.control_dependencies([tf.debugging.assert_non_negative(x, message="x < 0")]):
            return {"root": tf.sqrt(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def strings(self, text):
        return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    module = Checked()
    path = tmp_path_factory.mktemp("checked") / "model"
    tf.saved_model.save(
        module, str(path), signatures={"checked": module.checked, "strings": module.strings}
    )
    return str(path), tf.saved_model.load(str(path))


def _graph(loaded, key: str, **options) -> tuple[GraphRunner, SavedModelRunner]:
    reference = SavedModelRunner(key, loaded.signatures[key])
    runner = GraphRunner(reference.function, key, reference.inputs, reference.outputs, **options)
    return runner, reference


@pytest.mark.parametrize("single_threaded", [True, False])
def test_graph_runner_is_bit_identical_to_the_savedmodel_and_numpy(built, single_threaded):
    _, loaded = built["multi"]
    runner, reference = _graph(loaded, "serving_default", single_threaded=single_threaded)
    assert runner.runtime == "graph" and runner.inputs == reference.inputs
    for rows in (1, 2, 7, 64, 0, 3):
        probe = _multi_probe(rows, 200 + rows)
        got = runner(probe)
        assert _bits_equal(got, reference(probe)), rows
        for name, value in _multi_reference(**probe).items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{name} at {rows} rows")
    _, keras_loaded, weights = built["keras"]
    runner, reference = _graph(keras_loaded, "serve", single_threaded=single_threaded)
    (name,) = reference.inputs
    x = np.random.default_rng(5).normal(size=(9, 6)).astype(np.float32)
    assert _bits_equal(runner({name: x}), reference({name: x}))
    w1, b1, w2, b2 = weights
    want = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(runner({name: x})[next(iter(reference.outputs))], want, rtol=1e-5)


def test_graph_runner_refuses_bad_inputs_like_the_tflite_runner(built):
    _, loaded = built["multi"]
    runner, _ = _graph(loaded, "serving_default")
    probe = _multi_probe(2, 0)
    with pytest.raises(ValueError, match="missing \\['e'\\]"):
        runner({k: v for k, v in probe.items() if k != "e"})
    with pytest.raises(ValueError, match="unknown \\['z'\\]"):
        runner({**probe, "z": probe["a"]})
    with pytest.raises(ValueError, match="does not fit"):
        runner({**probe, "b": np.zeros((2, 4), np.float32)})
    with pytest.raises(TypeError, match="cannot be cast"):
        runner({**probe, "c": probe["c"].astype(np.float32)})
    # float64 is cast to the signature's float32, as tf.constant would.
    wide = {**probe, "a": probe["a"].astype(np.float64)}
    assert _bits_equal(runner(wide), runner(probe))


def test_graph_runner_reports_the_graphs_own_checks_and_runs_strings(checked):
    path, loaded = checked
    good = {"x": np.array([[4.0, 0.25]], np.float32)}
    # The assertion's control flow (Switch) is beyond the single-threaded executor:
    # the default one serves, and the reason says why.
    runner, reason = choose_runner(path, loaded, "checked", [good], mode="graph")
    assert isinstance(runner, GraphRunner) and not runner.single_threaded, reason
    assert reason.startswith("graph (frozen graph in the caller's thread, default executor): ")
    assert "single-threaded executor: FailedPreconditionError: " in reason
    assert "does not support switch op" in reason
    reference = SavedModelRunner("checked", loaded.signatures["checked"])
    np.testing.assert_array_equal(runner(good)["root"], [[2.0, 0.5]])
    bad = {"x": np.array([[4.0, -1.0]], np.float32)}
    for each in (runner, reference):
        with pytest.raises(ModelCallError, match="x < 0"):
            each(bad)
    words, reference = _graph(loaded, "strings")
    text = {"text": np.array([b"abc", "d\u00e9".encode(), b""], dtype=object)}
    got, want = words(text), reference(text)
    assert got["upper"].dtype == object and list(got["upper"]) == list(want["upper"])
    assert list(got["upper"]) == [b"ABC", "D\u00e9".encode(), b""]  # ASCII letters only
    np.testing.assert_array_equal(got["length"], want["length"])
    assert runtimes.compare(reference, words, runtimes.probe_batches([text], words.inputs)) is None


def test_graph_mode_does_not_try_tflite(built):
    path, loaded = built["multi"]
    runner, reason = choose_runner(
        path, loaded, "serving_default", [_multi_probe(3, 0)], mode="graph"
    )
    assert isinstance(runner, GraphRunner) and runner.single_threaded, reason
    assert reason.endswith("TFLite not tried (graph mode)"), reason


def test_a_graph_runtime_that_differs_is_refused_and_said(built, monkeypatch):
    path, loaded = built["grad"]  # TFLite cannot run it (Erfc): the graph is next

    class OneUlpOff(GraphRunner):
        def __call__(self, inputs):
            out = super().__call__(inputs)
            return {**out, "y": np.nextafter(out["y"], np.float32(np.inf))}

    monkeypatch.setattr(runtimes, "GraphRunner", OneUlpOff)
    probes = [{"x": np.array([[1.0, 2.0]], np.float32)}]
    runner, reason = choose_runner(path, loaded, "grad", probes)
    assert isinstance(runner, SavedModelRunner)
    assert reason.startswith("savedmodel: TFLite not used (from_concrete_functions")
    assert (
        "; graph not used (frozen graph in the caller's thread, single-threaded executor: "
        "probe 0 x 1 rows: output 'y': 1 of 1 values differ" in reason
    )
    assert "default executor: probe 0 x 1 rows: output 'y': 1 of 1 values differ" in reason


def test_conversion_cache_keeps_flatbuffers_and_failures(built, tmp_path, monkeypatch):
    hpt_path, hpt = built["hpt"]
    grad_path, grad = built["grad"]
    probes = [{"x": np.array([1.0, -2.0], np.float32)}]
    grad_probes = [{"x": np.ones((1, 2), np.float32)}]
    first, _ = choose_runner(hpt_path, hpt, "serving_default", probes, cache_dir=tmp_path)
    assert isinstance(first, TFLiteRunner)
    _, why = choose_runner(grad_path, grad, "grad", grad_probes, cache_dir=tmp_path)
    names = sorted(p.name.split("-", 1)[1] for p in tmp_path.iterdir())
    assert names == ["from_concrete_functions.failed", "from_concrete_functions.tflite"]

    def no_conversion(*args):
        raise AssertionError("converted although cached")

    monkeypatch.setattr(runtimes, "convert_concrete_function", no_conversion)
    monkeypatch.setattr(runtimes, "convert_saved_model", no_conversion)
    again, reason = choose_runner(hpt_path, hpt, "serving_default", probes, cache_dir=tmp_path)
    assert isinstance(again, TFLiteRunner), reason
    np.testing.assert_array_equal(again({"x": np.array([4.0], np.float32)})["y"], [4.0])
    _, why_again = choose_runner(grad_path, grad, "grad", grad_probes, cache_dir=tmp_path)
    timing = re.compile(r"chosen in [0-9.]+ s")  # the graph runtime serves it, proven again
    assert timing.sub("", why_again) == timing.sub("", why) and "ReluGrad" in why
    # Another signature key is another entry: not found, so it would convert.
    other = runtimes.ConversionCache(tmp_path, hpt_path, "other")
    assert other.get("from_concrete_functions") == (None, None)


def test_example_probes_read_both_metadata_formats():
    one = {"inputs": TensorSpec("inputs", np.dtype(np.float32), (-1, 3))}
    two = {
        "image": TensorSpec("image", np.dtype(np.float32), (-1, 2, 1)),
        "k": TensorSpec("k", np.dtype(np.int64), (-1,)),
    }
    v1 = runtimes.example_probes([{"inputs": [1, 2, 3]}, {"inputs": [1, 2]}], one)
    assert len(v1) == 1 and v1[0]["inputs"].dtype == np.float32
    np.testing.assert_array_equal(v1[0]["inputs"], [[1, 2, 3]])
    v2 = runtimes.example_probes(
        [{"inputs": {"image": [[0.5], [1.5]], "k": 7}, "label": 3}, {"inputs": {"image": [[1]]}}],
        two,
    )
    assert len(v2) == 1
    assert v2[0]["image"].shape == (1, 2, 1) and v2[0]["k"].tolist() == [7]


def test_probe_batches_tile_each_probe_and_mix_them():
    specs = {"x": TensorSpec("x", np.dtype(np.float32), (-1, 2))}
    probes = [{"x": np.array([[1, 1]], np.float32)}, {"x": np.array([[2, 2], [3, 3]], np.float32)}]
    calls = dict(runtimes.probe_batches(probes, specs))
    assert list(calls) == [
        "probe 0 x 1 rows", "probe 0 x 2 rows", "probe 0 x 7 rows", "probe 0 x 64 rows",
        "probe 1 x 1 rows", "probe 1 x 2 rows", "probe 1 x 7 rows", "probe 1 x 64 rows",
        "2 probes mixed x 64 rows",
    ]  # fmt: skip
    np.testing.assert_array_equal(calls["probe 1 x 7 rows"]["x"][:, 0], [2, 3, 2, 3, 2, 3, 2])
    np.testing.assert_array_equal(calls["2 probes mixed x 64 rows"]["x"][:4, 0], [1, 2, 3, 1])


# --- a trained model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory, default_train_args) -> Path:
    """The default model trained by `python -m model.train` with the Makefile's arguments,
    but 2 epochs (seconds), into a temporary models root."""
    args = list(default_train_args)
    args[args.index("--epochs") + 1] = "2"
    root = tmp_path_factory.mktemp("trained")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "model.train", *args, "--models-root", str(root)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (version,) = (root / args[args.index("--name") + 1]).iterdir()
    return version


def test_trained_model_hard_outputs_bit_identical_over_held_out_set(trained_model_dir):
    import json

    from model.data import load_split

    loaded = tf.saved_model.load(str(trained_model_dir))
    metadata = json.loads((trained_model_dir / "assets.extra" / "diffround.json").read_text())
    probes = [
        {"inputs": np.asarray([e["inputs"]["inputs"]], np.float32)} for e in metadata["examples"]
    ]
    runner, reason = choose_runner(str(trained_model_dir), loaded, "serving_default", probes)
    assert isinstance(runner, TFLiteRunner), reason
    reference = SavedModelRunner("serving_default", loaded.signatures["serving_default"])
    held_out = load_split().x_test
    whole = reference({"inputs": held_out})
    assert _bits_equal(runner({"inputs": held_out}), whole)
    for size in (1, 64, 7):  # the same rows in other batch sizes on the same interpreter
        for start in range(0, len(held_out), size if size > 1 else 37):
            rows = held_out[start : start + size]
            got = runner({"inputs": rows})["bits"]
            np.testing.assert_array_equal(got, whole["bits"][start : start + size])
    assert set(np.unique(whole["bits"])) <= {0.0, 1.0}

    # The gradient signature converts once its gradient ops are rewritten, but its float
    # outputs differ from TensorFlow's in the last bits: auto refuses it, says so, and
    # serves it on the graph runtime, bit-identical over the whole held-out set.
    grad, why = choose_runner(str(trained_model_dir), loaded, "grad", probes)
    assert isinstance(grad, GraphRunner), why
    assert "ops TFLite's builtins lack: BroadcastGradientArgs, ReluGrad" in why
    assert "gradient ops lowered, XNNPACK: probe" in why and "values differ" in why
    grad_reference = SavedModelRunner("grad", loaded.signatures["grad"])
    for size in (len(held_out), 1, 64):
        for start in range(0, len(held_out), size if size > 1 else 53):
            rows = {"inputs": held_out[start : start + size]}
            assert _bits_equal(grad(rows), grad_reference(rows)), (size, start)


def test_uninitialised_variables_from_saved_model_are_caught(trained_model_dir):
    """`from_saved_model` leaves this export's variables as resource variables that nothing
    initialises in TFLite (NaN, garbage or a READ_VARIABLE failure): never taken as equal."""
    loaded = tf.saved_model.load(str(trained_model_dir))
    content = runtimes.convert_saved_model(str(trained_model_dir), "serving_default")
    reference = SavedModelRunner("serving_default", loaded.signatures["serving_default"])
    rows = np.random.default_rng(0).integers(0, 17, (3, 64)).astype(np.float32)
    calls = runtimes.probe_batches([{"inputs": rows}], reference.inputs)
    for xnnpack in (True, False):
        lite = TFLiteRunner(
            content, "serving_default", reference.inputs, reference.outputs, xnnpack=xnnpack
        )
        assert runtimes.compare(reference, lite, calls) is not None, xnnpack
