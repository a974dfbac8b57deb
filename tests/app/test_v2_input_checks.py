"""v2 `infer` refuses a tensor whose datatype or shape is not the model's, saying which (an
outside check found INT8 data holding 1.5 accepted, and messages naming the wrong problem)."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import make_settings, save_serving_modules, serving, wait_for_model


class _TwoInputs(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3, 2], tf.float32, name="feat"),
            tf.TensorSpec([None], tf.int64, name="ids"),
        ]
    )
    def serve(self, feat, ids):
        return {"score": tf.reduce_sum(feat, axis=[1, 2]) + tf.cast(ids, tf.float32)}


class _NoBatch(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([3], tf.float32, name="v")])
    def serve(self, v):
        return {"w": v * 2.0}


@pytest.fixture(scope="module")
def v2_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_serving_modules(
        tmp_path_factory.mktemp("v2-models"), {"two": _TwoInputs(), "nobatch": _NoBatch()}
    )


FEAT = {"name": "feat", "shape": [1, 3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
IDS = {"name": "ids", "shape": [1], "datatype": "INT64", "data": [3]}

CASES = [
    (
        "two",
        [{**FEAT, "datatype": "INT8", "data": [1.5, 2, 3, 4, 5, 6]}, IDS],
        "Input 'feat' has datatype INT8, the model declares FP32.",
    ),
    (
        "two",
        [FEAT, {**IDS, "datatype": "UINT8", "data": [300]}],
        "Input 'ids' has datatype UINT8, the model declares INT64.",
    ),
    (
        "two",
        [{**FEAT, "datatype": "FP64"}, IDS],
        "Input 'feat' has datatype FP64, the model declares FP32.",
    ),
    (
        "two",
        [{**FEAT, "shape": [-1, 3, 2]}, IDS],
        "Input 'feat' has shape [-1, 3, 2]: give every dimension's actual size (-1 is how the "
        "model marks a variable one); the model takes [-1, 3, 2].",
    ),
    (
        "two",
        [{**FEAT, "shape": [1, 6], "data": [1, 2, 3, 4, 5, 6]}, IDS],
        "Input 'feat' has shape [1, 6]; the model takes [-1, 3, 2].",
    ),
    (
        "two",
        [{**FEAT, "shape": [1, 2, 3], "data": [1, 2, 3, 4, 5, 6]}, IDS],
        "Input 'feat' rows have shape [2, 3], expected [3, 2].",
    ),
    (
        "nobatch",
        [{"name": "v", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
        "Input 'v' has shape [1, 3]; the model takes [3].",
    ),
]


def test_v2_datatype_and_shape_mismatches_are_400s_naming_both(v2_models, run):
    async def go():
        async with serving(make_settings(v2_models, default_model="two")) as client:
            await wait_for_model(client, "two")
            await wait_for_model(client, "nobatch")
            answers = [
                await client.post(f"/v2/models/{model}/infer", json={"inputs": tensors})
                for model, tensors, _ in CASES
            ]
            good = await client.post("/v2/models/two/infer", json={"inputs": [FEAT, IDS]})
            flat = await client.post(
                "/v2/models/nobatch/infer",
                json={
                    "inputs": [{"name": "v", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]
                },
            )
            return answers, good, flat

    answers, good, flat = run(go())
    for (_, _, message), response in zip(CASES, answers, strict=True):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == message
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [24.0]
    assert flat.status_code == 200 and flat.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0]
    assert np.asarray(flat.json()["outputs"][0]["shape"]).tolist() == [3]


class _UnknownRank(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="t")])
    def serve(self, t):
        return {"sq": t * t, "whole": tf.round(t * t)}


def test_a_scalar_stays_a_scalar_on_every_protocol(tmp_path: Path, run):
    save_serving_modules(tmp_path, {"unkrank": _UnknownRank()})

    async def go():
        async with serving(make_settings(tmp_path, default_model="unkrank")) as client:
            await wait_for_model(client, "unkrank")
            return (
                await client.post("/predict", json={"inputs": 1.5}),
                await client.post("/v1/models/unkrank:predict", json={"inputs": 1.5}),
                await client.post(
                    "/v2/models/unkrank/infer",
                    json={
                        "inputs": [{"name": "t", "shape": [], "datatype": "FP32", "data": [1.5]}]
                    },
                ),
                await client.post("/predict", json={"inputs": [1.5]}),
            )

    native, v1, v2, vector = run(go())
    assert native.json()["outputs"] == {"sq": 2.25, "whole": 2.0}
    assert v1.json()["outputs"] == {"sq": 2.25, "whole": 2.0}
    assert sorted((o["name"], o["shape"], o["data"]) for o in v2.json()["outputs"]) == [
        ("sq", [], [2.25]),
        ("whole", [], [2.0]),
    ]
    assert vector.json()["outputs"] == {"sq": [2.25], "whole": [2.0]}
