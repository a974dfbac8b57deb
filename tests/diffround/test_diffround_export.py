"""`diffround.export`: any Keras model with rounding layers -> a servable SavedModel.

One module fixture builds and exports a model of every kind (functional with
two named inputs, one image-shaped and one integer, and two rounding layers,
one of them in the middle; Sequential; subclassed with two branches; a
`[batch]`-shaped input), and one subprocess that never imports `diffround`
loads them all and runs every signature at two batch sizes. The answers are
compared with the Keras model (inference, and `tf.GradientTape` in
`diffround.relaxed_mode`) and, for the Sequential model, with NumPy.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround
from diffround.export import METADATA_PATH, read_metadata

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    root, names = sys.argv[1], json.loads(sys.argv[2])
    results = {}
    for name in names:
        loaded = tf.saved_model.load(root + "/" + name)
        data = dict(np.load(root + "/" + name + ".npz"))
        out = {"__signatures__": np.array(sorted(loaded.signatures))}
        for batch in ("a", "b"):
            feed = {k[2:]: tf.constant(v) for k, v in data.items() if k.startswith(batch + ":")}
            for signature in ("serving_default", "serve", "grad"):
                for key, value in loaded.signatures[signature](**feed).items():
                    out[f"{batch}:{signature}:{key}"] = value.numpy()
        np.savez(root + "/" + name + ".out.npz", **out)
    print(json.dumps({"diffround_imported": "diffround" in sys.modules}))
    """
)


class AddCount(keras.layers.Layer):
    """Adds an integer input (cast to float) to every feature."""

    def call(self, inputs):
        features, count = inputs
        return features + keras.ops.cast(count, features.dtype)


class TwoBranches(keras.Model):
    """A subclassed model: two rounding layers in two branches, dict outputs."""

    def __init__(self):
        super().__init__()
        self.left = keras.layers.Dense(3, activation="sigmoid")
        self.right = keras.layers.Dense(2)
        self.round_left = diffround.DiffRound("soft_round", alpha=3.0, name="round_left")
        self.round_right = diffround.DiffRound("sine", name="round_right")
        self.head = keras.layers.Dense(1)

    def call(self, inputs):
        left = self.round_left(self.left(inputs))
        right = self.round_right(2.0 * self.right(inputs))
        return {"left": left, "mixed": self.head(keras.ops.concatenate([left, right], -1))}


def functional_model():
    """Image + integer inputs; a rounded output on 0..3 and a rounding in the middle."""
    image = keras.Input((8, 8, 1), name="image")
    count = keras.Input((1,), name="count", dtype="int32")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.Flatten()(x)
    x = AddCount()([keras.layers.Dense(6, activation="relu")(x), count])
    levels = keras.layers.Dense(2, activation="sigmoid")(x)
    levels = keras.layers.Rescaling(3.0)(levels)
    code = diffround.DiffRound("soft_round", alpha=4.0, name="levels")(levels)
    middle = diffround.DiffRound("sigmoid", slope=5.0, name="middle")(
        keras.layers.Dense(4, activation="sigmoid")(x)
    )
    score = keras.layers.Dense(1, name="score")(middle)
    return keras.Model({"image": image, "count": count}, [code, score])


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((3,), name="x"),
            keras.layers.Dense(2, activation="sigmoid", name="dense"),
            diffround.DiffRound("sigmoid", slope=6.0, name="bits"),
        ]
    )


def scalar_model():
    """TF Serving's half_plus_two on `x: [batch]`, rounded."""
    x = keras.Input((), name="x")
    y = diffround.DiffRound("soft_round", alpha=2.0, name="y")(keras.layers.Rescaling(0.5, 2.0)(x))
    return keras.Model(x, y)


