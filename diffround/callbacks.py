"""`Annealer`: a Keras callback that anneals a parameter of `DiffRound` layers."""

import math
import numbers
from collections.abc import Iterable
from typing import Any

import keras

from diffround import registry
from diffround.layers import DiffRound

SCHEDULES = ("linear", "exponential", "cosine")
UNITS = ("epoch", "step")


def schedule_value(schedule: str, start: float, end: float, progress: float) -> float:
    """The annealed value at `progress` in [0, 1] (clipped).

    linear: `start + (end - start) p`; exponential (geometric):
    `start (end / start)^p`; cosine: `end + (start - end)(1 + cos(pi p)) / 2`.

    Args:
        schedule: One of `SCHEDULES`.
        start: Value at progress 0.
        end: Value at progress 1.
        progress: Completed fraction of the schedule.

    Returns:
        The value.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * p
    if schedule == "exponential":
        return start * (end / start) ** p
    if schedule == "cosine":
        return end + (start - end) * (1.0 + math.cos(math.pi * p)) / 2.0
    raise ValueError(
        f"Invalid value received for argument `schedule`. Expected one of "
        f"{', '.join(SCHEDULES)}. Received: schedule={schedule!r}"
    )


class Annealer(keras.callbacks.Callback):
    """Anneals one float parameter of `DiffRound` layers from `start` to `end`.

    The value after `t` completed units (epochs or steps) is
    `schedule_value(schedule, start, end, t / duration)`; it stays at `end`
    after `duration` units. Progress is not kept in the callback: each
    layer's non-trainable `anneal_step_<parameter>` variable counts the
    completed units of that parameter's schedule, so it is saved with the
    model (`.keras` and checkpoints), a reloaded model resumes its schedule
    where it stopped, and two `Annealer`s of different parameters of one
    layer (say `slope` and `threshold` of `clamp`) each keep their own pace.
    Use one `Annealer` per parameter and layer. When training begins,
    `start` and `end` are validated against the parameter's kind for each
    target layer's method (e.g. a `temperature` must stay positive), so an
    invalid schedule fails before training instead of leaving a layer that
    cannot be saved and reloaded. The value for unit `t` is set when that unit begins, and after the
    last unit the layer holds the value for `t + 1` (so a model trained for
    `duration` units is saved with `end`).

    Args:
        parameter: The parameter to anneal (`alpha`, `slope`, `temperature`,
            or any float parameter of the layers' method).
        start: Value at the beginning.
        end: Value after `duration` units.
        duration: Number of units the schedule takes (positive int).
        schedule: "linear" (default), "exponential" (geometric; start and end
            must be positive) or "cosine".
        unit: "epoch" (default) or "step" (training batches).
        layers: The `DiffRound` layers to anneal; default: every `DiffRound`
            in the model that has `parameter`.
    """

    def __init__(
        self,
        parameter: str,
        start: float,
        end: float,
        duration: int,
        schedule: str = "linear",
        unit: str = "epoch",
        layers: Iterable[DiffRound] | None = None,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            schedule_value(schedule, 0.0, 0.0, 0.0)  # raises the message
        if unit not in UNITS:
            raise ValueError(
                f"Invalid value received for argument `unit`. Expected one of "
                f"{', '.join(UNITS)}. Received: unit={unit!r}"
            )
        if isinstance(duration, bool) or not isinstance(duration, numbers.Integral) or duration < 1:
            raise ValueError(
                "Invalid value received for argument `duration`. Expected a positive int. "
                f"Received: duration={duration!r}"
            )
        for name, value in (("start", start), ("end", end)):
            if not math.isfinite(value) or (schedule == "exponential" and value <= 0):
                kind = "a positive float" if schedule == "exponential" else "a finite float"
                raise ValueError(
                    f"Invalid value received for argument `{name}`. Expected {kind}. "
                    f"Received: {name}={value!r}"
                )
        self.parameter = parameter
        self.start = float(start)
        self.end = float(end)
        self.duration = int(duration)
        self.schedule = schedule
        self.unit = unit
        self._given_layers = list(layers) if layers is not None else None
        self.targets: list[DiffRound] = []

    def value_at(self, completed: int) -> float:
        """The parameter value after `completed` units."""
        return schedule_value(self.schedule, self.start, self.end, completed / self.duration)

    def _find_targets(self) -> list[DiffRound]:
        if self._given_layers is not None:
            candidates = self._given_layers
        else:
            candidates = [
                layer for layer in _all_layers(self.model) if isinstance(layer, DiffRound)
            ]
        targets = [layer for layer in candidates if self.parameter in layer.parameter_variables]
        if not targets:
            raise ValueError(
                f"Annealer found no DiffRound layer with a float parameter "
                f"{self.parameter!r} to anneal."
            )
        self.validate(targets)
        return targets

    def validate(self, layers: Iterable[DiffRound]) -> None:
        """Checks `start` and `end` against the parameter's kind for each layer's method.

        Called when training begins; a command line can call it right after
        building the model, to fail before any training.

        Args:
            layers: `DiffRound` layers the schedule will set.

        Raises:
            ValueError: A value the layer would reject (e.g.
                `temperature=0`), in Keras's message shape.
        """
        for layer in layers:
            # Every value of a linear or cosine schedule lies between start
            # and end, and a geometric one's between two positive values:
            # checking the two ends checks them all.
            for value in (self.start, self.end):
                registry.check_value(layer.method, self.parameter, value)

    def _apply(self) -> None:
        for layer in self.targets:
            completed = int(keras.ops.convert_to_numpy(layer.anneal_steps[self.parameter]))
            layer.parameter_variables[self.parameter].assign(self.value_at(completed))

    def _advance(self) -> None:
        for layer in self.targets:
            counter = layer.anneal_steps[self.parameter]
            counter.assign(counter + 1)
        self._apply()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.targets = self._find_targets()
        self._apply()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.unit == "epoch":
            self._advance()
        if logs is not None and self.targets:
            logs[self.parameter] = float(
                keras.ops.convert_to_numpy(self.targets[0].parameter_variables[self.parameter])
            )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.unit == "step":
            self._advance()


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer inside `model`, recursively (nested models included)."""
    found = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found
