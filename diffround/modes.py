"""Call modes of `DiffRound` beyond Keras's `training` flag.

`relaxed_mode()` makes every `DiffRound` layer called inside it compute its
deterministic relaxed form, `layer.relaxed(x)` (the training-time surrogate
with any noise fixed at its mean), whatever its `training` argument, and
records each layer's input (the pre-round values). `diffround.export` traces
the `grad` signature of a SavedModel this way; it is equally usable eagerly:

    with diffround.relaxed_mode() as calls:
        y = model(x)            # every DiffRound layer in `model` is relaxed
    calls[0].layer, calls[0].inputs   # the first rounding layer and its pre-round values

The mode is per thread and nests (the innermost recorder gets the calls).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_STATE = threading.local()


@dataclass(frozen=True)
class RoundingCall:
    """One call of a rounding layer in relaxed mode.

    Attributes:
        layer: The `DiffRound` layer that was called.
        inputs: Its input tensor (the pre-round values).
        outputs: What it returned: `layer.relaxed(inputs)`.
    """

    layer: Any
    inputs: Any
    outputs: Any


def _stack() -> list[list[RoundingCall]]:
    if not hasattr(_STATE, "stack"):
        _STATE.stack = []
    return _STATE.stack


@contextlib.contextmanager
def relaxed_mode() -> Iterator[list[RoundingCall]]:
    """Runs every `DiffRound` layer in its deterministic relaxed form.

    Inside the block, `DiffRound.call` returns `layer.relaxed(inputs)` for
    `training=True` and `training=False` alike, and appends a `RoundingCall`
    to the list this context manager yields, in call order. Works eagerly and
    while a `tf.function` is traced (the tensors are then symbolic).

    Yields:
        The list of `RoundingCall`s made inside the block (filled as it runs).
    """
    calls: list[RoundingCall] = []
    stack = _stack()
    stack.append(calls)
    try:
        yield calls
    finally:
        stack.pop()


def is_relaxed() -> bool:
    """Whether the current thread is inside `relaxed_mode()`."""
    return bool(_stack())


def relaxed_call(layer: Any, inputs: Any) -> Any:
    """What `DiffRound.call` does in relaxed mode: `layer.relaxed(inputs)`, recorded.

    Args:
        layer: The rounding layer being called.
        inputs: Its pre-round input.

    Returns:
        `layer.relaxed(inputs)`.
    """
    outputs = layer.relaxed(inputs)
    _stack()[-1].append(RoundingCall(layer=layer, inputs=inputs, outputs=outputs))
    return outputs
