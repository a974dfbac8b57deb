"""Shared fixtures: the default model, trained once per test session.

``default_models_root`` trains the default model with exactly the command
``make train`` runs (the Makefile's ``TRAIN_ARGS``) into a temporary models
root; service, UI and reliability tests serve it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?|:)?=\s*(.*?)\s*$")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def makefile_variables(path: Path = REPO_ROOT / "Makefile") -> dict[str, str]:
    """Top-level ``NAME ?= value`` / ``NAME := value`` / ``NAME = value`` lines, unexpanded."""
    variables: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match and not line.startswith("\t"):
            variables[match.group(1)] = match.group(2).split(" #", 1)[0].strip()
    return variables


def expand(value: str, variables: dict[str, str], depth: int = 0) -> str:
    """Expands ``$(NAME)`` references recursively, as make does for these lines."""
    if depth > 10:
        raise ValueError(f"Makefile variable expansion too deep: {value!r}")
    return _REFERENCE.sub(
        lambda m: expand(variables.get(m.group(1), ""), variables, depth + 1), value
    )


def default_train_command(models_root: Path) -> list[str]:
    """The command ``make train`` runs, with ``--models-root`` pointing at ``models_root``."""
    variables = makefile_variables()
    train_args = shlex.split(expand(variables["TRAIN_ARGS"], variables))
    return [sys.executable, "-m", "model.train", *train_args, "--models-root", str(models_root)]


@pytest.fixture(scope="session")
def default_train_args() -> list[str]:
    """The Makefile's ``TRAIN_ARGS``, expanded and split."""
    variables = makefile_variables()
    return shlex.split(expand(variables["TRAIN_ARGS"], variables))


@pytest.fixture(scope="session")
def default_model_name() -> str:
    """The default model's name (the Makefile's ``DEFAULT_MODEL``)."""
    variables = makefile_variables()
    return expand(variables["DEFAULT_MODEL"], variables)


@pytest.fixture(scope="session")
def default_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root holding version 1 of the default model, trained by ``make train``'s command.

    Trained once per session (well under a minute on 2 cores).
    """
    root = tmp_path_factory.mktemp("models")
    command = default_train_command(root)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"Training the default model failed ({result.returncode}): {shlex.join(command)}\n"
            f"{result.stderr[-4000:]}"
        )
    return root


@pytest.fixture(scope="session")
def default_model_dir(default_models_root: Path, default_model_name: str) -> Path:
    """The default model's version directory (``<root>/<name>/1``)."""
    path = default_models_root / default_model_name / "1"
    assert (path / "saved_model.pb").is_file(), f"no SavedModel in {path}"
    return path
