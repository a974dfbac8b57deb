"""Held-out evaluation of a task model, under hard rounding and under its surrogate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model import metrics
from model.data import MAX_GREY_LEVEL, DigitsSplit
from model.tasks import DIGIT_HASH, TaskModel, code_targets, model_inputs

#: Neighbours retrieved per query for the hash task's precision@k.
RETRIEVAL_K = 10


@dataclass(frozen=True)
class CodeOutputs:
    """The rounded layer's values for a batch.

    Attributes:
        pre_round: ``[n, K]`` values entering the rounding.
        hard: ``[n, K]`` exact rounding (what serving returns).
        surrogate: ``[n, K]`` deterministic training-time forward
            (``DiffRound.relaxed``); for the float reference, ``pre_round``.
    """

    pre_round: np.ndarray
    hard: np.ndarray
    surrogate: np.ndarray


def code_outputs(task_model: TaskModel, x: np.ndarray) -> CodeOutputs:
    """Runs the encoder and the rounding layer in both modes.

    Args:
        task_model: The trained task.
        x: Raw inputs ``[n, 64]`` (reshaped to the task's input shape here).

    Returns:
        Pre-round, hard and surrogate values as float32 NumPy arrays.
    """
    inputs = model_inputs(task_model.spec, x)
    pre_round = np.asarray(task_model.encoder(inputs, training=False))
    rounding = task_model.rounding
    if rounding is None:
        hard = np.rint(pre_round)
        surrogate = pre_round
    else:
        hard = np.asarray(rounding(pre_round, training=False))
        surrogate = np.asarray(rounding.relaxed(pre_round))
    return CodeOutputs(
        pre_round=pre_round.astype(np.float32),
        hard=hard.astype(np.float32),
        surrogate=surrogate.astype(np.float32),
    )


def evaluate(task_model: TaskModel, split: DigitsSplit) -> dict[str, float]:
    """Held-out metrics of a task model.

    ``digit-bits``: ``exact_match`` and ``bit_accuracy`` of the hard outputs;
    ``surrogate_bit_accuracy`` (``mean(1 - |s - y|)`` of the surrogate
    outputs, what the training loss sees).

    ``digit-levels``: the same on its base-4 digits: ``exact_match``,
    ``level_accuracy`` (share of digits right) and
    ``surrogate_level_accuracy`` (``mean(max(0, 1 - |s - y|))``).

    ``digit-hash``: ``reconstruction_mse`` (pixels scaled to [0, 1]) of the
    decoder fed the hard codes, ``surrogate_reconstruction_mse`` with the
    surrogate codes, and ``precision_at_10`` of Hamming-ranked hard codes by
    digit label. The float reference uses its float codes for both
    (reconstruction and squared-Euclidean ranking): it never rounds.

    Every task reports ``train_serve_mismatch`` = metric under the surrogate
    minus metric under hard rounding (bit or level accuracy, resp.
    reconstruction MSE).

    Args:
        task_model: The trained task.
        split: The data; only its held-out rows are used.

    Returns:
        Metric name -> value (plain floats, JSON-ready).
    """
    out = code_outputs(task_model, split.x_test)
    spec = task_model.spec
    if spec.name != DIGIT_HASH.name:
        codes = code_targets(spec, split.y_test)
        # bit_accuracy and soft_bit_accuracy compare elementwise: valid for any level.
        hard_bits = metrics.bit_accuracy(out.hard, codes)
        if spec.levels == 2:
            unit, soft_bits = "bit", metrics.soft_bit_accuracy(out.surrogate, codes)
        else:
            unit, soft_bits = "level", metrics.soft_level_accuracy(out.surrogate, codes)
        return {
            "exact_match": metrics.exact_match(out.hard, codes),
            f"{unit}_accuracy": hard_bits,
            f"surrogate_{unit}_accuracy": soft_bits,
            "train_serve_mismatch": soft_bits - hard_bits,
        }
    assert task_model.decoder is not None
    pixels = np.asarray(split.x_test, np.float32) / MAX_GREY_LEVEL
    if task_model.rounding is None:
        hard_codes, ranking = out.surrogate, "l2"
    else:
        hard_codes, ranking = out.hard, "hamming"
    hard_mse = metrics.mean_squared_error(task_model.decoder(hard_codes), pixels)
    soft_mse = metrics.mean_squared_error(task_model.decoder(out.surrogate), pixels)
    return {
        "reconstruction_mse": hard_mse,
        "surrogate_reconstruction_mse": soft_mse,
        "train_serve_mismatch": soft_mse - hard_mse,
        f"precision_at_{RETRIEVAL_K}": metrics.precision_at_k(
            hard_codes, split.y_test, k=RETRIEVAL_K, metric=ranking
        ),
    }
