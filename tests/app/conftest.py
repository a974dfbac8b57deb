"""Fixtures for the service tests: tiny SavedModels built once per session, settings, a client."""

import asyncio
import functools
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import svc_models as modelfactory
import tensorflow as tf

from app.config import Settings
from app.main import create_app


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once: version directories of tiny models and of broken ones, keyed by variant."""
    root = tmp_path_factory.mktemp("model-store")
    build = modelfactory.build_model
    store = {
        "bits-a": build(root, "bits-a", 1, seed=0),
        "bits-b": build(root, "bits-b", 1, seed=1),
        "hash": build(root, "hash", 1, k=16, seed=2),
        "no-grad": build(root, "no-grad", 1, with_grad=False),
        "width-63": build(root, "width-63", 1, width=63),
        "no-metadata": build(root, "no-metadata", 1, with_metadata=False),
    }
    truncated = root / "truncated" / "1"
    shutil.copytree(store["bits-b"], truncated)
    modelfactory.truncate_variables(truncated)
    store["truncated"] = truncated
    return store


@pytest.fixture
def models_root(tmp_path: Path, model_store: dict[str, Path]) -> Path:
    """A models root holding `digit-bits` version 1 (the `bits-a` weights)."""
    root = tmp_path / "models"
    modelfactory.install(model_store["bits-a"], root, "digit-bits", 1)
    return root


def make_settings(models_root: Path, **overrides: object) -> Settings:
    """Test settings: a fast poller, the given root, everything else at the contract's defaults."""
    values: dict[str, object] = {
        "models_root": models_root,
        "poll_interval_s": 0.2,
        "api_key": None,
        "default_model": "digit-bits",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serving(
    settings: Settings, *, wait_ready: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an httpx client talking ASGI to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if wait_ready:
            assert await app.state.repository.wait_ready(60), "service never became ready"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def run() -> Callable:
    """Run a coroutine to completion (tests stay plain functions; no async plugin needed)."""

    def runner(coroutine):
        return asyncio.run(coroutine)

    return runner


def reference_outputs(version_dir: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The SavedModel's own answers, loaded in this process with `tf.saved_model.load`."""
    loaded = _loaded(str(version_dir))
    x = tf.constant(rows, tf.float32)
    result = {"outputs": loaded.signatures["serving_default"](inputs=x)["outputs"].numpy()}
    grads = loaded.signatures["grad"](inputs=x)
    result.update({name: value.numpy() for name, value in grads.items()})
    return result


@functools.lru_cache(maxsize=8)
def _loaded(path: str):
    return tf.saved_model.load(path)


def digit_rows(n: int, seed: int) -> np.ndarray:
    """`n` random rows of 64 grey levels 0..16 (float32)."""
    return np.random.default_rng(seed).integers(0, 17, (n, 64)).astype(np.float32)
