"""What a bundled task adds to the metadata ``diffround.export`` generates.

``diffround.export`` describes the model itself (inputs, outputs, rounding
layers, the ``grad`` keys); this module supplies the task's part of
``assets.extra/diffround.json`` (docs/contract.md, section 2): description,
held-out examples, decoding, metrics, training facts, and per input and
output the fields a client shows (image shape, value range, bit names).
"""

from __future__ import annotations

import platform
from importlib import metadata as package_metadata
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model.data import MAX_GREY_LEVEL, DigitsSplit
from model.tasks import DIGIT_HASH, TaskSpec, model_inputs

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


def examples(spec: TaskSpec, split: DigitsSplit, hard_codes: np.ndarray) -> list[dict[str, Any]]:
    """The metadata's ``examples``: held-out rows, labels and the model's hard code.

    Args:
        spec: The task.
        split: The data.
        hard_codes: ``[n_test, K]`` hard values of the rounded output on ``split.x_test``.

    Returns:
        About ten ``{"inputs": {input name: row}, "label", "outputs": {rounded
        output name: code}}`` rows (rows without the batch dimension).
    """
    rows = []
    shaped = model_inputs(spec, split.x_test)
    for i in example_indices(split.y_test):
        rows.append(
            {
                "inputs": {spec.input_name: shaped[i].tolist()},
                "label": int(split.y_test[i]),
                "outputs": {spec.rounding_name: [int(v) for v in np.rint(hard_codes[i])]},
            }
        )
    return rows


def export_options(
    spec: TaskSpec,
    anneal: dict[str, Any] | None,
    metrics: dict[str, float],
    training: dict[str, Any],
    example_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Keyword arguments of ``diffround.export`` for a trained task.

    Args:
        spec: The task.
        anneal: The annealing schedule, or ``None`` (recorded as ``anneal``).
        metrics: Held-out metrics.
        training: ``epochs``, ``seed``, ``train_seconds``, ``command`` and more.
        example_rows: From :func:`examples`.

    Returns:
        ``description``, ``examples``, ``decoding``, ``metrics``, ``training``,
        ``input_info``, ``output_info`` and ``extra_metadata`` (``task``,
        ``anneal``).
    """
    image = "8x8 image, row major" if len(spec.input_shape) == 1 else "8x8x1 image"
    output_info: dict[str, dict[str, Any]] = {
        spec.rounding_name: {
            "description": spec.output_description,
            "bits": list(spec.bit_names),
            "levels": list(range(spec.levels)),
        }
    }
    if spec.name == DIGIT_HASH.name:
        output_info["reconstruction"] = {
            "description": "the decoder's 64 pixels in [0, 1], from the hard code",
            "image_shape": [8, 8],
            "range": [0.0, 1.0],
        }
    return {
        "description": spec.description,
        "examples": example_rows,
        "decoding": spec.decoding,
        "metrics": metrics,
        "training": training,
        "input_info": {
            spec.input_name: {
                "description": f"{image}, grey levels 0..16",
                "image_shape": [8, 8],
                "range": [0.0, MAX_GREY_LEVEL],
            }
        },
        "output_info": output_info,
        "extra_metadata": {"task": spec.name, "anneal": anneal},
    }
