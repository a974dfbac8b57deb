"""Readings of model outputs for a person: decoded classes, the gradient summary (NumPy only)."""

from typing import Any

import numpy as np

#: A local gradient below this magnitude is dead (it matches `diffround.diagnostics`).
DEAD_BELOW = 1e-6


def decode_outputs(hard: np.ndarray, decoding: Any) -> list[int | None] | None:
    """Decode hard bits into class ids, as the metadata's `decoding` says.

    Args:
        hard: `[n, K]` 0/1 outputs.
        decoding: The metadata's `decoding` (`{"kind": "binary_msb_first", "classes": C}` or null).

    Returns:
        One class id per row (None for a code that names no class), or None
        when the model has no decoding.
    """
    if not isinstance(decoding, dict) or decoding.get("kind") != "binary_msb_first":
        return None
    k = hard.shape[1]
    weights = 2 ** np.arange(k - 1, -1, -1, dtype=np.int64)
    codes = hard.astype(np.int64) @ weights
    classes = decoding.get("classes")
    limit = classes if isinstance(classes, int) else None
    return [int(c) if limit is None or c < limit else None for c in codes]


def grad_summary(grads: dict[str, np.ndarray]) -> dict[str, Any]:
    """A per-request summary of the `grad` outputs.

    Args:
        grads: `hard`, `surrogate`, `local_grad` (`[n, K]`) and `input_grad` (`[n, K, 64]`).

    Returns:
        `surrogate_gap` (mean |surrogate - hard|), `dead_gradient_share` (share
        of local gradients below 1e-6 in magnitude), `max_abs_input_grad`, its
        `argmax` (`row`, `output`, `input`) and a sentence, `text`.
    """
    gap = float(np.mean(np.abs(grads["surrogate"] - grads["hard"])))
    dead = float(np.mean(np.abs(grads["local_grad"]) < DEAD_BELOW))
    magnitude = np.abs(grads["input_grad"])
    flat = int(np.argmax(magnitude))
    row, output, pixel = (int(i) for i in np.unravel_index(flat, magnitude.shape))
    largest = float(magnitude.reshape(-1)[flat])
    width = magnitude.shape[2]
    side = round(width**0.5)
    where = f" (pixel row {pixel // side}, column {pixel % side})" if side * side == width else ""
    text = (
        f"{magnitude.shape[0]} row(s), {magnitude.shape[1]} output(s). "
        f"Surrogate gap {gap:.4g} (mean |surrogate - hard|). "
        f"{dead:.1%} of local gradients are dead (|d surrogate / d pre_round| < {DEAD_BELOW:g}). "
        f"Largest input gradient {largest:.4g} at row {row}, output {output}, input {pixel}{where}."
    )
    return {
        "surrogate_gap": gap,
        "dead_gradient_share": dead,
        "max_abs_input_grad": largest,
        "argmax": {"row": row, "output": output, "input": pixel},
        "text": text,
    }
