"""Serve your own model, as a user would: a new Keras model, `diffround.export` into the models
root of a running `python -m app`, then every protocol checked against the Keras model.

The model has two named inputs (an image and a vector), two rounding layers (4 bits in the
middle, 0..3 levels at the output) and a float output computed from the middle bits.
"""

from collections.abc import Iterator

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from svc_server import Server

import diffround

pytestmark = pytest.mark.slow

NAME = "user-model"


def _user_model() -> keras.Model:
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Conv2D(4, 3, activation="tanh")(keras.layers.Rescaling(1 / 16)(image))
    h = keras.layers.Dense(4, activation="sigmoid")(keras.layers.Flatten()(h))
    bits = diffround.DiffRound("ste", name="mid_bits")(h)  # rounding in the middle
    joined = keras.layers.Concatenate()([bits, meta])
    levels = keras.layers.Dense(2, activation="sigmoid")(joined)
    levels = keras.layers.Rescaling(3.0)(levels)
    levels = diffround.DiffRound("sine", name="levels", min_value=0.0, max_value=3.0)(levels)
    score = keras.layers.Dense(1, name="score")(joined)
    return keras.Model({"image": image, "meta": meta}, {"levels": levels, "score": score})


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, keras.Model, dict]]:
    root = tmp_path_factory.mktemp("user-root")
    server = Server(root, tmp_path_factory.mktemp("user-log") / "server.log")
    try:
        rng = np.random.default_rng(0)
        x = {
            "image": rng.integers(0, 17, (64, 8, 8, 1)).astype(np.float32),
            "meta": rng.normal(size=(64, 3)).astype(np.float32),
        }
        y = {"levels": rng.integers(0, 4, (64, 2)).astype(np.float32), "score": x["meta"][:, :1]}
        model = _user_model()
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        example = {"image": x["image"][0], "meta": x["meta"][0]}
        diffround.export(model, root / NAME / "1", examples=[{"inputs": example}])
        # The service started on an empty root; the poller hot-loads the export.
        server.wait_ready()
        yield server, model, {key: value[:5] for key, value in x.items()}
    finally:
        server.stop()


def test_predict_and_tf_serving_rows_and_columns_answer_what_keras_computes(user) -> None:
    server, model, x = user
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    assert set(np.unique(expected["levels"])) <= {0.0, 1.0, 2.0, 3.0}
    body = {"model": NAME, "inputs": {k: v.tolist() for k, v in x.items()}}
    native = httpx.post(f"{server.url}/predict", json=body, timeout=30)
    rows = [{k: v[i].tolist() for k, v in x.items()} for i in range(5)]
    row = httpx.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": rows}, timeout=30)
    columnar = httpx.post(
        f"{server.url}/v1/models/{NAME}:predict", json={"inputs": body["inputs"]}, timeout=30
    )
    for response in (native, row, columnar):
        assert response.status_code == 200, response.text
    outputs = native.json()["outputs"]
    np.testing.assert_array_equal(outputs["levels"], expected["levels"])
    assert all(isinstance(v, int) for v in outputs["levels"][0])  # an integer grid
    np.testing.assert_allclose(outputs["score"], expected["score"], rtol=1e-5, atol=1e-5)
    predictions = row.json()["predictions"]
    np.testing.assert_array_equal([p["levels"] for p in predictions], expected["levels"])
    np.testing.assert_allclose(
        [p["score"] for p in predictions], expected["score"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(columnar.json()["outputs"]["levels"], expected["levels"])


def test_grad_answers_relaxed_values_jacobians_and_both_rounding_layers(user) -> None:
    server, model, x = user
    tensors = {k: tf.constant(v) for k, v in x.items()}
    with tf.GradientTape() as tape:
        tape.watch(tensors["image"])
        with diffround.relaxed_mode():
            relaxed = model(tensors, training=False)
    jacobian = tape.batch_jacobian(relaxed["levels"], tensors["image"]).numpy()
    response = httpx.post(
        f"{server.url}/grad",
        json={"model": NAME, "inputs": {k: v.tolist() for k, v in x.items()}},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    levels = body["outputs"]["levels"]
    np.testing.assert_allclose(levels["relaxed"], relaxed["levels"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(levels["jacobians"]["image"], jacobian, rtol=1e-4, atol=1e-5)
    assert np.shape(levels["jacobians"]["meta"]) == (5, 2, 3)
    assert set(body["rounding_layers"]) == {"mid_bits", "levels"}
    assert body["rounding_layers"]["levels"]["grid"]["max"] == 3.0
    mid = body["rounding_layers"]["mid_bits"]
    assert mid["method"] == "ste" and np.shape(mid["pre_round"]) == (5, 4)
    np.testing.assert_array_equal(mid["hard"], np.round(mid["pre_round"]))


def test_tritonclient_with_the_models_own_input_names(user) -> None:
    import tritonclient.http as triton

    server, model, x = user
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        metadata = client.get_model_metadata(NAME)
        assert {t["name"]: t["shape"] for t in metadata["inputs"]} == {
            "image": [-1, 8, 8, 1],
            "meta": [-1, 3],
        }
        inputs = []
        for name, value in x.items():
            tensor = triton.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        result = client.infer(NAME, inputs)
        np.testing.assert_array_equal(result.as_numpy("levels"), expected["levels"])
        np.testing.assert_allclose(
            result.as_numpy("score"), expected["score"], rtol=1e-5, atol=1e-5
        )
    finally:
        client.close()
