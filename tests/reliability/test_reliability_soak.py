"""Soak: 64 concurrent clients mixing `/predict`, `/grad`, TF Serving and v2 for `--soak-seconds`.

`make test` runs the short form (12 s); `make soak` the full one
(`pytest tests/reliability -m soak --soak-seconds 60`). Every answer is
checked against the SavedModel loaded in this process; the server's RSS is
sampled, and its growth between the 10 s and 60 s marks (scaled to the
soak's length: 1/6 and the end) must stay within 5%.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import rel_support as support

MODEL = "digit-bits"
CLIENTS = 64
MAX_RSS_GROWTH = 0.05
CLIENT_KEEPALIVE_S = 2.0  # < uvicorn's timeout_keep_alive (5 s)


@dataclass
class Item:
    """One request of the pool and what the answer must be."""

    kind: str
    path: str
    body: dict[str, Any]
    predict: dict[str, np.ndarray]
    grad: dict[str, np.ndarray]
    reference: support.Reference


def build_pool(reference: support.Reference, size: int = 48) -> list[Item]:
    kinds = ("predict", "grad", "v1", "v1-grad", "v2", "v2-grad")
    pool = []
    for i in range(size):
        rows = support.digit_rows(1 + i % 4, 7000 + i, reference.input_width)
        kind = kinds[i % len(kinds)]
        listed = rows.tolist()
        if kind in ("predict", "grad"):
            path, body = f"/{kind}", {"inputs" if i % 2 else "instances": listed}
        elif kind == "v1":
            path, body = f"/v1/models/{MODEL}:predict", {"instances": listed}
        elif kind == "v1-grad":
            path = f"/v1/models/{MODEL}/versions/1:predict"
            body = {"signature_name": "grad", "inputs": listed}
        else:
            path = f"/v2/models/{MODEL}/infer"
            names = [*reference.outputs, *(reference.grad_keys if kind == "v2-grad" else ())]
            body = support.v2_infer_body(rows, names, input_name=reference.input_name)
        pool.append(
            Item(kind, path, body, reference.predict(rows), reference.grad(rows), reference)
        )
    return pool


def check_answer(item: Item, body: dict[str, Any]) -> None:
    """Raise AssertionError when the answer differs from the reference."""
    reference = item.reference
    exact = {*reference.outputs, *reference.exact_grad_keys}
    if item.kind == "predict":
        assert (body["model"], body["version"]) == (MODEL, 1)
        support.assert_outputs_equal(support.as_arrays(body["outputs"]), item.predict, "predict")
    elif item.kind == "grad":
        got = reference.native_grad_tensors(body)
        support.assert_grad_close(got, {**item.predict, **item.grad}, exact, "grad")
    elif item.kind == "v1":
        support.assert_outputs_equal(reference.v1_arrays(body["predictions"]), item.predict, "v1")
    elif item.kind == "v1-grad":
        support.assert_grad_close(support.as_arrays(body["outputs"]), item.grad, exact, "v1 grad")
    else:
        assert (body["model_name"], body["model_version"]) == (MODEL, "1")
        expected = {**item.predict, **(item.grad if item.kind == "v2-grad" else {})}
        support.assert_grad_close(support.v2_tensors(body), expected, exact, item.kind)


async def soak(server: support.ServerProcess, pool: list[Item], seconds: float) -> dict[str, Any]:
    done: Counter[str] = Counter()
    errors: list[str] = []
    wrong: list[str] = []
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + seconds

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - start, server.rss_bytes()))
            await asyncio.sleep(0.25)
        samples.append((time.monotonic() - start, server.rss_bytes()))

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        rng = np.random.default_rng(n)
        while time.monotonic() < deadline:
            item = pool[int(rng.integers(len(pool)))]
            try:
                response = await client.post(item.path, json=item.body)
            except httpx.HTTPError as exc:
                errors.append(f"{item.kind}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200:
                errors.append(f"{item.kind}: {response.status_code} {response.text[:200]}")
                continue
            try:
                check_answer(item, response.json())
            except (AssertionError, KeyError, ValueError) as exc:
                wrong.append(f"{item.kind}: {str(exc)[:300]}")
                continue
            done[item.kind] += 1

    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout
    # closes them, so a request never races the server closing the connection it reuses.
    limits = httpx.Limits(
        max_connections=CLIENTS,
        max_keepalive_connections=CLIENTS,
        keepalive_expiry=CLIENT_KEEPALIVE_S,
    )
    async with server.async_client(limits=limits, timeout=30) as client:
        await asyncio.gather(sample_rss(), *(client_loop(n, client) for n in range(CLIENTS)))
    elapsed = time.monotonic() - start
    mark = seconds / 6  # the 10 s mark of a 60 s soak
    rss_mark = next(rss for t, rss in samples if t >= mark)
    rss_end = samples[-1][1]
    return {
        "elapsed": elapsed,
        "done": done,
        "errors": errors,
        "wrong": wrong,
        "mark": mark,
        "rss_mark": rss_mark,
        "rss_end": rss_end,
        "growth": (rss_end - rss_mark) / rss_mark,
    }


@pytest.mark.soak
def test_soak_64_clients_mixing_every_route_no_errors_no_wrong_answers_bounded_rss(
    live: support.ServerProcess, reference: support.Reference, soak_seconds: float
) -> None:
    pool = build_pool(reference)
    # Warm every route first, so the marks measure steady state, not first-call caches.
    with live.client() as client:
        for item in pool:
            response = client.post(item.path, json=item.body)
            assert response.status_code == 200, response.text
            check_answer(item, response.json())
    result = asyncio.run(soak(live, pool, soak_seconds))
    total = sum(result["done"].values()) + len(result["errors"]) + len(result["wrong"])
    mib = 1024 * 1024
    form = "full" if soak_seconds >= 60 else "short"
    support.record(
        f"soak ({form}): seconds, concurrent clients",
        f"{result['elapsed']:.1f}, {CLIENTS}",
    )
    support.record(f"soak ({form}): requests (req/s)", f"{total} ({total / result['elapsed']:.0f})")
    support.record(
        f"soak ({form}): requests by route",
        ", ".join(f"{k}: {v}" for k, v in sorted(result["done"].items())),
    )
    support.record(f"soak ({form}): errors", len(result["errors"]))
    support.record(f"soak ({form}): wrong answers", len(result["wrong"]))
    support.record(
        f"soak ({form}): server RSS at {result['mark']:.0f} s and at the end (MiB)",
        f"{result['rss_mark'] / mib:.1f}, {result['rss_end'] / mib:.1f}",
    )
    support.record(f"soak ({form}): RSS growth", f"{100 * result['growth']:+.2f}%")
    assert not result["errors"], f"{len(result['errors'])} errors: {result['errors'][:5]}"
    assert not result["wrong"], f"{len(result['wrong'])} wrong answers: {result['wrong'][:5]}"
    assert set(result["done"]) == {"predict", "grad", "v1", "v1-grad", "v2", "v2-grad"}
    assert total >= 10 * soak_seconds, total
    assert result["growth"] <= MAX_RSS_GROWTH, result
    assert live.process.poll() is None