def inputs_for(name, batch, rng):
    if name == "functional":
        return {
            "image": rng.uniform(0, 1, (batch, 8, 8, 1)).astype(np.float32),
            "count": rng.integers(0, 3, (batch, 1)).astype(np.int32),
        }
    if name == "scalar":
        return {"x": rng.normal(0, 3, (batch,)).astype(np.float32)}
    return {"x": rng.normal(0, 1, (batch, 3 if name == "sequential" else 5)).astype(np.float32)}


OUTPUT_NAMES = {"sequential": "bits", "scalar": "y"}


def outputs_by_name(name, model, value):
    """The model's call result keyed by the names `export` gives its outputs."""
    if isinstance(value, dict):
        return value
    if name == "functional":
        return dict(zip(model.output_names, value, strict=True))
    return {OUTPUT_NAMES[name]: value}


def keras_reference(name, model, feed):
    """Inference and relaxed outputs, per-row Jacobians and rounding calls, from Keras."""

    def call(tensors):
        return model(tensors if len(tensors) > 1 else next(iter(tensors.values())))

    served = outputs_by_name(name, model, call({k: tf.constant(v) for k, v in feed.items()}))
    # Rows flattened, so that a [batch] input has a [batch, 1] source for batch_jacobian.
    sources = {
        k: tf.constant(v.reshape(len(v), -1))
        for k, v in feed.items()
        if np.issubdtype(v.dtype, np.floating)
    }
    with tf.GradientTape(persistent=True) as tape:
        for source in sources.values():
            tape.watch(source)
        tensors = {
            k: tf.reshape(sources[k], v.shape) if k in sources else tf.constant(v)
            for k, v in feed.items()
        }
        with diffround.relaxed_mode() as calls:
            relaxed = outputs_by_name(name, model, call(tensors))
        flat = {k: tf.reshape(v, [v.shape[0], -1]) for k, v in relaxed.items()}
    jacobians = {
        (output, input_name): tape.batch_jacobian(
            flat[output], source, unconnected_gradients=tf.UnconnectedGradients.ZERO
        ).numpy()
        for output in flat
        for input_name, source in sources.items()
    }
    return served, relaxed, jacobians, calls


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    subclassed = TwoBranches()
    subclassed(np.zeros((1, 5), np.float32))
    models = {
        "functional": functional_model(),
        "sequential": sequential_model(),
        "subclassed": subclassed,
        "scalar": scalar_model(),
    }
    feeds = {}
    for name, model in models.items():
        options = {}
        if name == "subclassed":
            options["input_signature"] = [tf.TensorSpec([None, 5], tf.float32, name="x")]
        if name == "functional":
            options.update(
                description="two inputs, two rounding layers",
                examples=[{"inputs": {k: v[0] for k, v in inputs_for(name, 1, rng).items()}}],
                decoding={"kind": "base4"},
                metrics={"exact_match": np.float32(0.5)},
                input_info={"image": {"image_shape": [8, 8], "range": [0, 1]}},
                extra_metadata={"task": "test"},
            )
        diffround.export(model, root / name, **options)
        feeds[name] = {"a": inputs_for(name, 5, rng), "b": inputs_for(name, 1, rng)}
        np.savez(
            root / f"{name}.npz",
            **{f"{b}:{k}": v for b, feed in feeds[name].items() for k, v in feed.items()},
        )
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), json.dumps(list(models))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {"diffround_imported": False}
    loaded = {name: dict(np.load(root / f"{name}.out.npz")) for name in models}
    return root, models, feeds, loaded


@pytest.mark.parametrize("name", ["functional", "sequential", "subclassed", "scalar"])
def test_serving_signatures_equal_keras_inference_at_two_batch_sizes(exported, name):
    _, models, feeds, loaded = exported
    out = loaded[name]
    assert list(out["__signatures__"]) == ["grad", "serve", "serving_default"]
    meta_outputs = read_metadata(exported[0] / name)["outputs"]
    for batch in ("a", "b"):
        served = keras_reference(name, models[name], feeds[name][batch])[0]
        assert {o["name"] for o in meta_outputs} == set(served)
        for output, value in served.items():
            np.testing.assert_array_equal(
                out[f"{batch}:serving_default:{output}"], np.asarray(value)
            )
            np.testing.assert_array_equal(out[f"{batch}:serve:{output}"], np.asarray(value))


