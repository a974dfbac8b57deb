"""Security over TCP: the API key on every model endpoint, the body limit before reading, no leaks.

The container's non-root user and read-only models mount are tested by
tests/deploy/ (the image and compose files), not here.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

import pytest
import rel_support as support
from rel_support import LIVE_MAX_BODY_BYTES

MODEL = "digit-bits"
KEY = "s3cret-key-for-tests"
#: Open whatever API_KEY says: health, readiness, metrics, v2 server metadata and health.
HEALTH = {"/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"}
ROW = [float(v % 17) for v in range(64)]


def _body_for(path: str) -> dict | None:
    if path in ("/predict", "/grad"):
        return {"inputs": [ROW]}
    if path.startswith("/v1/") and path.endswith(":predict"):
        return {"instances": [ROW]}
    if path.endswith("/infer"):
        return {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
    return None


def test_with_an_api_key_every_model_endpoint_in_the_spec_answers_401_and_health_stays_open(
    start_server, reliability_models_root: Path
) -> None:
    server = start_server(reliability_models_root, API_KEY=KEY)
    server.wait_ready()
    client = server.client()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    operations = [
        (method.upper(), path)
        for path, item in spec.json()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    ]
    model_endpoints = [(m, p) for m, p in operations if p not in HEALTH]
    assert {p for _, p in operations} >= HEALTH
    assert len(model_endpoints) >= 17, model_endpoints
    refused = 0
    for method, template in model_endpoints:
        path = template.replace("{name}", MODEL).replace("{version}", "1")
        body = _body_for(path)
        for headers, message in (
            ({}, "Missing API key"),
            ({"X-API-Key": "wrong"}, "Wrong API key"),
            ({"X-API-Key": KEY[:-1]}, "Wrong API key"),
            ({"X-API-Key": KEY + "x"}, "Wrong API key"),
            ({"Authorization": "Bearer wrong"}, "Wrong API key"),
            ({"Authorization": f"Basic {KEY}"}, "Missing API key"),
        ):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert message in response.json()["error"], (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            refused += 1
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 200, (method, path, response.text)
    for path in sorted(HEALTH):
        assert client.get(path).status_code == 200, path
    # Unknown routes do not reveal whether they exist.
    assert client.get("/admin").status_code == 401
    support.record("API key: model endpoints in the spec", len(model_endpoints))
    support.record("API key: requests without or with a wrong key, all 401", refused)


PARTIAL = b'{"inputs": [[' + b"1," * 500


def _declared_too_large(port: int, path: str) -> tuple[int, bytes, float, int]:
    """Declare a 100 MiB body, send 1 KiB of it, and read the answer."""
    declared = 100 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
            + PARTIAL
        )
        status, _, body = support.read_response(sock)
        return status, body, time.monotonic() - start, declared


@pytest.mark.parametrize(
    "path", ["/predict", "/grad", f"/v1/models/{MODEL}:predict", f"/v2/models/{MODEL}/infer"]
)
def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(
    live: support.ServerProcess, path: str
) -> None:
    status, body, seconds, declared = _declared_too_large(live.port, path)
    assert status == 413, body
    assert f"Request body of {declared} bytes is over the limit" in json.loads(body)["error"]
    assert seconds < 5
    support.record("413 for a declared 100 MiB body, after sending (bytes)", len(PARTIAL))


def test_a_streamed_body_over_the_limit_gets_413_while_it_is_still_being_sent(
    live: support.ServerProcess,
) -> None:
    """Chunked, no Content-Length, 64 KiB every 5 ms: the 413 comes before 8 of the 64 MiB."""
    planned = 64 * 1024 * 1024
    chunk = b"[" + b"1," * (32 * 1024 - 1) + b"1"  # 64 KiB of a JSON-ish number list
    sent = 0
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answered = False
        while sent < planned:
            readable, _, _ = select.select([sock], [], [], 0.005)
            if readable:
                answered = True
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            sent += len(chunk)
        assert answered, "the server read all 64 MiB without answering"
        status, _, body = support.read_response(sock)
    assert status == 413, body
    assert "MAX_BODY_BYTES" in json.loads(body)["error"]
    assert LIVE_MAX_BODY_BYTES <= sent < 8 * 1024 * 1024, sent
    support.record("413 for a streamed 64 MiB body, after sending (bytes)", sent)


def test_model_metadata_shows_no_filesystem_path(
    live: support.ServerProcess, reliability_models_root: Path
) -> None:
    """Exports record the training command (`--models-root /...`); the service must not show it."""
    client = live.client()
    for path in (f"/models/{MODEL}", f"/models/{MODEL}/versions/1", "/models"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert str(reliability_models_root.parent) not in response.text
    command = client.get(f"/models/{MODEL}").json()["training"]["command"]
    assert "--models-root" in command and "/" not in command.split("--models-root")[1]
