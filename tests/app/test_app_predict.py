"""/predict and /grad answer exactly what the SavedModel answers, batched or not, under load."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
from svc_helpers import (
    digit_rows,
    grad_view,
    make_settings,
    predicted,
    reference_outputs,
    serving,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("n_rows", [1, 7, 300])
def test_predict_equals_serving_default_exactly(models_root: Path, n_rows: int, run) -> None:
    rows = digit_rows(n_rows, seed=n_rows)
    expected = reference_outputs(models_root / "digit-bits" / "1", rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.post("/predict", json={"inputs": rows.tolist()})

    response = run(go())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("digit-bits", 1)
    np.testing.assert_array_equal(predicted(body).astype(np.float32), expected)
    # A rounded output on the integer grid answers JSON integers.
    assert all(isinstance(v, int) for v in body["outputs"]["outputs"][0])


def test_predict_accepts_instances_and_named_instances(models_root: Path, run) -> None:
    rows = digit_rows(3, seed=5)
    expected = reference_outputs(models_root / "digit-bits" / "1", rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            plain = await client.post("/predict", json={"instances": rows.tolist()})
            named = await client.post(
                "/predict", json={"instances": [{"inputs": r} for r in rows.tolist()]}
            )
            return plain, named

    for response in run(go()):
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(predicted(response.json()), expected)


def test_predict_decodes_msb_first_bits_into_classes(models_root: Path, run) -> None:
    rows = digit_rows(50, seed=11)

    async def go():
        async with serving(make_settings(models_root)) as client:
            return (await client.post("/predict", json={"inputs": rows.tolist()})).json()

    body = run(go())
    bits = predicted(body)
    codes = bits @ np.array([8, 4, 2, 1])
    assert body["decoded"] == [int(c) if c < 10 else None for c in codes]


@pytest.mark.parametrize("batch_max_size", [1, 64])
def test_concurrent_callers_each_get_their_own_rows(
    models_root: Path, batch_max_size: int, run
) -> None:
    """64 concurrent callers with distinct rows (1-5 each): every answer matches its own rows."""
    version_dir = models_root / "digit-bits" / "1"
    requests = [digit_rows(1 + i % 5, seed=1000 + i) for i in range(64)]
    expected = [reference_outputs(version_dir, rows) for rows in requests]
    settings = make_settings(models_root, batch_max_size=batch_max_size)

    async def go():
        async with serving(settings) as client:
            predict = [client.post("/predict", json={"inputs": r.tolist()}) for r in requests]
            grad = [client.post("/grad", json={"inputs": r.tolist()}) for r in requests]
            responses = await asyncio.gather(*predict, *grad)
            registry = client.app.state.metrics.registry
            calls = registry.get_sample_value(
                "diffround_batch_requests_count",
                {"model": "digit-bits", "signature": "serving_default"},
            )
            return responses, calls

    responses, calls = run(go())
    answers, grads = responses[:64], responses[64:]
    for response, want in zip(answers, expected, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(predicted(response.json()), want["outputs"])
    for response, want in zip(grads, expected, strict=True):
        assert response.status_code == 200, response.text
        body = grad_view(response.json())
        np.testing.assert_allclose(body["pre_round"], want["pre_round"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(body["input_grad"], want["input_grad"], rtol=1e-5, atol=1e-7)
    if batch_max_size == 1:
        # one call per request: each /predict, and each /grad for its hard outputs
        assert calls == 128
    else:
        assert calls < 128  # concurrent requests were coalesced into fewer calls


def test_grad_input_gradients_match_central_finite_differences(models_root: Path, run) -> None:
    base = digit_rows(2, seed=21)
    h = 0.05
    eye = np.eye(64, dtype=np.float32) * h
    perturbed = np.concatenate([np.concatenate([row + eye, row - eye]) for row in base])

    async def go():
        async with serving(make_settings(models_root)) as client:
            at_base = await client.post("/grad", json={"inputs": base.tolist()})
            around = await client.post("/grad", json={"inputs": perturbed.tolist()})
            return grad_view(at_base.json()), grad_view(around.json())

    at_base, around = run(go())
    surrogate = np.array(around["surrogate"], np.float64).reshape(2, 2, 64, -1)
    finite_diff = (surrogate[:, 0] - surrogate[:, 1]) / (2 * h)  # [row, input, k]
    analytic = np.array(at_base["input_grad"], np.float64)  # [row, k, input]
    np.testing.assert_allclose(analytic, finite_diff.transpose(0, 2, 1), rtol=2e-2, atol=2e-4)
    assert np.abs(analytic).max() > 1e-3  # the comparison is not between two zero arrays


def test_grad_local_derivatives_match_the_metadata_method(models_root: Path, run) -> None:
    rows = digit_rows(20, seed=22)

    async def go():
        async with serving(make_settings(models_root)) as client:
            return grad_view((await client.post("/grad", json={"inputs": rows.tolist()})).json())

    body = run(go())
    assert body["method"] == "sigmoid"
    slope, center = body["params"]["slope"], body["params"]["center"]
    pre_round = np.array(body["pre_round"], np.float64)
    s = _sigmoid(slope * (pre_round - center))
    np.testing.assert_allclose(body["surrogate"], s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(body["local_grad"], slope * s * (1 - s), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(body["hard"], np.round(pre_round))
    np.testing.assert_array_equal(body["output_hard"], np.round(pre_round))
    np.testing.assert_allclose(body["relaxed"], s, rtol=1e-5, atol=1e-6)


def test_grad_summary_reports_gap_dead_share_and_largest_gradient(models_root: Path, run) -> None:
    rows = digit_rows(4, seed=23)

    async def go():
        async with serving(make_settings(models_root)) as client:
            return grad_view((await client.post("/grad", json={"inputs": rows.tolist()})).json())

    body = run(go())
    summary = body["summary"]
    surrogate, hard = np.array(body["surrogate"]), np.array(body["hard"])
    assert summary["surrogate_gap"] == pytest.approx(np.abs(surrogate - hard).mean(), rel=1e-5)
    local = np.array(body["local_grad"])
    assert summary["dead_gradient_share"] == pytest.approx((np.abs(local) < 1e-6).mean())
    input_grad = np.abs(np.array(body["input_grad"]))
    assert summary["max_abs_jacobian"] == pytest.approx(input_grad.max(), rel=1e-6)
    where = summary["argmax"]
    assert (where["output"], where["input"]) == ("outputs", "inputs")
    assert input_grad[where["row"]][tuple(where["index"])] == input_grad.max()
    # The index into [*output_shape, *input_shape], split at the output's rank (1 here).
    assert where["output_index"] + where["input_index"] == where["index"]
    assert len(where["output_index"]) == np.ndim(body["relaxed"]) - 1
    assert f"row {where['row']}" in summary["text"]


def test_grad_disabled_answers_404_with_a_message(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root, enable_grad=False)) as client:
            grad = await client.post("/grad", json={"inputs": digit_rows(1, 0).tolist()})
            predict = await client.post("/predict", json={"inputs": digit_rows(1, 0).tolist()})
            disabled = (await client.get("/models")).json()
            disabled_meta = (await client.get("/models/digit-bits")).json()
        async with serving(make_settings(models_root)) as client:
            enabled = (await client.get("/models")).json()
            enabled_meta = (await client.get("/models/digit-bits")).json()
        return grad, predict, disabled, enabled, disabled_meta, enabled_meta

    grad, predict, disabled, enabled, disabled_meta, enabled_meta = run(go())
    assert grad.status_code == 404
    assert "ENABLE_GRAD" in grad.json()["error"]
    assert predict.status_code == 200
    # /models says what /grad does: no gradients, and no `grad` signature to name.
    (off,) = [m for m in disabled["models"] if m["name"] == "digit-bits"]
    (on,) = [m for m in enabled["models"] if m["name"] == "digit-bits"]
    assert on["gradients"] is True and "grad" in on["signatures"]
    assert off["gradients"] is False and "grad" not in off["signatures"]
    assert set(on["signatures"]) - set(off["signatures"]) == {"grad"}
    # So does the model's metadata: the specs of the signatures a request may name.
    assert set(enabled_meta["signatures"]) == set(on["signatures"])
    assert set(disabled_meta["signatures"]) == set(off["signatures"])


def test_batching_with_a_wait_window_still_answers_every_caller(models_root: Path, run) -> None:
    requests = [digit_rows(2, seed=300 + i) for i in range(16)]
    expected = [reference_outputs(models_root / "digit-bits" / "1", r)["outputs"] for r in requests]
    settings = make_settings(models_root, batch_max_wait_ms=5, batch_max_size=8)

    async def go():
        async with serving(settings) as client:
            return await asyncio.gather(
                *[client.post("/predict", json={"inputs": r.tolist()}) for r in requests]
            )

    for response, want in zip(run(go()), expected, strict=True):
        np.testing.assert_array_equal(predicted(response.json()), want)
