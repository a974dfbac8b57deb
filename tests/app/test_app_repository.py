"""The repository: new versions swap in under load, broken ones are refused, deletions fall back."""

import asyncio
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import (
    ErfcWithGradient,
    digit_rows,
    grad_view,
    make_settings,
    reference_outputs,
    serving,
    wait_for_model,
)
from svc_helpers import predicted as predicted_outputs
from svc_models import install


def test_new_version_is_served_within_the_poll_interval_with_no_failed_request(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    poll_s = 0.5
    rows = digit_rows(16, seed=7)
    expected = {
        1: reference_outputs(model_store["bits-a"], rows)["outputs"],
        2: reference_outputs(model_store["bits-b"], rows)["outputs"],
    }
    assert not np.array_equal(expected[1], expected[2]), "versions must be distinguishable"

    async def go():
        async with serving(make_settings(models_root, poll_interval_s=poll_s)) as client:
            answers: list[tuple[float, int, int, list]] = []
            stop = asyncio.Event()

            async def caller(i: int) -> None:
                while not stop.is_set():
                    response = await client.post(
                        "/predict", json={"inputs": rows[i : i + 4].tolist()}
                    )
                    body = response.json()
                    answers.append(
                        (time.monotonic(), response.status_code, body.get("version"), body, i)
                    )
                    await asyncio.sleep(0.005)

            tasks = [asyncio.create_task(caller(i)) for i in range(0, 16, 4)]
            await asyncio.sleep(1.0)
            dropped_at = time.monotonic()
            await asyncio.to_thread(install, model_store["bits-b"], models_root, "digit-bits", 2)
            deadline = dropped_at + 30
            while time.monotonic() < deadline and not any(a[2] == 2 for a in answers):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks)
            return dropped_at, answers

    dropped_at, answers = run(go())
    assert answers, "no request completed"
    failed = [a for a in answers if a[1] != 200]
    assert failed == [], f"{len(failed)} failed requests during the swap: {failed[:3]}"
    for _, _, version, body, i in answers:
        np.testing.assert_array_equal(predicted_outputs(body), expected[version][i : i + 4])
    first_v2 = min(t for t, _, version, _, _ in answers if version == 2)
    # The poller notices within one interval; loading and warming up take the rest
    # (generous: the 2-core test machine is shared).
    assert first_v2 - dropped_at < poll_s + 10.0
    assert max(t for t, _, version, _, _ in answers if version == 1) <= first_v2 + 0.5


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("truncated", "does not load"),
        ("no-grad", "no 'grad' signature"),
        ("off-grid", "not on its rounding grid"),
        ("unknown-output", "output 'codes' that the signatures lack"),
    ],
)
def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(
    models_root: Path,
    model_store: dict[str, Path],
    variant: str,
    reason: str,
    run,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = digit_rows(5, seed=8)
    expected = reference_outputs(models_root / "digit-bits" / "1", rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            repository = client.app.state.repository
            install(model_store[variant], models_root, "digit-bits", 2)
            await repository.poll_once()
            await repository.poll_once()  # a second poll does not retry the same directory
            predicted = await client.post("/predict", json={"inputs": rows.tolist()})
            status = await client.get("/v1/models/digit-bits")
            ready = await client.get("/readyz")
            refused = client.app.state.metrics.registry.get_sample_value(
                "diffround_model_loads_total", {"model": "digit-bits", "outcome": "refused"}
            )
            return predicted, status, ready, refused

    predicted, status, ready, refused = run(go())
    assert predicted.status_code == 200
    assert predicted.json()["version"] == 1
    np.testing.assert_array_equal(predicted_outputs(predicted.json()), expected)
    assert ready.status_code == 200
    versions = {s["version"]: s for s in status.json()["model_version_status"]}
    assert versions["1"]["state"] == "AVAILABLE"
    assert versions["2"]["state"] == "END"
    assert reason in versions["2"]["status"]["error_message"]
    assert str(models_root) not in status.text
    assert refused == 1
    assert any(
        "refused model version" in r.getMessage() and reason in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("variant", ["width-63", "no-metadata"])
def test_any_savedmodel_serves_from_its_own_signatures(
    models_root: Path, model_store: dict[str, Path], variant: str, run
) -> None:
    """Another input width, or no diffround.json at all: served from its signatures alone."""
    width = 63 if variant == "width-63" else 64
    rows = np.random.default_rng(4).integers(0, 17, (3, width)).astype(np.float32)
    expected = reference_outputs(model_store[variant], rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            install(model_store[variant], models_root, "digit-bits", 2)
            await client.app.state.repository.poll_once()
            answer = await client.post("/predict", json={"inputs": rows.tolist()})
            grad = await client.post("/grad", json={"inputs": rows.tolist()})
            return answer, grad

    answer, grad = run(go())
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
    np.testing.assert_array_equal(predicted_outputs(answer.json()), expected)
    if variant == "no-metadata":
        # Without the metadata's grad map the service has no gradients to show.
        assert grad.status_code == 404 and "diffround.export" in grad.json()["error"]
        assert answer.json()["decoded"] is None
    else:
        assert grad.status_code == 200


def test_refused_version_is_retried_when_its_directory_changes(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            repository = client.app.state.repository
            broken = install(model_store["no-grad"], models_root, "digit-bits", 2)
            await repository.poll_once()
            before = await client.post("/predict", json={"inputs": digit_rows(1, 0).tolist()})
            # Repair the version in place: its files change, so the poller tries it again.
            shutil.rmtree(broken)
            install(model_store["bits-b"], models_root, "digit-bits", 2)
            await repository.poll_once()
            after = await client.post("/predict", json={"inputs": digit_rows(1, 0).tolist()})
            return before.json()["version"], after.json()["version"]

    assert run(go()) == (1, 2)


def test_deleted_serving_version_falls_back_then_reports_not_ready(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    install(model_store["bits-b"], models_root, "digit-bits", 2)
    rows = digit_rows(3, seed=9)
    expected_v1 = reference_outputs(model_store["bits-a"], rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            repository = client.app.state.repository
            first = (await client.post("/predict", json={"inputs": rows.tolist()})).json()
            shutil.rmtree(models_root / "digit-bits" / "2")
            await repository.poll_once()
            fallback = (await client.post("/predict", json={"inputs": rows.tolist()})).json()
            shutil.rmtree(models_root / "digit-bits" / "1")
            await repository.poll_once()
            gone = await client.post("/predict", json={"inputs": rows.tolist()})
            ready = await client.get("/readyz")
            live = await client.get("/healthz")
            return first, fallback, gone, ready, live

    first, fallback, gone, ready, live = run(go())
    assert first["version"] == 2
    assert fallback["version"] == 1
    np.testing.assert_array_equal(predicted_outputs(fallback), expected_v1)
    assert gone.status_code == 503 and "no model version" in gone.json()["error"]
    assert ready.status_code == 503 and ready.json()["error"]
    assert live.status_code == 200


@pytest.mark.parametrize("start", ["missing", "empty"])
def test_models_root_missing_or_empty_at_start_is_live_then_ready_when_a_model_appears(
    tmp_path: Path, model_store: dict[str, Path], start: str, run
) -> None:
    root = tmp_path / "models"
    if start == "empty":
        root.mkdir()

    async def go():
        async with serving(make_settings(root, poll_interval_s=0.2), wait_ready=False) as client:
            await asyncio.sleep(0.5)
            live = await client.get("/healthz")
            not_ready = await client.get("/readyz")
            v2_not_ready = await client.get("/v2/health/ready")
            predict = await client.post("/predict", json={"inputs": digit_rows(1, 0).tolist()})
            install(model_store["bits-a"], root, "digit-bits", 1)
            became_ready = await client.app.state.repository.wait_ready(30)
            ready = await client.get("/readyz")
            return live, not_ready, v2_not_ready, predict, became_ready, ready

    live, not_ready, v2_not_ready, predict, became_ready, ready = run(go())
    assert live.status_code == 200
    assert not_ready.status_code == 503
    assert "MODELS_ROOT" in not_ready.json()["error"]
    assert str(root) not in not_ready.text
    assert v2_not_ready.status_code == 503
    assert predict.status_code == 503
    assert became_ready and ready.status_code == 200
    assert ready.json()["models"] == {"digit-bits": 1}


def test_dot_named_directories_are_ignored(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    shutil.copytree(model_store["bits-b"], models_root / "digit-bits" / ".2.tmp-123")
    shutil.copytree(model_store["bits-b"], models_root / ".hidden" / "1")

    async def go():
        async with serving(make_settings(models_root)) as client:
            await client.app.state.repository.poll_once()
            return (await client.get("/models")).json()

    assert run(go()) == {
        "models": [
            {
                "name": "digit-bits",
                "versions": [1],
                "serving_version": 1,
                "ready": True,
                "default": True,
                "signatures": ["grad", "serving_default"],
                "gradients": True,
                "runtimes": {
                    "grad": {
                        "runtime": "savedmodel",
                        "reason": "savedmodel: GRAD_RUNTIME=savedmodel, not converted",
                        "batching": "on: each row answers alone as among other rows (floats "
                        "within 8 ulps of each output's largest value: kernels round the last "
                        "bits differently at another batch size)",
                    },
                    "serving_default": {
                        "runtime": "savedmodel",
                        "reason": "savedmodel: forced by the setting",
                        "batching": "on: each row answers alone as among other rows (bit for bit)",
                    },
                },
            }
        ]
    }


def test_runtime_auto_serves_tflite_where_it_answers_bit_identically(
    models_root: Path, run
) -> None:
    rows = digit_rows(70, seed=12)
    expected = reference_outputs(models_root / "digit-bits" / "1", rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root, runtime="auto")) as client:
            models = (await client.get("/models")).json()
            answers = [
                await client.post("/predict", json={"inputs": rows[i : i + n].tolist()})
                for i, n in ((0, 1), (1, 7), (8, 62))
            ]
            return models, answers

    models, answers = run(go())
    runtimes = models["models"][0]["runtimes"]
    assert runtimes["serving_default"]["runtime"] == "tflite"
    assert "bit-identical" in runtimes["serving_default"]["reason"]
    assert runtimes["grad"]["runtime"] == "savedmodel"
    got = np.concatenate([predicted_outputs(a.json()) for a in answers])
    np.testing.assert_array_equal(got, expected)


def test_two_models_default_and_named_requests(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    install(model_store["hash"], models_root, "digit-hash", 3)
    rows = digit_rows(2, seed=10)
    expected_hash = reference_outputs(model_store["hash"], rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root)) as client:
            await client.app.state.repository.wait_ready(30)
            await client.app.state.repository.poll_once()
            default = (await client.post("/predict", json={"inputs": rows.tolist()})).json()
            named = (
                await client.post("/predict", json={"inputs": rows.tolist(), "model": "digit-hash"})
            ).json()
            models = (await client.get("/models")).json()
            metadata = (await client.get("/models/digit-hash/versions/3")).json()
            old = await client.post(
                "/predict", json={"inputs": rows.tolist(), "model": "digit-bits", "version": 2}
            )
            return default, named, models, metadata, old

    default, named, models, metadata, old = run(go())
    assert default["model"] == "digit-bits"
    assert (named["model"], named["version"]) == ("digit-hash", 3)
    np.testing.assert_array_equal(predicted_outputs(named), expected_hash)
    assert named["decoded"] is None
    flags = {m["name"]: (m["default"], m["serving_version"]) for m in models["models"]}
    assert flags == {"digit-bits": (True, 1), "digit-hash": (False, 3)}
    assert metadata["model_name"] == "hash" and metadata["serving_version"] == 3
    assert [o["shape"] for o in metadata["signatures"]["serving_default"]["outputs"]] == [[-1, 16]]
    assert old.status_code == 404 and "no version 2" in old.json()["error"]


def test_version_on_disk_but_not_served_is_a_404_naming_the_served_one(
    models_root: Path, model_store: dict[str, Path], run
) -> None:
    install(model_store["bits-b"], models_root, "digit-bits", 2)

    async def go():
        async with serving(make_settings(models_root)) as client:
            return await client.post(
                "/predict", json={"inputs": digit_rows(1, 0).tolist(), "version": 1}
            )

    response = run(go())
    assert response.status_code == 404
    assert "Version 1 of model 'digit-bits' is not served; version 2 is" in response.json()["error"]


def test_runtime_auto_answers_far_out_inputs_with_the_savedmodel(models_root: Path, run) -> None:
    """TFLite serves only the input range it was proven on; beyond it the SavedModel answers."""
    rows = digit_rows(3, seed=13)
    rows[1, 5] = 1e30
    rows[2, 7] = -3.4e38
    expected = reference_outputs(models_root / "digit-bits" / "1", rows)["outputs"]

    async def go():
        async with serving(make_settings(models_root, runtime="auto")) as client:
            models = (await client.get("/models")).json()
            return models, await client.post("/predict", json={"inputs": rows.tolist()})

    models, answer = run(go())
    assert "inputs beyond" in models["models"][0]["runtimes"]["serving_default"]["reason"]
    np.testing.assert_array_equal(predicted_outputs(answer.json()), expected)


def test_grad_runtimes_serve_identical_gradients_or_say_by_how_much_they_differ(
    models_root: Path, run
) -> None:
    """GRAD_RUNTIME=graph (the default) serves `grad` on the graph runtime without trying
    TFLite; auto converts it first and refuses the conversion (this model's floats differ in
    the last bits: the reason says by how much), so the graph serves it there too: both
    answer bit-identically to the SavedModel. GRAD_RUNTIME=tflite serves the conversion,
    equal up to float rounding."""
    rows = digit_rows(9, seed=14)
    want = reference_outputs(models_root / "digit-bits" / "1", rows)
    parts = (rows[:1], rows[1:])  # the SavedModel called on the same batches as the service
    by_part = [reference_outputs(models_root / "digit-bits" / "1", part) for part in parts]

    async def go(grad_runtime: str, enable_grad: bool = True):
        settings = make_settings(
            models_root, runtime="auto", grad_runtime=grad_runtime, enable_grad=enable_grad
        )
        async with serving(settings) as client:
            models = (await client.get("/models")).json()
            if not enable_grad:
                return models["models"][0]["runtimes"], []
            answers = [
                grad_view((await client.post("/grad", json={"inputs": part.tolist()})).json())
                for part in parts
            ]
            return models["models"][0]["runtimes"], answers

    roles = ("relaxed", "input_grad", "pre_round", "surrogate", "local_grad", "hard")
    for mode in ("graph", "auto"):
        runtimes, answers = run(go(mode))
        assert runtimes["grad"]["runtime"] == "graph", runtimes["grad"]
        assert runtimes["serving_default"]["runtime"] == "tflite"
        for role in roles:  # float32 written shortest and read back: the same bits
            for answer, reference in zip(answers, by_part, strict=True):
                got = np.asarray(answer[role], np.float32)
                np.testing.assert_array_equal(got, reference[role], err_msg=f"{mode} {role}")
        if mode == "graph":
            assert runtimes["grad"]["reason"].endswith("TFLite not tried (graph mode)")
        else:
            auto = runtimes
            assert "values differ, largest difference" in auto["grad"]["reason"]
    forced, answers = run(go("tflite"))
    disabled, _ = run(go("tflite", enable_grad=False))
    assert {key: disabled["grad"][key] for key in ("runtime", "reason")} == {
        "runtime": "savedmodel",
        "reason": "savedmodel: /grad is disabled (ENABLE_GRAD=false), not converted",
    }
    assert forced["grad"]["runtime"] == "tflite", forced["grad"]
    assert "forced by the setting" in forced["grad"]["reason"]
    # The same choice for the inference signature (its reason also says how long it took).
    assert re.sub(r"chosen in [\d.]+ s", "", forced["serving_default"]["reason"]) == re.sub(
        r"chosen in [\d.]+ s", "", auto["serving_default"]["reason"]
    )
    assert forced["serving_default"]["runtime"] == auto["serving_default"]["runtime"]
    for role in roles[:-1]:
        got = np.concatenate([np.asarray(a[role], np.float32) for a in answers])
        np.testing.assert_allclose(got, want[role], rtol=1e-5, atol=1e-5, err_msg=role)
    got_hard = np.concatenate([np.asarray(a["hard"], np.float32) for a in answers])
    np.testing.assert_array_equal(got_hard, want["hard"])  # these rows are not on a tie


def test_grad_runtime_tflite_keeps_a_grad_it_cannot_convert_on_the_savedmodel(
    tmp_path, run
) -> None:
    """RUNTIME=tflite refuses a version whose inference signature cannot run on TFLite, but
    with GRAD_RUNTIME=tflite a `grad` that cannot stays on the SavedModel: the version
    serves, the reason says why."""
    module = ErfcWithGradient()
    signatures = {"serving_default": module.serve, "grad": module.grad}
    tf.saved_model.save(module, str(tmp_path / "erfc" / "1"), signatures=signatures)

    async def go():
        settings = make_settings(
            tmp_path, default_model="erfc", runtime="tflite", grad_runtime="tflite"
        )
        async with serving(settings) as client:
            await wait_for_model(client, "erfc")
            models = (await client.get("/models")).json()
            answer = await client.post("/v1/models/erfc:predict", json={"instances": [[1.0, -2.0]]})
            return models, answer

    models, answer = run(go())
    runtimes = models["models"][0]["runtimes"]
    assert runtimes["serving_default"]["runtime"] == "tflite"
    assert runtimes["grad"]["runtime"] == "savedmodel"
    assert runtimes["grad"]["reason"].startswith(
        "savedmodel: TFLite cannot run the gradient signature"
    )
    assert "Erfc" in runtimes["grad"]["reason"]
    assert answer.status_code == 200 and answer.json() == {"predictions": [[3.0, -3.0]]}
