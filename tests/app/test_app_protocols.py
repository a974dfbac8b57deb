"""TF Serving REST and v2 routes over ASGI (the real clients run in test_app_server.py)."""

from pathlib import Path

import numpy as np
import orjson
import pytest
from svc_helpers import digit_rows, make_settings, reference_outputs, serving
from svc_models import GRAD_KEYS

GRAD_NAMES = tuple(GRAD_KEYS.values())


@pytest.fixture
def rows() -> np.ndarray:
    return digit_rows(3, seed=31)


@pytest.fixture
def expected(models_root: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    return reference_outputs(models_root / "digit-bits" / "1", rows)


def test_tfserving_predict_row_and_columnar_forms(models_root: Path, rows, expected, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            url = "/v1/models/digit-bits:predict"
            return [
                await client.post(url, json={"instances": rows.tolist()}),
                await client.post(url, json={"inputs": rows.tolist()}),
                await client.post(url, json={"inputs": {"inputs": rows.tolist()}}),
                await client.post(
                    "/v1/models/digit-bits/versions/1:predict",
                    json={"signature_name": "serving_default", "instances": rows.tolist()},
                ),
            ]

    row, columnar, named, versioned = run(go())
    for response in (row, columnar, named, versioned):
        assert response.status_code == 200, response.text
    np.testing.assert_array_equal(row.json()["predictions"], expected["outputs"])
    np.testing.assert_array_equal(columnar.json()["outputs"], expected["outputs"])
    np.testing.assert_array_equal(named.json()["outputs"], expected["outputs"])
    np.testing.assert_array_equal(versioned.json()["predictions"], expected["outputs"])


def test_tfserving_predict_reads_json_whatever_the_content_type(
    models_root: Path, rows, expected, run
) -> None:
    """`curl -d` sends application/x-www-form-urlencoded; TF Serving reads the body as JSON."""

    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.post(
                "/v1/models/digit-bits:predict",
                content=orjson.dumps({"instances": rows.tolist()}),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )

    response = run(go())
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(response.json()["predictions"], expected["outputs"])


def test_tfserving_grad_signature_keys_rows_and_columns_by_output_name(
    models_root: Path, rows, expected, run
) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            url = "/v1/models/digit-bits:predict"
            row = await client.post(
                url, json={"signature_name": "grad", "instances": rows.tolist()}
            )
            col = await client.post(url, json={"signature_name": "grad", "inputs": rows.tolist()})
            return row.json(), col.json()

    row, col = run(go())
    assert len(row["predictions"]) == len(rows)
    for name in GRAD_NAMES:
        stacked = np.array([r[name] for r in row["predictions"]])
        np.testing.assert_allclose(stacked, expected[name], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(col["outputs"][name], expected[name], rtol=1e-6, atol=1e-7)


def test_tfserving_status_and_metadata(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            return [
                await client.get("/v1/models/digit-bits"),
                await client.get("/v1/models/digit-bits/versions/1"),
                await client.get("/v1/models/digit-bits/metadata"),
                await client.get("/v1/models/digit-bits/versions/1/metadata"),
                await client.get("/v1/models/nope"),
                await client.get("/v1/models/digit-bits/versions/9"),
            ]

    status, status_v1, metadata, metadata_v1, unknown, unknown_version = run(go())
    available = {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert status.json() == {"model_version_status": [available]}
    assert status_v1.json() == status.json()
    assert metadata.json() == metadata_v1.json()
    spec = metadata.json()["model_spec"]
    assert spec == {"name": "digit-bits", "signature_name": "", "version": "1"}
    defs = metadata.json()["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "grad"}
    assert set(defs["serving_default"]["outputs"]) == {"outputs"}
    inputs = defs["serving_default"]["inputs"]["inputs"]
    assert inputs["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inputs["tensor_shape"]["dim"]] == ["-1", "64"]
    assert set(defs["grad"]["outputs"]) == set(GRAD_NAMES)
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    assert unknown_version.status_code == 404


def test_v2_server_and_model_endpoints(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            return {
                path: await client.get(path)
                for path in (
                    "/v2",
                    "/v2/health/live",
                    "/v2/health/ready",
                    "/v2/models/digit-bits",
                    "/v2/models/digit-bits/versions/1",
                    "/v2/models/digit-bits/ready",
                    "/v2/models/digit-bits/versions/1/ready",
                    "/v2/models/nope",
                )
            }

    answers = run(go())
    assert answers["/v2"].json()["extensions"] == ["binary_tensor_data"]
    assert answers["/v2/health/live"].json() == {"live": True}
    assert answers["/v2/health/ready"].json() == {"ready": True}
    metadata = answers["/v2/models/digit-bits"].json()
    assert metadata == answers["/v2/models/digit-bits/versions/1"].json()
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 64]}]
    shapes = {o["name"]: o["shape"] for o in metadata["outputs"]}
    assert shapes["outputs"] == [-1, 4]
    assert shapes[GRAD_KEYS["jacobian"]] == [-1, 4, 64]
    assert answers["/v2/models/digit-bits/ready"].json() == {"name": "digit-bits", "ready": True}
    assert answers["/v2/models/digit-bits/versions/1/ready"].status_code == 200
    assert answers["/v2/models/nope"].status_code == 404
    assert set(answers["/v2/models/nope"].json()) == {"error"}


def test_v2_infer_json_flat_and_nested_data(models_root: Path, rows, expected, run) -> None:
    def request(data: list) -> dict:
        return {
            "id": "req-1",
            "inputs": [{"name": "inputs", "shape": [3, 64], "datatype": "FP32", "data": data}],
        }

    async def go():
        async with serving(make_settings(models_root)) as client:
            url = "/v2/models/digit-bits/infer"
            flat = await client.post(url, json=request(rows.reshape(-1).tolist()))
            nested = await client.post(url, json=request(rows.tolist()))
            return flat, nested

    for response in run(go()):
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_name"], body["model_version"], body["id"]) == (
            "digit-bits",
            "1",
            "req-1",
        )
        (output,) = body["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("outputs", "FP32", [3, 4])
        np.testing.assert_array_equal(np.reshape(output["data"], (3, 4)), expected["outputs"])


def test_v2_infer_binary_inputs_and_outputs(models_root: Path, rows, expected, run) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "inputs",
                    "shape": [3, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [
                {"name": "outputs", "parameters": {"binary_data": True}},
                {"name": GRAD_KEYS["jacobian"], "parameters": {"binary_data": True}},
                {"name": GRAD_KEYS["surrogate"]},
            ],
        }
    )
    content = header + rows.astype("<f4").tobytes()

    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.post(
                "/v2/models/digit-bits/infer",
                content=content,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )

    response = run(go())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    body = orjson.loads(response.content[:length])
    raw = response.content[length:]
    outputs = {o["name"]: o for o in body["outputs"]}
    hard_size = outputs["outputs"]["parameters"]["binary_data_size"]
    hard = np.frombuffer(raw[:hard_size], "<f4").reshape(outputs["outputs"]["shape"])
    jacobian = outputs[GRAD_KEYS["jacobian"]]
    input_grad = np.frombuffer(raw[hard_size:], "<f4").reshape(jacobian["shape"])
    np.testing.assert_array_equal(hard, expected["outputs"])
    np.testing.assert_allclose(input_grad, expected["input_grad"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        np.reshape(outputs[GRAD_KEYS["surrogate"]]["data"], (3, 4)),
        expected["surrogate"],
        rtol=1e-6,
    )


def test_v2_binary_input_with_nan_is_refused_with_its_position(models_root: Path, run) -> None:
    rows = digit_rows(2, seed=3)
    rows[1, 7] = np.nan
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "inputs",
                    "shape": [2, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    )

    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.post(
                "/v2/models/digit-bits/infer",
                content=header + rows.tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )

    response = run(go())
    assert response.status_code == 400
    assert response.json() == {
        "error": "Input 'inputs' row 1, index [7] is nan: inputs must be finite numbers."
    }
