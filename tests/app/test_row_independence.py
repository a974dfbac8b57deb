"""Batching only where rows are independent: a model whose rows depend on each other (an outside
check's `x - reduce_mean(x, axis=0)`) gets one call per request, and /models says why."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import make_settings, save_serving_modules, serving, wait_for_model

from app.predictor import TensorSpec
from app.probes import random_probes, row_independence

SPECS = {"x": TensorSpec("x", np.dtype("float32"), (-1, 2))}


def test_row_independence_tells_elementwise_from_batch_wide_models():
    probes = random_probes(SPECS, bound=1e6)
    assert row_independence(lambda t: {"y": t["x"] * 2.0}, probes) == (True, "bit for bit")
    centered = row_independence(lambda t: {"y": t["x"] - t["x"].mean(axis=0)}, probes)
    assert centered == (
        False,
        "output 'y' of rows 0..0 called alone differs from the same rows in a 7-row call",
    )
    # A later slice alone is caught too (a cumulative sum over the batch).
    independent, why = row_independence(lambda t: {"y": np.cumsum(t["x"], axis=0)}, probes)
    assert not independent and "rows 1..2" in why
    copies = [{"x": np.ones((64, 2), np.float32)}]
    with pytest.raises(LookupError, match="7 distinct rows"):
        row_independence(lambda t: {"y": t["x"]}, copies)
    with pytest.raises(LookupError):
        row_independence(lambda t: {"y": t["x"]}, [{"x": np.zeros((3, 2), np.float32)}])


def _nudged(ulps: float, integral: bool = False):
    """Doubles x, moving every value by `ulps` units of the largest value's last place when
    called on fewer than 7 rows (what a kernel rounding per batch size does)."""

    def runner(t):
        x = t["x"].astype(np.float32)
        y = x * np.float32(2.0)
        if len(x) < 7:
            y = y + np.float32(ulps) * np.spacing(np.abs(y).max())
        return {"y": np.round(y).astype(np.int64) if integral else y}

    return runner


def test_float_differences_of_a_few_ulps_keep_batching_and_are_reported():
    probes = random_probes(SPECS, bound=1e6)
    independent, why = row_independence(_nudged(3), probes)
    assert independent and why.startswith("floats within 8 ulps of each output's largest value")
    assert row_independence(_nudged(8), probes)[0]
    assert not row_independence(_nudged(40), probes)[0]
    # Hard (integer) outputs must agree exactly: 0.5 ulps still rounds the same here.
    assert row_independence(_nudged(0.5, integral=True), probes) == (True, "bit for bit")

    def nan_when_alone(t):
        x = t["x"]
        return {"y": np.where(x > 0, np.nan, x) if len(x) < 7 else x}

    assert not row_independence(nan_when_alone, probes)[0]


class _Centered(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"centered": x - tf.reduce_mean(x, axis=0, keepdims=True)}


class _Doubled(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"doubled": x * 2.0}


@pytest.fixture(scope="module")
def batch_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_serving_modules(
        tmp_path_factory.mktemp("batch-models"), {"centered": _Centered(), "doubled": _Doubled()}
    )


@pytest.mark.parametrize("runtime", ["savedmodel", "auto"])
def test_concurrent_requests_to_a_batch_wide_model_each_get_their_own_answer(
    batch_models, run, runtime
):
    bodies = [[[i, 10.0 * i], [i + 1.0, 10.0 * i + 2.0]] for i in range(40)]

    async def go():
        settings = make_settings(batch_models, default_model="centered", runtime=runtime)
        async with serving(settings) as client:
            await wait_for_model(client, "centered")
            await wait_for_model(client, "doubled")
            answers = await asyncio.gather(
                *(client.post("/predict", json={"model": "centered", "inputs": b}) for b in bodies)
            )
            doubled = await asyncio.gather(
                *(client.post("/predict", json={"model": "doubled", "inputs": b}) for b in bodies)
            )
            models = (await client.get("/models")).json()
            registry = client.app.state.metrics.registry
            batched = {name: _batched(registry, name) for name in ("centered", "doubled")}
            return answers, doubled, models, batched

    answers, doubled, models, batched = run(go())
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["centered"] == [[-0.5, -1.0], [0.5, 1.0]]
    for body, response in zip(bodies, doubled, strict=True):
        assert response.json()["outputs"]["doubled"] == (np.asarray(body) * 2).tolist()
    batching = {m["name"]: m["runtimes"]["serving_default"]["batching"] for m in models["models"]}
    assert batching["centered"].startswith("off: output 'centered' of rows 0..0 called alone")
    assert batching["centered"].endswith("each request gets its own call")
    assert batching["doubled"] == "on: each row answers alone as among other rows (bit for bit)"
    # The same concurrency did stack the independent model's requests: fewer calls than requests.
    calls, requests = batched["doubled"]
    assert requests >= 40 and calls < requests
    assert batched["centered"] == (0.0, 0.0)  # never through a batcher


def _batched(registry, model: str) -> tuple[float, float]:
    """(batched model calls, requests they answered) of `model`'s `serving_default`."""
    labels = {"model": model, "signature": "serving_default"}
    return tuple(  # type: ignore[return-value]
        registry.get_sample_value(f"diffround_batch_requests_{part}", labels) or 0.0
        for part in ("count", "sum")
    )
