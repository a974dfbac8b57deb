"""The metadata written beside each exported model (``assets.extra/diffround.json``)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model.data import MAX_GREY_LEVEL, NUM_INPUTS, DigitsSplit
from model.tasks import TaskSpec

#: Held-out rows copied into the metadata (one per digit).
NUM_EXAMPLES = 10


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"unknown"``."""
    try:
        return package_metadata.version(name)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of what produced the model."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "diffround": package_version("diffround"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def example_indices(labels: np.ndarray, count: int = NUM_EXAMPLES) -> list[int]:
    """Indices of held-out rows to show: the first row of each label, in label order.

    Args:
        labels: Held-out labels.
        count: How many rows at most (default 10).

    Returns:
        Row indices.
    """
    picked = [int(np.flatnonzero(labels == label)[0]) for label in np.unique(labels)]
    return picked[:count]


def examples(split: DigitsSplit, hard_outputs: np.ndarray) -> list[dict[str, Any]]:
    """The metadata's ``examples``: held-out rows, labels and the model's hard outputs.

    Args:
        split: The data.
        hard_outputs: ``[n_test, K]`` hard outputs of the model on ``split.x_test``.

    Returns:
        About ten ``{"inputs", "label", "outputs"}`` rows.
    """
    rows = []
    for i in example_indices(split.y_test):
        rows.append(
            {
                "inputs": [float(v) for v in split.x_test[i]],
                "label": int(split.y_test[i]),
                "outputs": [int(v) for v in np.rint(hard_outputs[i])],
            }
        )
    return rows


def build(
    spec: TaskSpec,
    method: str,
    params: dict[str, Any],
    anneal: dict[str, Any] | None,
    metrics: dict[str, float],
    training: dict[str, Any],
    example_rows: list[dict[str, Any]],
    curve: dict[str, list[float]],
) -> dict[str, Any]:
    """Assembles the metadata of docs/contract.md, section 2.

    ``model_name`` and ``version`` are filled in by :func:`model.export.save`.

    Args:
        spec: The task.
        method: Rounding method name.
        params: The rounding layer's parameters (final values after annealing).
        anneal: The annealing schedule, or ``None``.
        metrics: Held-out metrics.
        training: ``epochs``, ``seed``, ``train_seconds``, ``command`` and more.
        example_rows: From :func:`examples`.
        curve: From :func:`model.export.surrogate_curve`.

    Returns:
        The metadata dict (JSON-ready).
    """
    return {
        "format": "diffround.savedmodel/v1",
        "model_name": spec.name,
        "version": None,
        "task": spec.name,
        "description": spec.description,
        "method": method,
        "params": params,
        "anneal": anneal,
        "inputs": [
            {
                "name": "inputs",
                "dtype": "float32",
                "shape": [-1, NUM_INPUTS],
                "description": "8x8 grey levels 0..16, row major",
                "image_shape": [8, 8],
                "range": [0.0, MAX_GREY_LEVEL],
            }
        ],
        "outputs": [
            {
                "name": "outputs",
                "dtype": "float32",
                "shape": [-1, spec.code_bits],
                "description": spec.output_description,
                "bits": list(spec.bit_names),
            }
        ],
        "decoding": spec.decoding,
        "metrics": metrics,
        "training": training,
        "versions": versions(),
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "examples": example_rows,
        "surrogate_curve": curve,
    }
