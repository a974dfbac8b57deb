"""Hostile inputs found from outside (issue 12), each answered with a 4xx over TCP, never a 5xx.

Against the shared `live` server (`python -m app` on the default model):

- nesting: every route and every field of its body, nested around orjson's
  limit (990..1030 levels) and at depths sampled from 1..2000, as arrays and
  as objects: accepted, or 4xx saying it is nested too deeply (the service
  refuses more than `MAX_JSON_DEPTH` levels before any walk of the document);
- numeric headers of 5000 digits: 4xx naming the header;
- a response over `MAX_RESPONSE_BYTES` (one output asked for 10000 times):
  413 before it is built;
- a client hanging up mid-upload: logged at info with status 499, never 500;
- requests over `MAX_CONCURRENT_REQUESTS` (a server of its own, bound 2):
  503 with `Retry-After`, while health probes still answer.

After each group, `/readyz` is 200 and good requests answer exactly as the
SavedModel does in this process.
"""

from __future__ import annotations

import json
import random
import socket
import time

import pytest
import rel_support as support
from test_reliability_bad_input import GOOD_KINDS, check_good_request

from app.validation import MAX_JSON_DEPTH

MODEL = "digit-bits"
ROW = ",".join(str(float(v % 17)) for v in range(64))
V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"
X = "@X@"  # where the nested value goes


def v2_tensor(
    name: str = '"inputs"',
    shape: str = "[1, 64]",
    datatype: str = '"FP32"',
    data: str = f"[{ROW}]",
    extra: str = "",
) -> str:
    return f'{{"name": {name}, "shape": {shape}, "datatype": {datatype}, "data": {data}{extra}}}'


def v2(tensor: str, tail: str = "", head: str = "") -> str:
    return "{" + head + '"inputs": [' + tensor + "]" + tail + "}"


#: (route, field, body with `X` where the nested value goes, levels the body adds around it).
FIELDS: list[tuple[str, str, str, int]] = [
    ("/predict", "inputs", '{"inputs": @X@}', 1),
    ("/predict", "instances", '{"instances": @X@}', 1),
    ("/predict", "inputs row", '{"inputs": [@X@]}', 2),
    ("/predict", "model", '{"inputs": [[' + ROW + ']], "model": @X@}', 1),
    ("/predict", "version", '{"inputs": [[' + ROW + ']], "version": @X@}', 1),
    ("/grad", "inputs", '{"inputs": @X@}', 1),
    ("/grad", "instances value", '{"instances": [[' + ROW[: ROW.rindex(",") + 1] + "@X@]]}", 3),
    (V1, "instances", '{"instances": @X@}', 1),
    (V1, "inputs", '{"inputs": @X@}', 1),
    (V1, "named inputs", '{"inputs": {"inputs": @X@}}', 2),
    (V1, "named instance", '{"instances": [{"inputs": @X@}]}', 3),
    (V1, "signature_name", '{"signature_name": @X@, "instances": [[' + ROW + "]]}", 1),
    (V2, "inputs", '{"inputs": @X@}', 1),
    (V2, "data", v2(v2_tensor(data=X)), 3),
    (V2, "shape", v2(v2_tensor(shape=X)), 3),
    (V2, "name", v2(v2_tensor(name=X)), 3),
    (V2, "datatype", v2(v2_tensor(datatype=X)), 3),
    (V2, "tensor parameters", v2(v2_tensor(extra=', "parameters": @X@')), 3),
    (V2, "parameters", v2(v2_tensor(), head='"parameters": @X@, '), 1),
    (V2, "outputs", v2(v2_tensor(), tail=', "outputs": @X@'), 1),
    (V2, "output name", v2(v2_tensor(), tail=', "outputs": [{"name": @X@}]'), 3),
    (V2, "id", v2(v2_tensor(), head='"id": @X@, '), 1),
]


def nested(depth: int, form: str) -> str:
    """A value `depth` levels deep: arrays around a number, or objects around one."""
    if form == "array":
        return "[" * depth + "1" + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def depths() -> list[int]:
    sampled = random.Random(12).sample(range(1, 2001), 40)
    return sorted({*range(990, 1031), 1, 2, 63, 64, 65, 1024, 1025, 2000, *sampled})


@pytest.fixture(scope="module")
def client(live: support.ServerProcess):
    return live.client()


@pytest.mark.parametrize("form", ["array", "object"])
def test_any_nesting_on_any_route_and_field_is_accepted_or_a_4xx(
    live: support.ServerProcess, client, reference: support.Reference, form: str
) -> None:
    statuses: dict[int, int] = {}
    for path, field, envelope, levels in FIELDS:
        for depth in depths():
            body = envelope.replace(X, nested(depth, form)).encode()
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            where = f"{path} {field} nested {depth} deep ({form}s): {response.status_code}"
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{where} {response.text[:300]}"
            if depth + levels > MAX_JSON_DEPTH:
                assert response.status_code in (400, 422), where
                assert "nested too deeply" in response.json()["error"], where
    support.record(f"nesting cases sent ({form}s)", sum(statuses.values()))
    assert client.get("/readyz").status_code == 200
    for seed, kind in enumerate(GOOD_KINDS):
        check_good_request(client, reference, kind, seed)


