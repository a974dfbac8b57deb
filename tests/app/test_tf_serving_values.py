"""TF Serving's JSON mapping of output values: `NaN`, `Infinity` and `-Infinity` tokens for
non-finite floats, and `{"b64": ...}` for every value of a tensor named `*_bytes`
(tensorflow_serving/g3doc/api_rest.md, "JSON mapping" and "Encoding binary values")."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import make_settings, save_serving_modules, serving, wait_for_model


class _Overflow(tf.Module):
    """`big = x * 1e30` (float32: +-Infinity past 3.4e38), `root = sqrt(x)` (NaN below 0)."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        return {"big": x * 1e30, "root": tf.sqrt(x), "half": tf.cast(x, tf.float16) * 2}


class _Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        head = tf.strings.substr(text, 0, 1)
        return {"head": head, "head_bytes": head}


@pytest.fixture(scope="module")
def value_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_serving_modules(
        tmp_path_factory.mktemp("value-models"), {"overflow": _Overflow(), "strings": _Strings()}
    )


def test_non_finite_floats_are_tf_servings_tokens_in_rows_and_columns(value_models, run):
    x = [[1e9, -1e9, -4.0], [0.25, 2.0, 0.0]]

    async def go():
        async with serving(make_settings(value_models, default_model="overflow")) as client:
            await wait_for_model(client, "overflow")
            rows = await client.post("/v1/models/overflow:predict", json={"instances": x})
            columns = await client.post("/v1/models/overflow:predict", json={"inputs": x})
            native = await client.post("/predict", json={"model": "overflow", "inputs": x})
            return rows, columns, native

    rows, columns, native = run(go())
    assert rows.status_code == 200 and columns.status_code == 200, (rows.text, columns.text)
    assert b"Infinity" in rows.content and b"-Infinity" in rows.content and b"NaN" in rows.content
    want = {k: v.numpy() for k, v in _Overflow().serve(tf.constant(x, tf.float32)).items()}
    # Python's json reads the tokens back; every value is the model's, bit for bit.
    by_row = json.loads(rows.content)["predictions"]
    by_column = json.loads(columns.content)["outputs"]
    for name, value in want.items():
        got_rows = np.asarray([row[name] for row in by_row], value.dtype)
        got_columns = np.asarray(by_column[name], value.dtype)
        for got in (got_rows, got_columns):
            np.testing.assert_array_equal(got, value)  # NaN where NaN (its sign is not JSON's)
            finite = np.isfinite(value)
            assert got[finite].tobytes() == value[finite].tobytes()
            assert (np.isposinf(got) == np.isposinf(value)).all()
    # Finite values keep their float32 form beside the tokens.
    assert by_column["root"][1] == [0.5, 1.4142135, 0.0]  # float32 shortest, as elsewhere
    # The native API stays strict JSON: a non-finite float is null there.
    assert native.json()["outputs"]["big"][0] == [None, None, -4e30]


def test_bytes_suffixed_outputs_are_base64_objects_others_text_where_utf8(value_models, run):
    texts = ["abc", "\u00f6x"]

    async def go():
        async with serving(make_settings(value_models, default_model="strings")) as client:
            await wait_for_model(client, "strings")
            return await client.post("/v1/models/strings:predict", json={"instances": texts})

    response = run(go())
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    heads = [text.encode()[:1] for text in texts]
    assert [p["head_bytes"] for p in predictions] == [
        {"b64": base64.b64encode(head).decode()} for head in heads
    ]
    # Not a `_bytes` name: text where the bytes are UTF-8, base64 only where they are not.
    assert [p["head"] for p in predictions] == ["a", {"b64": base64.b64encode(heads[1]).decode()}]
