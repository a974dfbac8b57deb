"""Any SavedModel TF Serving serves is served here: TF1 graph exports, Keras `model.export()`,
`tf.Module`s with named inputs of several ranks and dtypes; TF Serving's and v2's exact shapes."""

from pathlib import Path

import keras
import numpy as np
import orjson
import pytest
import tensorflow as tf
from svc_helpers import make_settings, serving, tf1_graph_export, wait_for_model


def _keras_two_inputs() -> keras.Model:
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    flat = keras.layers.Flatten()(image)
    joined = keras.layers.Concatenate()([flat, extra])
    first = keras.layers.Dense(2, name="first")(joined)
    second = keras.layers.Dense(1, name="second")(joined)
    return keras.Model({"image": image, "extra": extra}, [first, second])


class _IntegerModule(tf.Module):
    """`ids` int64 [batch] and `flags` bool [batch, 2] -> `doubled` int64, `both` bool."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None, 2], tf.bool, name="flags"),
        ]
    )
    def serve(self, ids: tf.Tensor, flags: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"doubled": ids * 2, "both": tf.reduce_all(flags, axis=1)}


@pytest.fixture(scope="module")
def any_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    root = tmp_path_factory.mktemp("any-models")
    tf1_graph_export(root / "half_plus_two" / "1", declared_shape=[None], matmul=False)
    tf1_graph_export(root / "tf1-matmul" / "1", declared_shape=None, matmul=True)
    model = _keras_two_inputs()
    model.export(str(root / "keras-two" / "1"), verbose=False)
    module = _IntegerModule()
    tf.saved_model.save(
        module, str(root / "integers" / "1"), signatures={"serving_default": module.serve}
    )
    return root, model


def test_tf_serving_quick_start_verbatim_against_a_tf1_half_plus_two(any_models, run) -> None:
    root, _ = any_models

    async def go():
        settings = make_settings(root, default_model="half_plus_two")
        async with serving(settings) as client:
            await wait_for_model(client, "half_plus_two")
            url = "/v1/models/half_plus_two:predict"
            # `curl -d '{"instances": [1.0, 2.0, 5.0]}' -X POST .../v1/models/half_plus_two:predict`
            quick_start = await client.post(
                url,
                content=b'{"instances": [1.0, 2.0, 5.0]}',
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            columnar = await client.post(url, json={"inputs": {"x": [1.0, 2.0]}})
            named_rows = await client.post(url, json={"instances": [{"x": 1.0}, {"x": 3.0}]})
            status = await client.get("/v1/models/half_plus_two")
            metadata = await client.get("/v1/models/half_plus_two/metadata")
            v2 = await client.post(
                "/v2/models/half_plus_two/infer",
                json={
                    "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 5]}]
                },
            )
            return quick_start, columnar, named_rows, status, metadata, v2

    quick_start, columnar, named_rows, status, metadata, v2 = run(go())
    assert quick_start.status_code == 200
    assert quick_start.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert columnar.json() == {"outputs": [2.5, 3.0]}
    assert named_rows.json() == {"predictions": [2.5, 3.5]}
    assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
    x = metadata.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert x["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["x"]["tensor_shape"]["dim"]] == ["-1"]
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [3])
    assert output["data"] == [2.5, 3.0, 4.5]


def test_a_tf1_graphs_own_shape_error_is_a_400_and_the_next_request_answers(
    any_models, run
) -> None:
    root, _ = any_models

    async def go():
        async with serving(make_settings(root, default_model="tf1-matmul")) as client:
            await wait_for_model(client, "tf1-matmul")
            url = "/v1/models/tf1-matmul:predict"
            bad = await client.post(url, json={"instances": [[1.0, 2.0, 3.0]]})
            good = await client.post(url, json={"instances": [[1.0, 2.0]]})
            return bad, good

    bad, good = run(go())
    assert bad.status_code == 400
    assert "The model refused the input" in bad.json()["error"]
    assert "size-incompatible" in bad.json()["error"]
    assert good.json() == {"predictions": [[5.0]]}


def test_keras_export_with_two_named_inputs_and_two_outputs(any_models, run) -> None:
    root, model = any_models
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    extra = rng.normal(size=(3, 3)).astype(np.float32)
    first, second = (np.asarray(t) for t in model({"image": image, "extra": extra}))

    async def go():
        async with serving(make_settings(root, default_model="keras-two")) as client:
            await wait_for_model(client, "keras-two")
            url = "/v1/models/keras-two:predict"
            rows = [
                {"image": i.tolist(), "extra": e.tolist()}
                for i, e in zip(image, extra, strict=True)
            ]
            row = await client.post(url, json={"instances": rows})
            columnar = await client.post(
                url, json={"inputs": {"image": image.tolist(), "extra": extra.tolist()}}
            )
            native = await client.post(
                "/predict",
                json={
                    "model": "keras-two",
                    "inputs": {"image": image.tolist(), "extra": extra.tolist()},
                },
            )
            v2_meta = await client.get("/v2/models/keras-two")
            v2 = await client.post(
                "/v2/models/keras-two/infer",
                json={
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [3, 8, 8, 1],
                            "datatype": "FP32",
                            "data": image.reshape(-1).tolist(),
                        },
                        {
                            "name": "extra",
                            "shape": [3, 3],
                            "datatype": "FP32",
                            "data": extra.tolist(),
                        },
                    ]
                },
            )
            ragged = list(rows)
            ragged[2] = {"image": image[2, :, :7].tolist(), "extra": extra[2].tolist()}
            bad = await client.post(url, json={"instances": ragged})
            return row, columnar, native, v2_meta, v2, bad

    row, columnar, native, v2_meta, v2, bad = run(go())
    for response in (row, columnar, native, v2):
        assert response.status_code == 200, response.text
    predictions = row.json()["predictions"]
    assert [set(p) for p in predictions] == [{"output_0", "output_1"}] * 3
    np.testing.assert_allclose([p["output_0"] for p in predictions], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([p["output_1"] for p in predictions], second, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(columnar.json()["outputs"]["output_0"], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(native.json()["outputs"]["output_1"], second, rtol=1e-5, atol=1e-6)
    meta = v2_meta.json()
    assert {t["name"]: t["shape"] for t in meta["inputs"]} == {
        "image": [-1, 8, 8, 1],
        "extra": [-1, 3],
    }
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    np.testing.assert_allclose(
        np.reshape(outputs["output_0"]["data"], (3, 2)), first, rtol=1e-5, atol=1e-6
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "Input 'image' row 2 has shape [8, 7, 1], expected [8, 8, 1]."


def test_integer_and_boolean_inputs_keep_their_dtypes(any_models, run) -> None:
    root, _ = any_models

    async def go():
        async with serving(make_settings(root, default_model="integers")) as client:
            await wait_for_model(client, "integers")
            url = "/v1/models/integers:predict"
            good = await client.post(
                url,
                json={
                    "instances": [
                        {"ids": 2**40, "flags": [True, True]},
                        {"ids": -3, "flags": [True, False]},
                    ]
                },
            )
            fraction = await client.post(
                url, json={"inputs": {"ids": [1.5], "flags": [[True, True]]}}
            )
            not_bool = await client.post(url, json={"inputs": {"ids": [1], "flags": [[1, 0]]}})
            header = orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "ids",
                            "shape": [2],
                            "datatype": "INT64",
                            "parameters": {"binary_data_size": 16},
                        },
                        {
                            "name": "flags",
                            "shape": [2, 2],
                            "datatype": "BOOL",
                            "data": [True, False, True, True],
                        },
                    ],
                    "outputs": [
                        {"name": "doubled", "parameters": {"binary_data": True}},
                        {"name": "both"},
                    ],
                }
            )
            binary = await client.post(
                "/v2/models/integers/infer",
                content=header + np.array([7, -1], "<i8").tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            wrong_type = await client.post(
                "/v2/models/integers/infer",
                json={
                    "inputs": [
                        {
                            "name": "ids",
                            "shape": [1],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 4},
                        },
                        {
                            "name": "flags",
                            "shape": [1, 2],
                            "datatype": "BOOL",
                            "data": [True, True],
                        },
                    ]
                },
            )
            return good, fraction, not_bool, binary, wrong_type

    good, fraction, not_bool, binary, wrong_type = run(go())
    assert good.json() == {
        "predictions": [{"doubled": 2**41, "both": True}, {"doubled": -6, "both": False}]
    }
    assert fraction.status_code == 400
    assert fraction.json()["error"] == "Input 'ids' row 0 is 1.5, expected an integer (int64)."
    assert not_bool.status_code == 400 and "expected true or false" in not_bool.json()["error"]
    assert binary.status_code == 200, binary.text
    length = int(binary.headers["inference-header-content-length"])
    described = {o["name"]: o for o in orjson.loads(binary.content[:length])["outputs"]}
    assert described["doubled"]["datatype"] == "INT64"
    np.testing.assert_array_equal(np.frombuffer(binary.content[length:], "<i8"), [14, -2])
    assert described["both"] == {
        "name": "both",
        "datatype": "BOOL",
        "shape": [2],
        "data": [False, True],
    }
    assert wrong_type.status_code == 400
    assert "datatype FP32, the model declares INT64" in wrong_type.json()["error"]
