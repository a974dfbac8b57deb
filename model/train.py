"""Command line: train a task through a rounding surrogate and export it.

Example::

    python -m model.train --task digit-bits --method soft_round \\
        --param alpha=12 --anneal alpha:linear:1:12 --epochs 30 --seed 0 \\
        --models-root models

It trains with a Keras progress bar, evaluates on the held-out digits with
hard rounding, writes the next numeric version
``<models_root>/<name>/<version>/`` atomically (never overwriting one) and
prints that path as its last line.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

import diffround
from model import evaluate, export, tasks
from model import metadata as metadata_lib
from model.data import DigitsSplit, load_split

#: Defaults of the command (the default model's settings live in the Makefile's TRAIN_ARGS).
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32
#: A model name is one directory level; a leading dot would hide it from the service.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_value(text: str) -> Any:
    """Parses a parameter value: int, float, true/false, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_param(text: str) -> tuple[str, Any]:
    """Parses ``--param k=v``.

    Raises:
        argparse.ArgumentTypeError: Without ``=`` or with an empty name.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"Expected NAME=VALUE, got {text!r}.")
    return name.strip(), parse_value(value)


def parse_anneal(text: str) -> dict[str, Any]:
    """Parses ``--anneal PARAM:SCHEDULE:START:END[:UNIT:DURATION]``.

    ``UNIT`` is ``epoch`` (default) or ``step``; ``DURATION`` is how many of
    them the schedule lasts (default: the whole training).

    Raises:
        argparse.ArgumentTypeError: On a malformed value.
    """
    parts = text.split(":")
    if len(parts) not in (4, 6):
        raise argparse.ArgumentTypeError(
            f"Expected PARAM:SCHEDULE:START:END[:UNIT:DURATION], got {text!r}."
        )
    try:
        spec: dict[str, Any] = {
            "parameter": parts[0],
            "schedule": parts[1],
            "start": float(parts[2]),
            "end": float(parts[3]),
            "unit": "epoch",
            "duration": None,
        }
        if len(parts) == 6:
            spec["unit"] = parts[4]
            spec["duration"] = int(parts[5])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"Bad number in --anneal {text!r}: {error}") from None
    if spec["unit"] not in ("epoch", "step"):
        raise argparse.ArgumentTypeError(f"UNIT must be 'epoch' or 'step', got {spec['unit']!r}.")
    return spec


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train a digits task through a rounding surrogate and export a SavedModel "
        "(diffround.export).",
    )
    parser.add_argument("--task", choices=sorted(tasks.TASKS), default="digit-bits")
    parser.add_argument("--method", choices=diffround.METHODS, default="ste")
    parser.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the method (repeatable), e.g. alpha=12",
    )
    parser.add_argument(
        "--anneal",
        type=parse_anneal,
        default=None,
        metavar="PARAM:SCHEDULE:START:END[:UNIT:DURATION]",
        help="anneal a sharpness parameter, e.g. alpha:linear:1:12 or alpha:linear:1:12:epoch:20",
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-root", default=os.environ.get("MODELS_ROOT", "models"), type=Path)
    parser.add_argument("--name", default=None, help="model name (default: the task)")
    parser.add_argument(
        "--verbose",
        default="auto",
        choices=["auto", "0", "1", "2"],
        help="Keras fit verbosity (default auto: a progress bar)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be positive")
    if args.name is not None and not MODEL_NAME.fullmatch(args.name):
        parser.error(
            f"--name must be letters, digits, '_', '-' or '.', not starting with '.'; "
            f"got {args.name!r}"
        )
    config = TrainConfig(
        task=args.task,
        method=args.method,
        params=dict(args.param),
        anneal=args.anneal,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    command = shlex.join(["python", "-m", "model.train", *argv])
    try:
        result = train_and_export(
            config, args.models_root, args.name, command=command, verbose=verbose
        )
    except ConfigError as error:
        parser.error(str(error))
    _summary(result.metrics)
    print(result.path)
    return 0


class ConfigError(ValueError):
    """A method, parameter or schedule the library rejects (a usage error)."""


@dataclass(frozen=True)
class TrainConfig:
    """What to train.

    Attributes:
        task: Task name (a key of ``model.tasks.TASKS``).
        method: Rounding method (a name in ``diffround.METHODS``); ``None``: no
            rounding (the float reference, not exportable).
        params: The method's parameters.
        anneal: Parsed ``--anneal`` (see :func:`parse_anneal`), or ``None``.
        epochs: Training epochs.
        batch_size: Rows per step.
        seed: Seed of the weights, the shuffling and the surrogate noise.
    """

    task: str = "digit-bits"
    method: str | None = "ste"
    params: dict[str, Any] = field(default_factory=dict)
    anneal: dict[str, Any] | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0


@dataclass
class TrainResult:
    """A trained and exported model.

    Attributes:
        path: The exported version directory.
        task_model: The trained Keras models.
        metrics: Held-out metrics (also in the metadata).
        metadata: The metadata written with the model.
    """

    path: Path
    task_model: tasks.TaskModel
    metrics: dict[str, float]
    metadata: dict[str, Any]


def train_and_export(
    config: TrainConfig,
    models_root: str | os.PathLike[str],
    name: str | None = None,
    command: str | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Trains a task through a rounding layer, evaluates it and exports it.

    Args:
        config: What to train.
        models_root: Repository root the new version goes under.
        name: Model name (default: the task's name).
        command: The command line recorded in the metadata (default: a
            ``python -m model.train`` line equivalent to ``config``).
        verbose: ``Model.fit`` verbosity (default ``"auto"``: a progress bar).

    Returns:
        The result; ``result.path`` is the new version directory.

    Raises:
        ConfigError: When the library rejects the method, a parameter or the
            schedule (before any training).
    """
    if config.method is None:
        raise ConfigError("The float reference (no rounding method) is not exportable.")
    split = load_split()
    fitted = fit_config(config, split, verbose=verbose)
    task_model, rounding, anneal = fitted.task_model, fitted.task_model.rounding, fitted.anneal
    spec = task_model.spec

    held_out = evaluate.evaluate(task_model, split)
    outputs = evaluate.code_outputs(task_model, split.x_test)
    final_params = layer_params(rounding)
    # Flattened: the shares are over every held-out pre-round value.
    diagnostics = diffround.diagnostics(outputs.pre_round.ravel(), config.method, **final_params)
    held_out.update({key: float(value) for key, value in diagnostics.items()})
    if command is None:
        command = shlex.join(["python", "-m", "model.train", *config_arguments(config)])
    training = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "train_seconds": round(fitted.train_seconds, 3),
        "final_loss": fitted.final_loss,
        "train_rows": len(split.y_train),
        "held_out_rows": len(split.y_test),
        "command": command,
    }
    options = metadata_lib.export_options(
        spec=spec,
        anneal=anneal,
        metrics=held_out,
        training=training,
        example_rows=metadata_lib.examples(spec, split, outputs.hard),
    )
    path = export.save(task_model.export_model, models_root, name or spec.name, **options)
    return TrainResult(
        path=path, task_model=task_model, metrics=held_out, metadata=export.read_metadata(path)
    )


