"""Requests that name no model go to DEFAULT_MODEL whenever it is on disk, never to another
model in its place; readiness waits for its first load (an outside check saw the only model
loaded so far answer for it during startup)."""

import threading
from pathlib import Path

import pytest
from svc_helpers import digit_rows, make_settings, serving, wait_for_model
from svc_models import install

from app.repository import ModelRepository


@pytest.fixture
def two_models(tmp_path: Path, model_store: dict[str, Path]) -> Path:
    root = tmp_path / "models"
    install(model_store["bits-a"], root, "digit-bits", 1)
    install(model_store["hash"], root, "other", 1)
    return root


def test_while_the_default_model_loads_it_is_not_replaced_and_readyz_says_why(
    two_models: Path, monkeypatch: pytest.MonkeyPatch, run
) -> None:
    gate = threading.Event()
    original = ModelRepository._load

    def slow_default(self, name, version, path):
        if name == "digit-bits":
            assert gate.wait(60), "the test never opened the gate"
        return original(self, name, version, path)

    monkeypatch.setattr(ModelRepository, "_load", slow_default)
    rows = digit_rows(1, seed=3).tolist()

    async def go():
        settings = make_settings(two_models, default_model="digit-bits")
        async with serving(settings, wait_ready=False) as client:
            await wait_for_model(client, "other")
            during = await client.post("/predict", json={"inputs": rows})
            ready_during = await client.get("/readyz")
            named = await client.post("/predict", json={"inputs": rows, "model": "other"})
            models = (await client.get("/models")).json()
            gate.set()
            await wait_for_model(client, "digit-bits")
            after = await client.post("/predict", json={"inputs": rows})
            ready_after = await client.get("/readyz")
            return during, ready_during, named, models, after, ready_after

    during, ready_during, named, models, after, ready_after = run(go())
    assert during.status_code == 503, during.text
    assert (
        "digit-bits" in during.json()["error"] and "no loaded version yet" in during.json()["error"]
    )
    assert ready_during.status_code == 503
    assert "Loading the default model 'digit-bits' (DEFAULT_MODEL)" in ready_during.text
    assert named.status_code == 200 and named.json()["model"] == "other"
    assert {m["name"]: m["default"] for m in models["models"]} == {
        "digit-bits": True,
        "other": False,
    }
    assert after.status_code == 200 and after.json()["model"] == "digit-bits"
    assert ready_after.status_code == 200


def test_a_default_model_that_cannot_load_is_named_with_its_reason_not_replaced(
    tmp_path: Path, model_store: dict[str, Path], run
) -> None:
    root = tmp_path / "models"
    install(model_store["truncated"], root, "digit-bits", 1)
    install(model_store["hash"], root, "other", 1)
    rows = digit_rows(1, seed=4).tolist()

    async def go():
        async with serving(make_settings(root, default_model="digit-bits")) as client:
            repository = client.app.state.repository
            await repository.poll_once()
            return (
                await client.post("/predict", json={"inputs": rows}),
                await client.get("/readyz"),
            )

    unnamed, ready = run(go())
    assert unnamed.status_code == 503, unnamed.text
    message = unnamed.json()["error"]
    assert message.startswith("Model 'digit-bits' has no loadable version (version 1: ")
    assert ready.status_code == 200  # the other model serves; only the default is broken


@pytest.mark.parametrize("served", [["other"], ["other", "second"]])
def test_without_the_default_model_on_disk_only_a_single_model_stands_in(
    tmp_path: Path, model_store: dict[str, Path], run, served: list[str]
) -> None:
    root = tmp_path / "models"
    for name in served:
        install(model_store["hash"], root, name, 1)
    rows = digit_rows(1, seed=5).tolist()

    async def go():
        async with serving(make_settings(root, default_model="digit-bits")) as client:
            for name in served:
                await wait_for_model(client, name)
            return await client.post("/predict", json={"inputs": rows})

    response = run(go())
    if len(served) == 1:
        assert response.status_code == 200 and response.json()["model"] == "other"
    else:
        assert response.status_code == 404
        assert response.json()["error"] == (
            "Name a model: DEFAULT_MODEL 'digit-bits' is not in MODELS_ROOT and more than one "
            "model is served (other, second)."
        )
