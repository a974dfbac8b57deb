"""Hostile input over TCP: each case gets a 4xx naming the problem; the service stays well.

Runs against the real `python -m app` process (the shared `live` server,
MAX_BATCH_ROWS=256, MAX_BODY_BYTES=1 MiB). After every case, `/readyz` is 200
and the next good request (rotating over `/predict`, `/grad`, TF Serving and
v2) answers exactly what `tf.saved_model.load` answers in this process.

Tiny floats: denormals (1e-45) and values that underflow float32 (1e-50)
are accepted and rounded to the nearest float32 (1.4e-45, 0.0), as NumPy and
TF Serving do; only values that overflow float32 (|x| > 3.4e38) are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import rel_support as support
from rel_support import LIVE_MAX_BATCH_ROWS as MAX_BATCH_ROWS
from rel_support import LIVE_MAX_BODY_BYTES as MAX_BODY_BYTES

JSON = {"content-type": "application/json"}
ROW = [float(v % 17) for v in range(64)]
MODEL = "digit-bits"
#: The default model's input and output (the Makefile's TRAIN_ARGS); the bodies below are
#: written for them, and `test_the_served_model_is_the_one_the_catalogue_is_written_for`
#: checks them against the served model's own metadata.
INPUT, OUTPUT = "inputs", "bits"


def row_with(value: str, wrap: str = '{{"inputs": [{row}]}}') -> bytes:
    """A one-row body whose value 5 is the raw JSON text `value`."""
    values = [str(v) for v in ROW]
    values[5] = value
    return wrap.format(row="[" + ", ".join(values) + "]").encode()


def v2_body(data: object, shape: object = (1, 64), **extra: object) -> bytes:
    tensor = {"name": INPUT, "shape": list(shape), "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def doc(document: object) -> bytes:
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Case:
    """One hostile request and what must come back."""

    id: str
    method: str
    path: str
    body: bytes = b""
    headers: dict | None = None
    status: int = 422
    message: str = ""
    mode: str = "normal"  # normal | chunked | raw (the body is the whole request)


V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"
OVER_BODY = doc({"inputs": [ROW], "model": MODEL, "pad": "x" * MAX_BODY_BYTES})


def raw_get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def raw_post(target: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


CASES = [
    # non-finite and out-of-range numbers
    Case("nan", "POST", "/predict", row_with("NaN"), JSON, 422, "NaN is not a valid input"),
    Case("infinity-grad", "POST", "/grad", row_with("Infinity"), JSON, 422, "Infinity"),
    Case(
        "minus-infinity-v1",
        "POST",
        V1,
        row_with("-Infinity", '{{"instances": [{row}]}}'),
        JSON,
        400,
        "-Infinity is not a valid input",
    ),
    Case(
        "huge-float32", "POST", "/predict", row_with("1e39"), JSON, 422, "outside float32's range"
    ),
    Case("huge-negative-grad", "POST", "/grad", row_with("-3.5e38"), JSON, 422, "float32"),
    Case("huge-v2", "POST", V2, v2_body([1e39] * 64), JSON, 400, "outside float32's range"),
    Case(
        "overflows-double-v1",
        "POST",
        V1,
        row_with("1e400", '{{"instances": [{row}]}}'),
        JSON,
        400,
        "overflows to Infinity",
    ),
    # wrong types
    Case(
        "string-number",
        "POST",
        "/predict",
        row_with('"7"'),
        JSON,
        422,
        f"Input '{INPUT}' row 0, index [5] is a string ('7'), expected a number.",
    ),
    Case("string-v2", "POST", V2, v2_body(["a"] * 64), JSON, 400, "is a string"),
    Case(
        "boolean-grad",
        "POST",
        "/grad",
        row_with("true"),
        JSON,
        422,
        f"Input '{INPUT}' row 0, index [5] is a boolean",
    ),
    Case(
        "null-value",
        "POST",
        "/predict",
        row_with("null"),
        JSON,
        422,
        f"Input '{INPUT}' row 0, index [5] is null",
    ),
    Case("nested-value", "POST", "/predict", row_with("[1, 2]"), JSON, 422, "nested too deep"),
    Case(
        "deep-nesting",
        "POST",
        "/predict",
        b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        JSON,
        422,
        "nested too deeply",
    ),
    Case(
        "deep-nesting-v2",
        "POST",
        V2,
        b"[" * 100_000 + b"]" * 100_000,
        JSON,
        400,
        "nested too deeply",
    ),
    Case("body-not-object", "POST", "/grad", doc([ROW]), JSON, 422, "must be a JSON object"),
    # shapes
    Case(
        "ragged-rows",
        "POST",
        "/predict",
        doc({"inputs": [ROW, ROW[:63]]}),
        JSON,
        422,
        f"Input '{INPUT}' row 1 has shape [63], expected [64].",
    ),
    Case(
        "wrong-width-v1",
        "POST",
        V1,
        doc({"instances": [ROW[:10]]}),
        JSON,
        400,
        f"Input '{INPUT}' rows have shape [10], expected [64].",
    ),
    Case(
        "wrong-width-v2",
        "POST",
        V2,
        v2_body(ROW[:63], (1, 63)),
        JSON,
        400,
        f"Input '{INPUT}' rows have shape [63], expected [64].",
    ),
    Case("flat-row", "POST", "/grad", doc({"inputs": ROW}), JSON, 422, "wrap a single row"),
    Case(
        "v2-data-count",
        "POST",
        V2,
        v2_body(ROW, (2, 64)),
        JSON,
        400,
        "has 64 values, but its shape needs 128",
    ),
    Case(
        "empty-batch",
        "POST",
        "/predict",
        doc({"inputs": []}),
        JSON,
        422,
        f"Empty batch: Input '{INPUT}' has no rows; send at least one row.",
    ),
    Case(
        "missing-named-input",
        "POST",
        "/predict",
        doc({"inputs": {"x": [ROW]}}),
        JSON,
        422,
        f"Missing input '{INPUT}': the signature takes '{INPUT}' float32 [-1, 64].",
    ),
    Case(
        "missing-named-input-v1",
        "POST",
        V1,
        doc({"inputs": {"x": [ROW]}}),
        JSON,
        400,
        f"Missing input '{INPUT}'",
    ),
    Case(
        "missing-named-input-row-grad",
        "POST",
        "/grad",
        doc({"instances": [{"x": ROW}]}),
        JSON,
        422,
        f"Row 0 is missing named input: {INPUT}",
    ),
    Case("empty-batch-v1", "POST", V1, doc({"instances": []}), JSON, 400, "Empty batch"),
    Case("empty-batch-v2", "POST", V2, v2_body([], (0, 64)), JSON, 400, "Empty batch"),
    # limits
    Case(
        "batch-over-limit",
        "POST",
        "/predict",
        doc({"inputs": [ROW] * (MAX_BATCH_ROWS + 1)}),
        JSON,
        413,
        f"over the limit of {MAX_BATCH_ROWS} rows (MAX_BATCH_ROWS)",
    ),
    Case(
        "batch-over-limit-v2",
        "POST",
        V2,
        v2_body([0.0] * 64 * (MAX_BATCH_ROWS + 1), (MAX_BATCH_ROWS + 1, 64)),
        JSON,
        413,
        "MAX_BATCH_ROWS",
    ),
    Case("body-over-limit", "POST", "/predict", OVER_BODY, JSON, 413, "MAX_BODY_BYTES"),
    Case(
        "body-over-limit-chunked",
        "POST",
        "/grad",
        OVER_BODY,
        JSON,
        413,
        "MAX_BODY_BYTES",
        mode="chunked",
    ),
    Case(
        "body-over-limit-v1-chunked",
        "POST",
        V1,
        OVER_BODY,
        JSON,
        413,
        "MAX_BODY_BYTES",
        mode="chunked",
    ),
    # broken bytes
    Case("truncated-json", "POST", "/predict", b'{"inputs": [[1, 2', JSON, 422, "not valid JSON"),
    Case("truncated-json-v2", "POST", V2, v2_body(ROW)[:-7], JSON, 400, "not valid JSON"),
    Case(
        "invalid-utf8",
        "POST",
        "/predict",
        b'{"inputs": "\xff\xfe\xfd"}',
        JSON,
        422,
        "not valid UTF-8",
    ),
    Case("invalid-utf8-key-v1", "POST", V1, b'{"\xc3\x28": [[1]]}', JSON, 400, "UTF-8"),
    Case("empty-body", "POST", "/grad", b"", JSON, 422, "body is empty"),
    Case(
        "text-plain",
        "POST",
        "/predict",
        doc({"inputs": [ROW]}),
        {"content-type": "text/plain"},
        415,
        "Unsupported Content-Type 'text/plain'",
    ),
    Case(
        "form-post-grad",
        "POST",
        "/grad",
        b"inputs=1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "application/json",
    ),
    Case(
        # TF Serving reads the body as JSON whatever the Content-Type; so does /v1.
        "xml-v1",
        "POST",
        V1,
        b"<instances/>",
        {"content-type": "application/xml"},
        400,
        "not valid JSON",
    ),
    Case("text-v2", "POST", V2, v2_body(ROW), {"content-type": "text/csv"}, 415, "text/csv"),
    Case(
        "v2-header-length-bogus",
        "POST",
        V2,
        v2_body(ROW),
        {**JSON, "inference-header-content-length": "999999"},
        400,
        "Inference-Header-Content-Length",
    ),
    # fields
    Case(
        "duplicate-key",
        "POST",
        "/predict",
        b'{"inputs": [[1]], "inputs": [[2]]}',
        JSON,
        422,
        "Duplicate key 'inputs'",
    ),
    Case(
        "duplicate-key-nested-v2",
        "POST",
        V2,
        b'{"inputs": [{"name": "inputs", "name": "x", "shape": [1, 64], "datatype": "FP32",'
        b' "data": [' + b",".join(b"0" for _ in range(64)) + b"]}]}",
        JSON,
        400,
        "Duplicate key 'name'",
    ),
    Case(
        "unknown-field",
        "POST",
        "/predict",
        doc({"inputs": [ROW], "foo": 1}),
        JSON,
        422,
        "Unknown field 'foo'",
    ),
    Case(
        "unknown-field-v1",
        "POST",
        V1,
        doc({"instances": [ROW], "bar": 1}),
        JSON,
        400,
        "Unknown field 'bar'",
    ),
    Case(
        "unknown-input-v2",
        "POST",
        V2,
        doc({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}),
        JSON,
        400,
        "Unknown input 'x'",
    ),
    Case(
        "unknown-output-v2",
        "POST",
        V2,
        v2_body(ROW, outputs=[{"name": "logits"}]),
        JSON,
        400,
        f"Unknown output 'logits': outputs are {OUTPUT}",
    ),
    Case(
        "repeated-output-v2",
        "POST",
        V2,
        v2_body(ROW, outputs=[{"name": OUTPUT}, {"name": OUTPUT}]),
        JSON,
        400,
        f"Output '{OUTPUT}' is requested more than once",
    ),
    Case(
        "unknown-signature-v1",
        "POST",
        V1,
        doc({"instances": [ROW], "signature_name": "classify"}),
        JSON,
        400,
        'Serving signature name: "classify" not found',
    ),
    Case(
        "inputs-and-instances",
        "POST",
        "/grad",
        doc({"inputs": [ROW], "instances": [ROW]}),
        JSON,
        422,
        "not both",
    ),
    Case("missing-rows", "POST", "/predict", doc({"model": MODEL}), JSON, 422, "Missing 'inputs'"),
    # models and versions
    Case(
        "unknown-model",
        "POST",
        "/predict",
        doc({"inputs": [ROW], "model": "nope"}),
        JSON,
        404,
        "Model 'nope' not found",
    ),
    Case(
        "unknown-model-v1",
        "POST",
        "/v1/models/nope:predict",
        doc({"instances": [ROW]}),
        JSON,
        404,
        "Model 'nope' not found",
    ),
    Case(
        "unknown-model-v2",
        "POST",
        "/v2/models/nope/infer",
        v2_body(ROW),
        JSON,
        404,
        "Model 'nope' not found",
    ),
    Case(
        "unknown-version",
        "POST",
        "/grad",
        doc({"inputs": [ROW], "version": 7}),
        JSON,
        404,
        "has no version 7",
    ),
    Case(
        "unknown-version-v1",
        "POST",
        f"/v1/models/{MODEL}/versions/7:predict",
        doc({"instances": [ROW]}),
        JSON,
        404,
        "has no version 7",
    ),
    Case(
        "unknown-version-v2-ready",
        "GET",
        f"/v2/models/{MODEL}/versions/9/ready",
        status=404,
        message="has no version 9",
    ),
    Case(
        "negative-version",
        "POST",
        "/predict",
        doc({"inputs": [ROW], "version": -1}),
        JSON,
        422,
        "'version' must be a positive integer",
    ),
    Case(
        "zero-version",
        "POST",
        "/predict",
        doc({"inputs": [ROW], "version": 0}),
        JSON,
        422,
        "'version' must be a positive integer",
    ),
    Case(
        "negative-version-v1",
        "POST",
        f"/v1/models/{MODEL}/versions/-1:predict",
        doc({"instances": [ROW]}),
        JSON,
        404,
        "versions are positive integers",
    ),
    Case(
        "negative-version-v2",
        "POST",
        f"/v2/models/{MODEL}/versions/-1/infer",
        v2_body(ROW),
        JSON,
        404,
        "versions are positive integers",
    ),
    Case(
        "huge-version-metadata",
        "GET",
        f"/models/{MODEL}/versions/{'9' * 40}",
        status=404,
        message="versions are positive integers",
    ),
    # path traversal
    Case(
        "traversal-model-field",
        "POST",
        "/predict",
        doc({"inputs": [ROW], "model": "../../etc/passwd"}),
        JSON,
        404,
        "Invalid model name",
    ),
    Case(
        "traversal-dotdot-v2",
        "POST",
        "/v2/models/%2e%2e/infer",
        v2_body(ROW),
        JSON,
        404,
        "Invalid model name",
    ),
    Case(
        "traversal-encoded-slash-v1",
        "GET",
        "/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        status=404,
        message="No such endpoint",
    ),
    Case(
        "traversal-encoded-metadata",
        "GET",
        "/models/%2e%2e%2fdigit-bits",
        status=404,
        message="No such endpoint",
    ),
    Case(
        "traversal-literal-raw",
        "GET",
        "",
        raw_get("/models/../../../etc/passwd"),
        status=404,
        message="No such endpoint",
        mode="raw",
    ),
    Case(
        "traversal-literal-raw-v1",
        "POST",
        "",
        raw_post("/v1/models/../digit-bits:predict", doc({"instances": [ROW]})),
        status=404,
        message="No such endpoint",
        mode="raw",
    ),
    Case("traversal-dot-name", "GET", "/models/.hidden", status=404, message="Invalid model name"),
    # HTTP
    Case("wrong-method", "GET", "/predict", status=405, message="does not accept that HTTP method"),
    Case("no-such-route", "POST", "/predict/../admin", doc({}), JSON, 404, "No such endpoint"),
]


def _send(server: support.ServerProcess, client, case: Case) -> tuple[int, bytes, dict]:
    if case.mode == "raw":
        status, headers, body = support.raw_request(server.port, case.body)
        return status, body, headers
    if case.mode == "chunked":

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(case.body), 64 * 1024):
                yield case.body[start : start + 64 * 1024]

        response = client.request(case.method, case.path, content=chunks(), headers=case.headers)
        assert "content-length" not in response.request.headers
        assert response.request.headers.get("transfer-encoding") == "chunked"
    else:
        response = client.request(
            case.method, case.path, content=case.body or None, headers=case.headers
        )
    return response.status_code, response.content, dict(response.headers)


GOOD_KINDS = ("predict", "grad", "v1", "v1-grad", "v2", "v2-grad")


def _assert_floats(value: object, where: str) -> None:
    """TF Serving writes float32 values as JSON floats (`0.0`, never `0`)."""
    flat = np.asarray(value, dtype=object).reshape(-1)
    assert all(type(v) is float for v in flat), f"{where}: not all floats: {flat[:8]}"


def check_good_request(client, reference: support.Reference, kind: str, seed: int) -> None:
    """Send a good request of `kind`; its answer equals the in-process model's.

    Output and grad names come from the SavedModel (`reference`): every output of
    `serving_default`, every key of `grad`, mapped through the metadata's `grad` map.
    """
    rows = support.digit_rows(1 + seed % 4, seed, reference.input_width)
    name = reference.input_name
    where = f"good {kind} request"
    exact = {*reference.outputs, *reference.exact_grad_keys}
    if kind == "predict":
        response = client.post("/predict", json={"inputs": rows.tolist()})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == MODEL and type(body["version"]) is int, body
        support.assert_outputs_equal(
            support.as_arrays(body["outputs"]), reference.predict(rows), where
        )
    elif kind == "grad":
        response = client.post("/grad", json={"instances": rows.tolist()})
        assert response.status_code == 200, response.text
        got = reference.native_grad_tensors(response.json())
        support.assert_grad_close(got, reference.grad_expected(rows), exact, where)
    elif kind == "v1":
        response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": rows.tolist()})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        _assert_floats(predictions, where)
        support.assert_outputs_equal(
            reference.v1_arrays(predictions), reference.predict(rows), where
        )
    elif kind == "v1-grad":
        response = client.post(
            f"/v1/models/{MODEL}/versions/1:predict",
            json={"signature_name": "grad", "inputs": {name: rows.tolist()}},
        )
        assert response.status_code == 200, response.text
        support.assert_grad_close(
            support.as_arrays(response.json()["outputs"]), reference.grad(rows), exact, where
        )
    else:
        outputs = list(reference.outputs)
        if kind == "v2-grad":
            outputs += reference.grad_keys
        request = support.v2_infer_body(rows, outputs, input_name=name)
        response = client.post(f"/v2/models/{MODEL}/infer", json=request)
        assert response.status_code == 200, response.text
        tensors = support.v2_tensors(response.json())
        expected = reference.grad_expected(rows) if kind == "v2-grad" else reference.predict(rows)
        support.assert_grad_close(tensors, expected, exact, where)


@pytest.fixture(scope="module")
def client(live: support.ServerProcess):
    return live.client()


_tried: list[str] = []
_passed: list[str] = []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_service_stays_well(
    live: support.ServerProcess, client, reference: support.Reference, case: Case
) -> None:
    _tried.append(case.id)
    support.record("bad-input cases tried (each over TCP)", len(_tried))
    status, body, headers = _send(live, client, case)
    assert status == case.status, f"{case.id}: {status} {body[:300]!r}"
    assert 400 <= status < 500
    document = json.loads(body)
    assert case.message in document["error"], f"{case.id}: {document['error']!r}"
    protocol = case.path.startswith(("/v1/", "/v2")) or case.body.startswith(b"POST /v1/")
    if protocol:
        assert set(document) == {"error"}, document
    else:
        assert document["request_id"] == headers["x-request-id"]
    # ... and the service is still ready and answers the next good request correctly.
    assert client.get("/readyz").status_code == 200
    index = [c.id for c in CASES].index(case.id)
    check_good_request(client, reference, GOOD_KINDS[index % len(GOOD_KINDS)], seed=index)
    _passed.append(case.id)
    support.record(
        "bad-input cases answered other than listed, or followed by a wrong good answer",
        len(_tried) - len(_passed),
    )


def test_the_catalogue_holds_at_least_thirty_distinct_cases_over_every_protocol() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
    paths = " ".join(case.path or case.body[:40].decode("latin-1") for case in CASES)
    for route in ("/predict", "/grad", "/v1/models/", "/v2/models/"):
        assert route in paths


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-45", np.float32(1e-45)),
        ("1e-50", np.float32(0.0)),
        ("-0.0", np.float32(-0.0)),
        ("3.4e38", np.float32(3.4e38)),
        ("5e-324", np.float32(0.0)),
    ],
    ids=["denormal", "underflows-to-zero", "negative-zero", "near-float32-max", "double-denormal"],
)
def test_tiny_and_extreme_finite_floats_are_accepted_as_their_float32(
    client, reference: support.Reference, text: str, value: np.float32
) -> None:
    row = np.asarray([ROW], np.float32)
    row[0, 5] = value
    for path, wrap in (
        ("/predict", '{{"inputs": [{row}]}}'),
        (f"/v1/models/{MODEL}:predict", '{{"instances": [{row}]}}'),
    ):
        response = client.post(path, content=row_with(text, wrap), headers=JSON)
        assert response.status_code == 200, response.text
        body = response.json()
        got = (
            support.as_arrays(body["outputs"])
            if path == "/predict"
            else reference.v1_arrays(body["predictions"])
        )
        support.assert_outputs_equal(got, reference.predict(row), f"{path} {text}")


def test_the_served_model_is_the_one_the_catalogue_is_written_for(
    client, reference: support.Reference
) -> None:
    """The catalogue's bodies name `INPUT` (64 wide) and `OUTPUT`: the served metadata agrees."""
    metadata = client.get(f"/models/{MODEL}").json()
    serving = metadata["signatures"]["serving_default"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in serving["inputs"]] == [
        (INPUT, "float32", [-1, len(ROW)])
    ]
    assert OUTPUT in [o["name"] for o in serving["outputs"]]
    assert sorted(o["name"] for o in serving["outputs"]) == list(reference.outputs)
    assert sorted(o["name"] for o in metadata["signatures"]["grad"]["outputs"]) == list(
        reference.grad_keys
    )
    assert metadata["grad"] == reference.grad_map
