"""Fixtures for the service tests: tiny SavedModels built once per session, settings, a client."""

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import svc_models as modelfactory


def _grid_step(step: float):
    """A metadata edit declaring the output rounded to a grid of `step` (0/1 are not on 0.7's)."""

    def edit(document: dict) -> None:
        document["outputs"][0]["grid"] = {"step": step, "offset": 0.0, "min": None, "max": None}

    return edit


def _rename_output(document: dict) -> None:
    """A metadata edit naming an output that the signatures do not have."""
    document["outputs"][0]["name"] = "codes"


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
        "off-grid": build(root, "off-grid", 1, edit_metadata=_grid_step(0.7)),
        "unknown-output": build(root, "unknown-output", 1, edit_metadata=_rename_output),
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


@pytest.fixture
def run() -> Callable:
    """Run a coroutine to completion (tests stay plain functions; no async plugin needed)."""

    def runner(coroutine):
        return asyncio.run(coroutine)

    return runner
