"""app/interpret.py grad_summary: the /grad summary against NumPy formulas written here."""

import numpy as np
import pytest

from app.interpret import grad_summary


def _layers(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    hard = rng.integers(0, 2, (3, 2, 2)).astype(np.float32)
    local = rng.normal(size=(3, 2, 2)).astype(np.float32)
    # 0 and 9e-7 are dead; float32(-1e-6) is too: its magnitude rounds just below 1e-6.
    local[0, 0, 0], local[1, 1, 1], local[2, 0, 1] = 0.0, 9e-7, -1e-6
    return {
        "first": {
            "hard": hard,
            "surrogate": (hard + rng.normal(scale=0.2, size=hard.shape)).astype(np.float32),
            "local_grad": local,
        },
        "second": {
            "hard": np.array([[0.5], [1.5], [-2.5]], np.float32),  # half-integers
            "surrogate": np.array([[0.5], [1.25], [-2.0]], np.float32),
            "local_grad": np.array([[1.0], [0.0], [1e-7]], np.float32),
        },
    }


def test_summary_matches_numpy_over_several_layers_and_jacobians() -> None:
    rng = np.random.default_rng(7)
    layers = _layers(rng)
    small = rng.normal(size=(3, 2, 5)).astype(np.float32)  # output rank 1, input [5]
    large = rng.normal(size=(3, 2, 2, 4, 3)).astype(np.float32)  # output [2, 2], input [4, 3]
    large[2, 1, 0, 3, 1] = -40.0  # the largest magnitude, negative
    jacobians = {("y", "x"): small, ("z", "image"): large, ("z", "empty"): np.zeros((3, 2, 2, 0))}

    summary = grad_summary(layers, jacobians, {"y": 1, "z": 2})

    gaps = np.concatenate([np.abs(v["surrogate"] - v["hard"]).ravel() for v in layers.values()])
    local = np.concatenate([v["local_grad"].ravel() for v in layers.values()])
    assert summary["surrogate_gap"] == pytest.approx(gaps.astype(np.float64).mean(), rel=1e-12)
    assert summary["dead_gradient_share"] == (np.abs(local) < 1e-6).mean()
    assert summary["max_abs_jacobian"] == 40.0
    assert summary["argmax"] == {
        "output": "z",
        "input": "image",
        "row": 2,
        "index": [1, 0, 3, 1],
        "output_index": [1, 0],
        "input_index": [3, 1],
    }
    assert "output 'z' w.r.t. input 'image' in row 2" in summary["text"]


def test_the_first_of_equal_magnitudes_wins_and_ranks_are_optional() -> None:
    jacobian = np.zeros((2, 3, 4), np.float32)
    jacobian[0, 2, 1] = -5.0
    jacobian[1, 0, 0] = 5.0  # the same magnitude, later in C order
    summary = grad_summary({}, {("y", "x"): jacobian})
    assert summary["argmax"] == {"output": "y", "input": "x", "row": 0, "index": [2, 1]}
    assert (summary["surrogate_gap"], summary["dead_gradient_share"]) == (0.0, 0.0)


def test_no_jacobians_means_no_argmax() -> None:
    summary = grad_summary(_layers(np.random.default_rng(1)), {("y", "x"): np.zeros((2, 0))})
    assert summary["argmax"] is None and summary["max_abs_jacobian"] == 0.0
    assert "largest" not in summary["text"] and summary["text"].endswith(".")
