"""The inference fast lane: which requests it answers, and that it is the same service."""

import asyncio
from pathlib import Path

import pytest
from svc_helpers import digit_rows, make_settings, serving

from app.fastlane import FastLane
from app.middleware import RequestIds


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": []}


@pytest.mark.parametrize(
    ("path", "template", "params"),
    [
        ("/predict", "/predict", {}),
        ("/grad", "/grad", {}),
        ("/v1/models/digit-bits:predict", "/v1/models/{name}:predict", {"name": "digit-bits"}),
        (
            "/v1/models/m/versions/3:predict",
            "/v1/models/{name}/versions/{version}:predict",
            {"name": "m", "version": "3"},
        ),
        ("/v2/models/m/infer", "/v2/models/{name}/infer", {"name": "m"}),
        (
            "/v2/models/m/versions/12/infer",
            "/v2/models/{name}/versions/{version}/infer",
            {"name": "m", "version": "12"},
        ),
    ],
)
def test_hot_routes_take_the_lane(path: str, template: str, params: dict) -> None:
    route, _, _, found = FastLane.match(_scope("POST", path))
    assert route.path == template and found == params


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/predict"),
        ("POST", "/models"),
        ("POST", "/v1/models/m"),
        ("POST", "/v1/models/m/metadata"),
        ("POST", "/v2/models/m/ready"),
        ("POST", "/predict/extra"),
        ("POST", "/v2/models/a/b/infer"),
        ("GET", "/v2/models/m/infer"),
    ],
)
def test_everything_else_goes_to_fastapi(method: str, path: str) -> None:
    assert FastLane.match(_scope(method, path)) is None


def test_lane_answers_share_request_ids_metrics_and_error_shapes(models_root: Path, run) -> None:
    rows = digit_rows(2, seed=1).tolist()

    async def go():
        async with serving(make_settings(models_root)) as client:
            ok = await client.post(
                "/predict", json={"inputs": rows}, headers={"X-Request-ID": "r-1"}
            )
            bad = await client.post("/v1/models/digit-bits:predict", json={"instances": [[1, 2]]})
            form = await client.post(
                "/predict", content=b"{}", headers={"content-type": "text/plain"}
            )
            wrong_method = await client.get("/predict")
            metrics = (await client.get("/metrics")).text
            return ok, bad, form, wrong_method, metrics

    ok, bad, form, wrong_method, metrics = run(go())
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "r-1"
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    assert "rows have shape [2], expected [64]" in bad.json()["error"]
    assert bad.headers["x-request-id"]
    assert form.status_code == 415 and form.json()["request_id"] == form.headers["x-request-id"]
    assert wrong_method.status_code == 405  # FastAPI's answer, in the service's error shape
    assert 'route="/predict"' in metrics and 'route="/v1/models/{name}:predict"' in metrics


def test_new_request_ids_are_unique_and_differ_between_processes() -> None:
    first, second = RequestIds(), RequestIds()
    ids = [first.new() for _ in range(10000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Another process (another generator) starts from another random prefix.
    assert second.new()[:16] != ids[0][:16]


def test_the_lane_and_fastapi_share_one_concurrency_count(models_root: Path, run) -> None:
    """A lane request holding the only slot makes a FastAPI request wait its turn, and the
    other way round: one count, not one per path."""
    rows = digit_rows(1, seed=2).tolist()

    async def go():
        settings = make_settings(models_root, max_concurrent_requests=1, max_queued_requests=0)
        async with serving(settings) as client:
            served = client.app.state.repository.resolve(None)
            original = served.call
            release = asyncio.Event()
            entered = asyncio.Event()

            async def held(signature: str, inputs: dict) -> dict:
                entered.set()
                await release.wait()
                return await original(signature, inputs)

            served.call = held
            lane = asyncio.ensure_future(client.post("/predict", json={"inputs": rows}))
            await entered.wait()
            refused = await client.get("/models")  # FastAPI, not an open path
            health = await client.get("/healthz")  # open paths are never counted
            release.set()
            answered = await lane
            served.call = original
            after = await client.get("/models")
            return refused, health, answered, after

    refused, health, answered, after = run(go())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert health.status_code == 200
    assert answered.status_code == 200 and after.status_code == 200
