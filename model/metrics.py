"""NumPy metrics of the tasks, computed on hard (or soft) outputs."""

from __future__ import annotations

import numpy as np


def exact_match(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose every output equals its target.

    Args:
        outputs: ``[n, k]`` hard 0/1 outputs.
        targets: ``[n, k]`` 0/1 targets.

    Returns:
        The share in [0, 1].
    """
    return float(np.mean(np.all(np.asarray(outputs) == np.asarray(targets), axis=1)))


def bit_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Share of individual outputs equal to their targets.

    Args:
        outputs: ``[n, k]`` hard 0/1 outputs.
        targets: ``[n, k]`` 0/1 targets.

    Returns:
        The share in [0, 1].
    """
    return float(np.mean(np.asarray(outputs) == np.asarray(targets)))


def soft_bit_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Bit accuracy of continuous outputs: ``mean(1 - |outputs - targets|)``.

    Equals :func:`bit_accuracy` for exact 0/1 outputs; for a surrogate's
    continuous values it is what the training loss sees, so the difference
    between the two is the train/serve mismatch.

    Args:
        outputs: ``[n, k]`` continuous outputs.
        targets: ``[n, k]`` 0/1 targets.

    Returns:
        The score (at most 1; may be negative for outputs far outside [0, 1]).
    """
    return float(np.mean(1.0 - np.abs(np.asarray(outputs) - np.asarray(targets))))


def soft_level_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Level accuracy of continuous outputs: ``mean(max(0, 1 - |outputs - targets|))``.

    For integer outputs it is the share of exact values (a value off by 2
    scores 0, not -1), so it equals the hard accuracy when the surrogate's
    forward is the exact round (STE) and the difference is the train/serve
    mismatch.

    Args:
        outputs: ``[n, k]`` continuous outputs.
        targets: ``[n, k]`` integer targets.

    Returns:
        The score in [0, 1].
    """
    error = np.abs(np.asarray(outputs, np.float64) - np.asarray(targets, np.float64))
    return float(np.mean(np.maximum(0.0, 1.0 - error)))


def mean_squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two arrays of the same shape."""
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def precision_at_k(
    codes: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "hamming"
) -> float:
    """Retrieval precision@k: each row queries all the others.

    Rows are ranked by distance to the query (ties broken by row order, so the
    result is deterministic); the score is the mean share of the ``k`` nearest
    rows that carry the query's label.

    Args:
        codes: ``[n, bits]`` codes (0/1 for Hamming, any floats for ``"l2"``).
        labels: ``[n]`` labels.
        k: Number of retrieved rows per query (default 10).
        metric: ``"hamming"`` (default; number of differing bits after
            rounding) or ``"l2"`` (squared Euclidean, for float codes).

    Returns:
        The mean precision in [0, 1].
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    if metric == "hamming":
        hard = np.rint(codes)
        distances = np.abs(hard[:, None, :] - hard[None, :, :]).sum(axis=2)
    elif metric == "l2":
        distances = ((codes[:, None, :] - codes[None, :, :]) ** 2).sum(axis=2)
    else:
        raise ValueError(f"Unknown metric {metric!r}; expected 'hamming' or 'l2'.")
    # The query itself must never be retrieved.
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return float(np.mean(labels[nearest] == labels[:, None]))
