"""The HTTP layer: API key, body limit, request ids, generic 500s, metrics, OpenAPI."""

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from svc_helpers import digit_rows, make_settings, predicted, serving

from app.main import create_app

REPO = Path(__file__).resolve().parents[2]
KEY = "s3cret-key"
MODEL_ENDPOINTS = [
    ("POST", "/predict"),
    ("POST", "/grad"),
    ("GET", "/models"),
    ("GET", "/models/digit-bits"),
    ("GET", "/models/digit-bits/versions/1"),
    ("POST", "/v1/models/digit-bits:predict"),
    ("GET", "/v1/models/digit-bits"),
    ("GET", "/v1/models/digit-bits/metadata"),
    ("GET", "/v2/models/digit-bits"),
    ("GET", "/v2/models/digit-bits/ready"),
    ("POST", "/v2/models/digit-bits/infer"),
]
OPEN_ENDPOINTS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/v2/health/live"]


def _good_body(path: str) -> dict:
    row = digit_rows(1, 0).tolist()
    if path.endswith("/infer"):
        return {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    return {"instances": row} if path.startswith("/v1") else {"inputs": row}


def test_api_key_guards_every_model_endpoint_and_leaves_health_open(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root, api_key=KEY)) as client:
            results = []
            for method, path in MODEL_ENDPOINTS:
                body = _good_body(path) if method == "POST" else None
                for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                    response = await client.request(method, path, json=body, headers=headers)
                    results.append(("denied", path, headers, response))
                for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
                    response = await client.request(method, path, json=body, headers=headers)
                    results.append(("allowed", path, headers, response))
            for path in OPEN_ENDPOINTS:
                results.append(("open", path, {}, await client.get(path)))
            return results

    for kind, path, headers, response in run(go()):
        if kind == "denied":
            assert response.status_code == 401, (path, headers)
            assert "API key" in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        else:
            assert response.status_code == 200, (kind, path, headers, response.text)


def test_declared_body_over_the_limit_is_refused_before_reading_it(models_root: Path, run) -> None:
    """A Content-Length over MAX_BODY_BYTES gets 413 without one body byte being read."""
    app = create_app(make_settings(models_root, max_body_bytes=4096))
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"999999")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"MAX_BODY_BYTES" in sent[1]["body"]


def test_streamed_body_over_the_limit_is_cut_off_while_streaming(models_root: Path, run) -> None:
    chunks_sent = 0

    async def chunks():
        nonlocal chunks_sent
        for _ in range(1000):
            chunks_sent += 1
            yield b" " * 1024

    async def go():
        async with serving(make_settings(models_root, max_body_bytes=16 * 1024)) as client:
            return await client.post(
                "/predict", content=chunks(), headers={"content-type": "application/json"}
            )

    response = run(go())
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["error"]
    assert chunks_sent <= 18  # stopped right after the limit, not after 1000 chunks


def test_request_id_is_echoed_or_made_and_matches_the_error_body(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            kept = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
            replaced = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
            error = await client.post("/predict", json={"inputs": []})
            return kept, replaced, error

    kept, replaced, error = run(go())
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    assert len(replaced.headers["x-request-id"]) == 32
    assert error.json()["request_id"] == error.headers["x-request-id"]


def test_unexpected_error_is_a_generic_500_without_traceback_or_path(
    models_root: Path, run, caplog: pytest.LogCaptureFixture
) -> None:
    async def go():
        async with serving(make_settings(models_root, batch_max_size=1)) as client:
            served = client.app.state.repository.resolve(None)

            async def broken(signature: str, inputs: dict) -> dict:
                raise RuntimeError(f"kaboom in {models_root}/secret/file.py")

            served.call = broken
            response = await client.post("/predict", json={"inputs": digit_rows(1, 0).tolist()})
            v1 = await client.post(
                "/v1/models/digit-bits:predict", json={"instances": digit_rows(1, 0).tolist()}
            )
            return response, v1

    response, v1 = run(go())
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    for text in (response.text, v1.text):
        assert "kaboom" not in text and "Traceback" not in text and str(models_root) not in text
    assert v1.status_code == 500 and set(v1.json()) == {"error"}
    assert any("kaboom" in (r.exc_text or str(r.exc_info)) for r in caplog.records if r.exc_info)


def test_unknown_route_and_wrong_method_answer_in_the_error_shape(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.get("/nope/../../etc/passwd"), await client.get("/predict")

    missing, wrong_method = run(go())
    assert missing.status_code == 404 and "error" in missing.json()
    assert "passwd" not in missing.text
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_metrics_count_requests_batches_and_serving_version(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            for _ in range(3):
                await client.post("/predict", json={"inputs": digit_rows(2, 0).tolist()})
            await client.post("/predict", json={"inputs": []})
            return await client.get("/metrics")

    response = run(go())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'diffround_http_requests_total{method="POST",route="/predict",status="200"} 3.0' in text
    assert 'diffround_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'diffround_batch_rows_sum{model="digit-bits",signature="serving_default"} 6.0' in text
    assert 'diffround_model_serving_version{model="digit-bits"} 1.0' in text
    assert "diffround_ready 1.0" in text
    assert 'diffround_http_request_duration_seconds_count{route="/predict"} 4.0' in text


def test_openapi_documents_every_error_status_with_its_body(models_root: Path) -> None:
    spec = create_app(make_settings(models_root)).openapi()
    expectations = {
        ("/predict", "post"): {"200", "401", "404", "413", "415", "422", "500", "503"},
        ("/grad", "post"): {"200", "401", "404", "413", "415", "422", "500", "503"},
        ("/v1/models/{name}:predict", "post"): {"200", "400", "401", "404", "413", "503"},
        ("/v2/models/{name}/infer", "post"): {"200", "400", "401", "404", "413", "415", "503"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), codes in expectations.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, codes - set(responses))
        for code in codes - {"200"}:
            schema = responses[code]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[1]
            assert "error" in spec["components"]["schemas"][name]["properties"]
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/PredictRequest"
    assert "InferInputTensor" in spec["components"]["schemas"]
    # No route is left with only FastAPI's default 422 body (HTTPValidationError).
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_app_never_imports_diffround_or_model() -> None:
    code = (
        "import sys; from app.main import create_app; import app.__main__; create_app(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('diffround', 'model')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    for source in (REPO / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"diffround", "model"}, f"{source} imports {roots}"


def test_concurrent_requests_to_two_models_are_never_mixed(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    from svc_helpers import reference_outputs
    from svc_models import install

    install(model_store["hash"], models_root, "digit-hash", 1)
    requests = [(("digit-bits", "digit-hash")[i % 2], digit_rows(2, 500 + i)) for i in range(40)]
    stores = {"digit-bits": model_store["bits-a"], "digit-hash": model_store["hash"]}

    async def go():
        async with serving(make_settings(models_root)) as client:
            await client.app.state.repository.poll_once()
            return await asyncio.gather(
                *[
                    client.post("/predict", json={"inputs": rows.tolist(), "model": name})
                    for name, rows in requests
                ]
            )

    for (name, rows), response in zip(requests, run(go()), strict=True):
        body = response.json()
        assert body["model"] == name
        want = reference_outputs(stores[name], rows)["outputs"]
        np.testing.assert_array_equal(predicted(body), want)