@pytest.mark.parametrize("digits", [19, 4301, 5000])
def test_a_numeric_header_of_thousands_of_digits_is_a_400_naming_it(
    client, reference: support.Reference, digits: int
) -> None:
    body = v2(v2_tensor()).encode()
    response = client.post(
        V2,
        content=body,
        headers={
            "content-type": "application/json",
            "inference-header-content-length": "9" * digits,
        },
    )
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length" in response.json()["error"]
    check_good_request(client, reference, "v2", digits)


def test_a_content_length_of_thousands_of_digits_is_refused_without_a_500(
    live: support.ServerProcess,
) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {'9' * 5000}\r\n\r\n"
    )
    try:
        status, _, _ = support.raw_request(live.port, head.encode() + b"{}")
    except (ConnectionResetError, AssertionError):  # refused by the HTTP parser itself
        status = 400
    assert 400 <= status < 500, status


def test_a_response_over_the_budget_is_a_413_before_it_is_built(
    live: support.ServerProcess, client, reference: support.Reference
) -> None:
    # The request: one output asked for 10000 times (222 KB), which built 501 MB;
    # the output is the largest the model has (its Jacobian, from the metadata's grad map).
    grad_output = next(iter(reference.grad_map["outputs"].values()))
    jacobian = next(iter(grad_output["jacobians"].values()))
    outputs = ",".join([json.dumps({"name": jacobian})] * 10000)
    body = v2(v2_tensor(), tail=f', "outputs": [{outputs}]').encode()
    rss_before = live.rss_bytes()
    start = time.monotonic()
    response = client.post(V2, content=body, headers={"content-type": "application/json"})
    seconds = time.monotonic() - start
    assert response.status_code in (400, 413), response.text[:300]
    assert "MAX_RESPONSE_BYTES" in response.text or "more than once" in response.text
    assert seconds < 2.0
    assert live.rss_bytes() - rss_before < 200 * 1024 * 1024
    support.record("10000 repeated outputs: answer time (s)", round(seconds, 2))
    assert client.get("/readyz").status_code == 200
    check_good_request(client, reference, "v2-grad", 7)


def test_a_client_hanging_up_mid_upload_is_a_499_at_info_never_a_500(
    live: support.ServerProcess, client, reference: support.Reference
) -> None:
    paths = ["/predict", "/grad", V1, V2]
    for path in paths:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"inputs": [[' + b"1," * 100)
            time.sleep(0.2)  # the route is waiting for the rest of the body
    for path in paths:
        record = live.wait_log(
            lambda r, path=path: (
                r.get("message") == "request" and r.get("path") == path and r.get("status") == 499
            ),
            10,
            f"a 499 for {path}",
        )
        assert record["level"].lower() == "info", record
    errors = [
        r
        for r in live.log_records()
        if r.get("message") == "unhandled error" or r.get("status") == 500
    ]
    assert not errors, errors[:3]
    metrics = client.get("/metrics").text
    assert 'status="499"' in metrics
    assert client.get("/readyz").status_code == 200
    check_good_request(client, reference, "predict", 11)


def test_requests_over_the_concurrency_bound_get_503_and_probes_still_answer(
    start_server, reliability_models_root, reference: support.Reference
) -> None:
    server = start_server(
        reliability_models_root, MAX_CONCURRENT_REQUESTS="2", MAX_QUEUED_REQUESTS="0"
    )
    server.wait_ready()
    client = server.client()
    rows = support.digit_rows(2, 3)
    body = json.dumps({"inputs": rows.tolist()}).encode()
    half = len(body) // 2
    held = []
    for _ in range(2):  # two requests in flight: headers and half the body sent
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        head = (
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:half])
        held.append(sock)
    time.sleep(0.3)
    refused = client.post("/predict", json={"inputs": rows.tolist()})
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "MAX_CONCURRENT_REQUESTS" in refused.json()["error"]
    assert client.get("/healthz").status_code == 200  # probes are never refused
    assert client.get("/readyz").status_code == 200
    for sock in held:  # the two finish with correct answers
        sock.sendall(body[half:])
        status, _, answer = support.read_response(sock)
        sock.close()
        assert status == 200, answer
        got = support.as_arrays(json.loads(answer)["outputs"])
        support.assert_outputs_equal(got, reference.predict(rows), "held request")
    check_good_request(client, reference, "grad", 5)