@pytest.mark.parametrize("name", ["functional", "sequential", "subclassed", "scalar"])
def test_grad_signature_equals_gradient_tape_in_relaxed_mode(exported, name):
    root, models, feeds, loaded = exported
    meta = read_metadata(root / name)
    out = loaded[name]
    for batch in ("a", "b"):
        feed = feeds[name][batch]
        _, relaxed, jacobians, calls = keras_reference(name, models[name], feed)
        for output, value in relaxed.items():
            keys = meta["grad"]["outputs"][output]
            np.testing.assert_allclose(
                out[f"{batch}:grad:{keys['relaxed']}"], value, rtol=1e-5, atol=1e-6
            )
            float_inputs = {k for k, v in feed.items() if np.issubdtype(v.dtype, np.floating)}
            assert set(keys["jacobians"]) == float_inputs
            for input_name, key in keys["jacobians"].items():
                expected = jacobians[(output, input_name)]
                got = out[f"{batch}:grad:{key}"]
                b = feed[input_name].shape[0]
                assert got.shape == (b, *value.shape[1:], *feed[input_name].shape[1:])
                np.testing.assert_allclose(
                    got.reshape(expected.shape), expected, rtol=1e-4, atol=1e-6
                )
        assert sorted(meta["grad"]["layers"]) == sorted(call.layer.name for call in calls)
        for call in calls:
            keys = meta["grad"]["layers"][call.layer.name]
            pre_round = out[f"{batch}:grad:{keys['pre_round']}"]
            np.testing.assert_allclose(pre_round, call.inputs, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                out[f"{batch}:grad:{keys['surrogate']}"], call.outputs, rtol=1e-5, atol=1e-6
            )
            value, local = diffround.local_gradient(
                pre_round, call.layer.method, **call.layer.current_params()
            )
            np.testing.assert_allclose(out[f"{batch}:grad:{keys['surrogate']}"], value, rtol=1e-5)
            np.testing.assert_allclose(
                out[f"{batch}:grad:{keys['local_grad']}"], local, rtol=1e-4, atol=1e-6
            )
            np.testing.assert_array_equal(out[f"{batch}:grad:{keys['hard']}"], np.round(pre_round))


