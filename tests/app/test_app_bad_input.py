"""Every bad input gets its status code and a message naming the problem; the service stays well."""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from svc_helpers import digit_rows, make_settings, predicted, reference_outputs

from app.main import create_app

MAX_ROWS = 8
MAX_BODY = 64 * 1024
GOOD_ROW = [float(v) for v in range(64)]
JSON = {"content-type": "application/json"}


def row_with(value: str) -> bytes:
    """A one-row body whose value 5 is the raw JSON text `value`."""
    values = [str(v) for v in range(64)]
    values[5] = value
    return ('{"inputs": [[' + ", ".join(values) + "]]}").encode()


def body(document: object) -> bytes:
    return json.dumps(document).encode()


# (case id, method, path, body, headers, status, text the message must contain)
CASES = [
    ("nan", "/predict", row_with("NaN"), JSON, 422, "NaN is not a valid input"),
    ("infinity", "/predict", row_with("Infinity"), JSON, 422, "Infinity is not a valid input"),
    ("minus-infinity", "/predict", row_with("-Infinity"), JSON, 422, "-Infinity is not a valid"),
    ("overflows-double", "/predict", row_with("1e400"), JSON, 422, "overflows to Infinity"),
    ("overflows-float32", "/predict", row_with("1e39"), JSON, 422, "outside float32's range"),
    (
        "string-value",
        "/predict",
        row_with('"7"'),
        JSON,
        422,
        "Input 'inputs' row 0, index [5] is a string",
    ),
    (
        "null-value",
        "/predict",
        row_with("null"),
        JSON,
        422,
        "Input 'inputs' row 0, index [5] is null",
    ),
    (
        "boolean-value",
        "/predict",
        row_with("true"),
        JSON,
        422,
        "Input 'inputs' row 0, index [5] is a boolean (true), expected a number",
    ),
    ("nested-value", "/predict", row_with("[1, 2]"), JSON, 422, "nested too deep"),
    (
        "object-value",
        "/predict",
        row_with('{"a": 1}'),
        JSON,
        422,
        "Input 'inputs' row 0, index [5] is an object",
    ),
    (
        "ragged-rows",
        "/predict",
        body({"inputs": [GOOD_ROW, GOOD_ROW[:63]]}),
        JSON,
        422,
        "Input 'inputs' row 1 has shape [63], expected [64]",
    ),
    (
        "too-wide",
        "/predict",
        body({"inputs": [[*GOOD_ROW, 1.0]]}),
        JSON,
        422,
        "Input 'inputs' rows have shape [65], expected [64]",
    ),
    ("empty-batch", "/predict", body({"inputs": []}), JSON, 422, "Empty batch"),
    (
        "empty-row",
        "/predict",
        body({"inputs": [[]]}),
        JSON,
        422,
        "Input 'inputs' rows have shape [0], expected [64]",
    ),
    ("flat-row", "/predict", body({"inputs": GOOD_ROW}), JSON, 422, "wrap a single row"),
    ("rows-not-list", "/predict", body({"inputs": {"a": 1}}), JSON, 422, "Missing input 'inputs'"),
    (
        "rows-scalar",
        "/predict",
        body({"inputs": 3}),
        JSON,
        422,
        "Input 'inputs' has shape [], expected [-1, 64]",
    ),
    (
        "batch-over-limit",
        "/predict",
        body({"inputs": [GOOD_ROW] * (MAX_ROWS + 1)}),
        JSON,
        413,
        "over the limit of 8 rows (MAX_BATCH_ROWS)",
    ),
    (
        "body-over-limit",
        "/predict",
        body({"inputs": [GOOD_ROW] * 2, "pad": "x" * MAX_BODY}),
        JSON,
        413,
        "MAX_BODY_BYTES",
    ),
    ("truncated-json", "/predict", b'{"inputs": [[1, 2', JSON, 422, "not valid JSON"),
    (
        "invalid-utf8",
        "/predict",
        b'{"inputs": "\xff\xfe"}',
        JSON,
        422,
        "not valid UTF-8 (byte 0xff at offset 12: invalid start byte)",
    ),
    ("empty-body", "/predict", b"", JSON, 422, "body is empty"),
    ("deep-nesting", "/predict", b"[" * 2000 + b"]" * 2000, JSON, 422, "nested too deeply"),
    ("not-an-object", "/predict", body([GOOD_ROW]), JSON, 422, "must be a JSON object"),
    (
        "text-plain",
        "/predict",
        body({"inputs": [GOOD_ROW]}),
        {"content-type": "text/plain"},
        415,
        "Unsupported Content-Type 'text/plain'",
    ),
    (
        "form-post",
        "/grad",
        b"inputs=1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "application/json",
    ),
    (
        "duplicate-key",
        "/predict",
        b'{"inputs": [[1]], "inputs": [[2]]}',
        JSON,
        422,
        "Duplicate key 'inputs'",
    ),
    (
        "unknown-field",
        "/predict",
        body({"inputs": [GOOD_ROW], "foo": 1}),
        JSON,
        422,
        "Unknown field 'foo'",
    ),
    (
        "inputs-and-instances",
        "/predict",
        body({"inputs": [GOOD_ROW], "instances": [GOOD_ROW]}),
        JSON,
        422,
        "not both",
    ),
    ("no-rows-field", "/predict", body({"model": "digit-bits"}), JSON, 422, "Missing 'inputs'"),
    (
        "unknown-model",
        "/predict",
        body({"inputs": [GOOD_ROW], "model": "nope"}),
        JSON,
        404,
        "Model 'nope' not found",
    ),
    (
        "unknown-version",
        "/predict",
        body({"inputs": [GOOD_ROW], "version": 7}),
        JSON,
        404,
        "has no version 7",
    ),
    (
        "negative-version",
        "/predict",
        body({"inputs": [GOOD_ROW], "version": -1}),
        JSON,
        422,
        "'version' must be a positive integer",
    ),
    (
        "string-version",
        "/grad",
        body({"inputs": [GOOD_ROW], "version": "1"}),
        JSON,
        422,
        "'version' must be a positive integer",
    ),
    (
        "model-not-string",
        "/predict",
        body({"inputs": [GOOD_ROW], "model": 3}),
        JSON,
        422,
        "'model' must be a string",
    ),
    (
        "path-traversal-model",
        "/predict",
        body({"inputs": [GOOD_ROW], "model": "../../etc/passwd"}),
        JSON,
        404,
        "Invalid model name",
    ),
    ("grad-nan", "/grad", row_with("NaN"), JSON, 422, "NaN is not a valid input"),
    (
        "tfserving-missing-keys",
        "/v1/models/digit-bits:predict",
        body({"signature_name": "serving_default"}),
        JSON,
        400,
        "Missing 'inputs' or 'instances' key: send {\"instances\": [<row>, ...]} or "
        '{"inputs": <tensor or object of named tensors>}.',
    ),
    (
        "tfserving-wrong-width",
        "/v1/models/digit-bits:predict",
        body({"instances": [GOOD_ROW[:10]]}),
        JSON,
        400,
        "Input 'inputs' rows have shape [10], expected [64]",
    ),
    (
        "tfserving-unknown-signature",
        "/v1/models/digit-bits:predict",
        body({"instances": [GOOD_ROW], "signature_name": "classify"}),
        JSON,
        400,
        'Serving signature name: "classify" not found',
    ),
    (
        "tfserving-unknown-model",
        "/v1/models/nope:predict",
        body({"instances": [GOOD_ROW]}),
        JSON,
        404,
        "Model 'nope' not found",
    ),
    (
        "tfserving-negative-version",
        "/v1/models/digit-bits/versions/-1:predict",
        body({"instances": [GOOD_ROW]}),
        JSON,
        404,
        "versions are positive integers",
    ),
    (
        "v2-wrong-shape",
        "/v2/models/digit-bits/infer",
        body(
            {"inputs": [{"name": "inputs", "shape": [1, 63], "datatype": "FP32", "data": [0] * 63}]}
        ),
        JSON,
        400,
        "Input 'inputs' rows have shape [63], expected [64]",
    ),
    (
        "v2-data-count",
        "/v2/models/digit-bits/infer",
        body(
            {"inputs": [{"name": "inputs", "shape": [2, 64], "datatype": "FP32", "data": GOOD_ROW}]}
        ),
        JSON,
        400,
        "has 64 values, but its shape needs 128",
    ),
    (
        "v2-string-data",
        "/v2/models/digit-bits/infer",
        body(
            {
                "inputs": [
                    {"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ["a"] * 64}
                ]
            }
        ),
        JSON,
        400,
        "Input 'inputs' row 0, index [0] is a string",
    ),
    (
        "v2-unknown-output",
        "/v2/models/digit-bits/infer",
        body(
            {
                "inputs": [
                    {"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": GOOD_ROW}
                ],
                "outputs": [{"name": "logits"}],
            }
        ),
        JSON,
        400,
        "Unknown output 'logits'",
    ),
    (
        "v2-unknown-input",
        "/v2/models/digit-bits/infer",
        body({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": GOOD_ROW}]}),
        JSON,
        400,
        "Unknown input 'x'",
    ),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_store: dict[str, Path]) -> Iterator:
    from svc_models import install

    root = tmp_path_factory.mktemp("bad-input-models")
    install(model_store["bits-a"], root, "digit-bits", 1)
    settings = make_settings(root, max_batch_rows=MAX_ROWS, max_body_bytes=MAX_BODY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        for _ in range(300):
            if test_client.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.05)
        test_client.version_dir = root / "digit-bits" / "1"  # type: ignore[attr-defined]
        yield test_client


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_gets_its_status_and_a_message_naming_the_problem(
    client: TestClient, path: str, content: bytes, headers: dict, status: int, message: str
) -> None:
    response = client.post(path, content=content, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    assert "Traceback" not in response.text and "/tmp" not in response.text
    if path.startswith(("/v1/", "/v2/")):
        assert set(response.json()) == {"error"}
    else:
        assert response.json()["request_id"] == response.headers["x-request-id"]
    # ... and the service is still ready and answers the next good request correctly.
    assert client.get("/readyz").status_code == 200
    rows = digit_rows(2, seed=len(path) + status)
    good = client.post("/predict", json={"inputs": rows.tolist()})
    expected = reference_outputs(client.version_dir, rows)["outputs"]
    np.testing.assert_array_equal(predicted(good.json()), expected)


def test_catalogue_enumerates_at_least_thirty_distinct_cases() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