@dataclass
class Fitted:
    """A trained (not yet exported) task model.

    Attributes:
        task_model: The trained Keras models.
        anneal: The schedule with its duration resolved, or ``None``.
        train_seconds: Wall time of ``Model.fit``.
        final_loss: Training loss of the last epoch.
    """

    task_model: tasks.TaskModel
    anneal: dict[str, Any] | None
    train_seconds: float
    final_loss: float


def fit_config(
    config: TrainConfig,
    split: DigitsSplit,
    verbose: int | str = "auto",
    extra_callbacks: Callable[[tasks.TaskModel], Sequence[keras.callbacks.Callback]] | None = None,
) -> Fitted:
    """Seeds everything, builds the task around the rounding layer and trains it.

    Args:
        config: What to train; ``method=None`` trains the unrounded float
            reference (no rounding layer; used by the benchmark only).
        split: The data.
        verbose: ``Model.fit`` verbosity.
        extra_callbacks: Called with the built (untrained) task model; returns
            more Keras callbacks, run after the annealer (if any).

    Returns:
        The trained model and its training facts.

    Raises:
        ConfigError: When the library rejects the method, a parameter or the
            schedule (before any training).
    """
    keras.utils.set_random_seed(config.seed)
    spec = tasks.get_spec(config.task)
    rounding = None
    if config.method is not None:
        try:
            rounding = diffround.DiffRound(
                method=config.method, name=spec.rounding_name, **config.params
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None
    task_model = tasks.build(spec, rounding)
    callbacks: list[keras.callbacks.Callback] = []
    anneal = config.anneal
    if anneal is not None:
        if rounding is None:
            raise ConfigError("--anneal needs a rounding method.")
        anneal = resolve_anneal(anneal, config.epochs, len(split.y_train), config.batch_size)
        try:
            callbacks.append(make_annealer(rounding, anneal))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if extra_callbacks is not None:
        callbacks.extend(extra_callbacks(task_model))
    started = time.perf_counter()
    history = tasks.fit(
        task_model, split, config.epochs, config.batch_size, callbacks=callbacks, verbose=verbose
    )
    return Fitted(
        task_model=task_model,
        anneal=anneal,
        train_seconds=time.perf_counter() - started,
        final_loss=float(history.history["loss"][-1]),
    )


def config_arguments(config: TrainConfig) -> list[str]:
    """Command-line arguments equivalent to ``config``."""
    arguments = ["--task", config.task, "--method", str(config.method)]
    for key, value in config.params.items():
        arguments += ["--param", f"{key}={value}"]
    if config.anneal is not None:
        a = config.anneal
        text = f"{a['parameter']}:{a['schedule']}:{a['start']:g}:{a['end']:g}"
        if a.get("duration") is not None:
            text += f":{a['unit']}:{a['duration']}"
        arguments += ["--anneal", text]
    arguments += ["--epochs", str(config.epochs), "--batch-size", str(config.batch_size)]
    return [*arguments, "--seed", str(config.seed)]


def resolve_anneal(
    anneal: dict[str, Any], epochs: int, train_rows: int, batch_size: int
) -> dict[str, Any]:
    """Fills in the default duration of a parsed ``--anneal``: the whole training.

    Args:
        anneal: From :func:`parse_anneal`.
        epochs: Training epochs.
        train_rows: Training rows (for step units).
        batch_size: Rows per step.

    Returns:
        A copy with an integer ``duration`` in ``unit``s.
    """
    resolved = dict(anneal)
    if resolved["duration"] is None:
        steps_per_epoch = -(-train_rows // batch_size)
        resolved["duration"] = epochs if resolved["unit"] == "epoch" else epochs * steps_per_epoch
    return resolved


def make_annealer(
    rounding: diffround.DiffRound, anneal: dict[str, Any]
) -> keras.callbacks.Callback:
    """A ``diffround.Annealer`` for a resolved ``--anneal`` value (see :func:`resolve_anneal`).

    Raises:
        ValueError: A schedule value the layer would reject (``temperature`` 0,
            say), checked here so the command fails before training, not after.
    """
    annealer = diffround.Annealer(
        parameter=anneal["parameter"],
        start=anneal["start"],
        end=anneal["end"],
        duration=anneal["duration"],
        schedule=anneal["schedule"],
        unit=anneal["unit"],
        layers=[rounding],
    )
    annealer.validate([rounding])
    return annealer


def layer_params(rounding: diffround.DiffRound) -> dict[str, Any]:
    """The method parameters of a rounding layer, with their current values."""
    return rounding.current_params()


def _summary(held_out: dict[str, float]) -> None:
    text = ", ".join(f"{key}={value:.4f}" for key, value in held_out.items())
    print(f"held-out: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