def test_sequential_grad_matches_numpy_chain_rule(exported):
    """relaxed = s(sigmoid(x W + c)), s(v) = sigmoid(slope (v - 1/2)); J = s' sigmoid' W^T."""
    _, models, feeds, loaded = exported
    kernel, bias = (
        np.asarray(w, np.float64) for w in models["sequential"].get_layer("dense").weights
    )
    x = feeds["sequential"]["a"]["x"].astype(np.float64)
    hidden = 1.0 / (1.0 + np.exp(-(x @ kernel + bias)))
    surrogate = 1.0 / (1.0 + np.exp(-6.0 * (hidden - 0.5)))
    local = 6.0 * surrogate * (1.0 - surrogate)
    jacobian = (local * hidden * (1.0 - hidden))[:, :, None] * kernel.T[None, :, :]
    out = loaded["sequential"]
    np.testing.assert_allclose(out["a:grad:bits__relaxed"], surrogate, rtol=1e-5)
    np.testing.assert_allclose(out["a:grad:bits__local_grad"], local, rtol=1e-4)
    np.testing.assert_allclose(out["a:grad:bits__jacobian__x"], jacobian, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(out["a:serving_default:bits"], np.round(hidden))


def test_metadata_describes_inputs_outputs_and_rounding_layers(exported):
    root, _, _, _ = exported
    text = (root / "functional" / METADATA_PATH).read_text()

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    meta = json.loads(text, parse_constant=reject)
    assert meta["format"] == "diffround.savedmodel/v2"
    assert meta["model_name"] is None and meta["version"] is None
    assert meta["description"] == "two inputs, two rounding layers"
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["image"] == {
        "name": "image",
        "dtype": "float32",
        "shape": [-1, 8, 8, 1],
        "image_shape": [8, 8],
        "range": [0, 1],
    }
    assert inputs["count"] == {"name": "count", "dtype": "int32", "shape": [-1, 1]}
    outputs = {o["name"]: o for o in meta["outputs"]}
    unit = {"step": 1.0, "offset": 0.0, "min": None, "max": None}
    assert outputs["levels"]["rounding_layer"] == "levels" and outputs["levels"]["grid"] == unit
    assert outputs["levels"]["shape"] == [-1, 2]
    assert outputs["score"]["rounding_layer"] is None and outputs["score"]["grid"] is None
    layers = {layer["name"]: layer for layer in meta["rounding_layers"]}
    assert set(layers) == {"levels", "middle"}
    assert layers["middle"]["method"] == "sigmoid" and layers["middle"]["shape"] == [-1, 4]
    assert layers["middle"]["params"] == {"slope": 5.0, "center": 0.5}
    curve = layers["levels"]["surrogate_curve"]
    x = np.array(curve["x"])
    assert len(x) == 201 and x[0] == -0.5 and x[-1] == 1.5
    # soft_round (Agustsson & Theis 2020) at alpha 4, in float64 NumPy.
    m = np.floor(x) + 0.5
    value = m + np.tanh(4.0 * (x - m)) / (2.0 * np.tanh(2.0))
    np.testing.assert_allclose(curve["value"], value, rtol=1e-4, atol=1e-5)
    assert meta["signatures"] == {"predict": "serving_default", "grad": "grad"}
    assert meta["grad"]["layers"]["middle"] == {
        "pre_round": "middle__pre_round",
        "surrogate": "middle__surrogate",
        "local_grad": "middle__local_grad",
        "hard": "middle__hard",
    }
    assert meta["grad"]["outputs"]["score"] == {
        "relaxed": "score__relaxed",
        "jacobians": {"image": "score__jacobian__image"},
    }
    assert meta["grad"]["max_jacobian_elements"] == 65536
    omitted = {(o["output"], o["input"]): o for o in meta["grad"]["omitted_jacobians"]}
    assert set(omitted) == {("levels", "count"), ("score", "count")}
    assert "int32" in omitted[("levels", "count")]["reason"]
    assert meta["examples"][0]["inputs"]["count"] in ([0], [1], [2])
    assert np.asarray(meta["examples"][0]["inputs"]["image"]).shape == (8, 8, 1)
    assert meta["decoding"] == {"kind": "base4"} and meta["metrics"] == {"exact_match": 0.5}
    assert meta["task"] == "test"
    assert meta["versions"]["tensorflow"] == tf.__version__
    assert meta["created_at"].endswith("Z")


def test_subclassed_model_branch_outputs_and_rounded_output_detection(exported):
    meta = read_metadata(exported[0] / "subclassed")
    outputs = {o["name"]: o["rounding_layer"] for o in meta["outputs"]}
    assert outputs == {"left": "round_left", "mixed": None}
    assert sorted(meta["grad"]["layers"]) == ["round_left", "round_right"]
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 5]}]


def test_version_directory_fills_model_name_and_version(tmp_path):
    path = diffround.export(sequential_model(), tmp_path / "models" / "bits" / "3")
    meta = read_metadata(path)
    assert (meta["model_name"], meta["version"]) == ("bits", 3)


def test_jacobian_bound_and_switch_are_applied_and_recorded(tmp_path):
    model = functional_model()
    # levels: 2 * 64 = 128 elements per row, score: 1 * 64 = 64.
    bounded = diffround.export(model, tmp_path / "bounded", max_jacobian_elements=100)
    meta = read_metadata(bounded)
    assert meta["grad"]["outputs"]["levels"]["jacobians"] == {}
    assert meta["grad"]["outputs"]["score"]["jacobians"] == {"image": "score__jacobian__image"}
    omitted = {(o["output"], o["input"]): o for o in meta["grad"]["omitted_jacobians"]}
    assert omitted[("levels", "image")]["elements"] == 128
    assert "max_jacobian_elements=100" in omitted[("levels", "image")]["reason"]
    keys = tf.saved_model.load(str(bounded)).signatures["grad"].structured_outputs
    assert "levels__jacobian__image" not in keys and "score__jacobian__image" in keys

    disabled = diffround.export(model, tmp_path / "disabled", jacobians=False)
    meta = read_metadata(disabled)
    assert meta["grad"]["jacobians"] is False
    assert all(not o["jacobians"] for o in meta["grad"]["outputs"].values())
    assert len(meta["grad"]["omitted_jacobians"]) == 4
    keys = tf.saved_model.load(str(disabled)).signatures["grad"].structured_outputs
    assert not [key for key in keys if "__jacobian__" in key]
    assert "middle__local_grad" in keys


def test_export_refuses_a_non_empty_path_and_leaves_no_partial_files(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        diffround.export(sequential_model(), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    diffround.export(sequential_model(), empty)
    assert (empty / "saved_model.pb").is_file()

    # Metadata that is not strict JSON fails before anything is written.
    with pytest.raises(ValueError):
        diffround.export(sequential_model(), tmp_path / "nan", metrics={"loss": float("nan")})

    def broken_save(*args, **kwargs):
        (tmp_path / "partial-marker").write_text("")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        diffround.export(sequential_model(), tmp_path / "failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model", "partial-marker"]


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="input_signature"):
        subclassed = TwoBranches()
        subclassed(np.zeros((1, 5), np.float32))
        diffround.export(subclassed, tmp_path / "a")
    with pytest.raises(ValueError, match="max_jacobian_elements"):
        diffround.export(sequential_model(), tmp_path / "b", max_jacobian_elements=-1)
    with pytest.raises(ValueError, match="format"):
        diffround.export(sequential_model(), tmp_path / "c", extra_metadata={"format": "x"})
    with pytest.raises(ValueError, match="Example 0"):
        diffround.export(sequential_model(), tmp_path / "d", examples=[{"inputs": {"y": [1]}}])
    shared = diffround.DiffRound("ste", name="shared")
    x = keras.Input((2,), name="x")
    twice = keras.Model(x, shared(shared(x)))
    with pytest.raises(ValueError, match="more than once"):
        diffround.export(twice, tmp_path / "e")
    assert not list(tmp_path.iterdir())


def test_relaxed_mode_records_every_call_and_restores_inference():
    layer = diffround.DiffRound("sigmoid", slope=4.0, name="r")
    x = tf.constant([[0.2, 0.7]])
    with diffround.relaxed_mode() as calls:
        relaxed = layer(x, training=False)
    np.testing.assert_allclose(
        relaxed, 1.0 / (1.0 + np.exp(-4.0 * (np.array([[0.2, 0.7]]) - 0.5))), rtol=1e-6
    )
    assert len(calls) == 1 and calls[0].layer is layer
    np.testing.assert_array_equal(calls[0].inputs, x)
    np.testing.assert_array_equal(layer(x, training=False), [[0.0, 1.0]])


def test_model_without_rounding_layers_exports_its_plain_gradient(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="y")(x))
    meta = read_metadata(diffround.export(model, tmp_path / "plain"))
    assert meta["rounding_layers"] == [] and meta["grad"]["layers"] == {}
    assert meta["outputs"][0]["rounding_layer"] is None
    grad = tf.saved_model.load(str(tmp_path / "plain")).signatures["grad"]
    out = grad(x=tf.ones([2, 3]))
    assert sorted(out) == ["y__jacobian__x", "y__relaxed"]
    kernel = np.asarray(model.get_layer("y").kernel)
    np.testing.assert_allclose(out["y__jacobian__x"][0], kernel.T, rtol=1e-6)
