"""The method benchmark: every rounding method x every task x 3 seeds, same budget.

Run::

    python -m model.benchmark --out docs/

Each run trains one task model through one rounding configuration (or the
unrounded float reference, trained with the loss that suits it) for the same
number of epochs on the training rows less a validation share
(``model.data.VALIDATION_SHARE``). The best row per task is chosen on the
validation rows; every reported number is measured on the held-out digits,
which play no part in the choice: the hard-inference metrics, the train/serve mismatch
(metric under the deterministic surrogate minus metric under exact rounding),
and the surrogate's local gradients at the held-out pre-round values (shares
that are dead, exploding or of the wrong sign). The results go to
``method-benchmark.md`` and ``method-benchmark.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import diffround
from model import evaluate, tasks
from model.data import VALIDATION_SHARE, DigitsSplit, load_split
from model.train import DEFAULT_BATCH_SIZE, TrainConfig, fit_config, layer_params

#: Epochs per run: the default model's budget.
DEFAULT_EPOCHS = 30
DEFAULT_SEEDS = (0, 1, 2)
REPRODUCE_COMMAND = (
    "python -m model.benchmark --out docs/ --records docs/method-benchmark-records.json"
)
#: The 0/1 rounding methods the benchmark compares (the grid methods, LSQ and
#: the sign family are benchmarked in ``model.quantized_benchmark``).
ZERO_ONE_METHODS = (
    "sine",
    "clamp",
    "ste",
    "ste_custom",
    "fourier",
    "sigmoid",
    "soft_round",
    "noise",
    "binary_concrete",
    "clipped_ste",
    "approx_sign",
)
SHARE_KEYS = (
    "dead_gradient_share",
    "exploding_gradient_share",
    "negative_gradient_share",
    "surrogate_gap",
)


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: a rounding configuration.

    Attributes:
        label: Row label.
        method: A name in ``diffround.METHODS``, or ``None`` for the float reference.
        params: The method's parameters (library defaults when empty).
        anneal: An annealing schedule (``duration`` ``None``: the whole training).
        kind: ``"reference"``, ``"method"`` (library defaults), ``"recipe"``
            (a tuned configuration) or ``"seed"`` (the seed answers' constants).
        note: What the row shows.
    """

    label: str
    method: str | None
    params: dict[str, Any] = field(default_factory=dict)
    anneal: dict[str, Any] | None = None
    kind: str = "method"
    note: str = ""


def variants() -> list[Variant]:
    """The benchmark's rows, in table order."""
    rows = [
        Variant(
            "float (no rounding)",
            None,
            kind="reference",
            note="float reference (cross-entropy on digit-bits); not an upper bound",
        )
    ]
    rows += [Variant(method, method) for method in ZERO_ONE_METHODS]
    rows.append(
        Variant(
            "soft_round, alpha 1->12",
            "soft_round",
            anneal={
                "parameter": "alpha",
                "schedule": "linear",
                "start": 1.0,
                "end": 12.0,
                "unit": "epoch",
                "duration": None,
            },
            kind="recipe",
            note="annealed from nearly identity to nearly round",
        )
    )
    rows += [
        Variant(
            "clamp, seed constants",
            "clamp",
            {"threshold": 0.499, "slope": 1e4},
            kind="seed",
            note="answer 2: threshold 0.499, slope 1e4",
        ),
        Variant(
            "sigmoid, seed constants",
            "sigmoid",
            {"slope": 1000.0, "center": 0.5},
            kind="seed",
            note="answer 6: slope 1000",
        ),
        Variant(
            "fourier, odd terms",
            "fourier",
            {"terms": 5},
            kind="seed",
            note="answer 4: N=5 (odd)",
        ),
    ]
    return rows


def params_text(params: dict[str, Any]) -> str:
    """``k=v, ...`` with compact numbers."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) and not isinstance(v, bool) else f"{k}={v}"
        for k, v in params.items()
    )


def gradient_shares(pre_round: np.ndarray, method: str, params: dict[str, Any]) -> dict[str, float]:
    """Shares of held-out local gradients that are dead, exploding or negative.

    Args:
        pre_round: Held-out pre-round values (any shape).
        method: The rounding method.
        params: Its final parameter values.

    Returns:
        ``dead_gradient_share`` and ``exploding_gradient_share`` (from
        ``diffround.diagnostics``), ``negative_gradient_share`` (the local
        derivative points the wrong way) and ``surrogate_gap``.
    """
    flat = np.asarray(pre_round, np.float32).ravel()
    found = diffround.diagnostics(flat, method, **params)
    _, local = diffround.local_gradient(flat, method, **params)
    return {
        "dead_gradient_share": float(found["dead_gradient_share"]),
        "exploding_gradient_share": float(found["exploding_gradient_share"]),
        "negative_gradient_share": float(np.mean(np.asarray(local) < 0.0)),
        "surrogate_gap": float(found["surrogate_gap"]),
    }


class InitialGradients(keras.callbacks.Callback):
    """Records the gradient shares at the start of training (weights at initialisation).

    Placed after the annealer, so an annealed parameter has its start value.

    Args:
        task_model: The task being trained.
        x: Held-out inputs.
        method: The rounding method.
    """

    def __init__(self, task_model: tasks.TaskModel, x: np.ndarray, method: str) -> None:
        super().__init__()
        self.task_model = task_model
        self.x = x
        self.method = method
        self.shares: dict[str, float] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        rounding = self.task_model.rounding
        assert rounding is not None
        pre_round = evaluate.code_outputs(self.task_model, self.x).pre_round
        self.shares = gradient_shares(pre_round, self.method, layer_params(rounding))


def run_one(
    variant: Variant, task: str, seed: int, epochs: int, split: DigitsSplit
) -> dict[str, Any]:
    """Trains and measures one (variant, task, seed).

    Returns:
        A flat record: task, variant label, seed, metrics, gradient shares
        (``None`` for the float reference) and ``train_seconds``.
    """
    keras.backend.clear_session()
    config = TrainConfig(
        task=task,
        method=variant.method,
        params=dict(variant.params),
        anneal=variant.anneal,
        epochs=epochs,
        batch_size=DEFAULT_BATCH_SIZE,
        seed=seed,
    )
    initial: list[InitialGradients] = []

    def recorder(task_model: tasks.TaskModel) -> list[keras.callbacks.Callback]:
        if variant.method is None:
            return []
        initial.append(InitialGradients(task_model, split.x_test, variant.method))
        return initial

    fitted = fit_config(config, split, verbose=0, extra_callbacks=recorder)
    record: dict[str, Any] = {
        "task": task,
        "variant": variant.label,
        "seed": seed,
        "train_seconds": fitted.train_seconds,
        **evaluate.evaluate(fitted.task_model, split),
    }
    if len(split.y_val):
        validation = evaluate.evaluate(fitted.task_model, split.validation())
        record.update({f"validation_{k}": v for k, v in validation.items()})
    rounding = fitted.task_model.rounding
    if rounding is None or variant.method is None:
        record.update(dict.fromkeys(SHARE_KEYS))
        record["initial_dead_gradient_share"] = None
    else:
        pre_round = evaluate.code_outputs(fitted.task_model, split.x_test).pre_round
        record.update(gradient_shares(pre_round, variant.method, layer_params(rounding)))
        record["initial_dead_gradient_share"] = initial[0].shares["dead_gradient_share"]
    return record


def run(
    rows: Sequence[Variant],
    task_names: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    log: Any = sys.stderr,
) -> list[dict[str, Any]]:
    """Runs every (variant, task, seed); returns the records in that order.

    Training uses the training rows less the validation share; the records
    carry the held-out metrics and, prefixed ``validation_``, the validation
    metrics the report chooses with.
    """
    split = load_split(validation_share=VALIDATION_SHARE)
    records = []
    total = len(rows) * len(task_names) * len(seeds)
    for task in task_names:
        for variant in rows:
            for seed in seeds:
                record = run_one(variant, task, seed, epochs, split)
                records.append(record)
                spec = tasks.get_spec(task)
                print(
                    f"[{len(records)}/{total}] {task} {variant.label} seed={seed}: "
                    f"{spec.primary_metric}={record[spec.primary_metric]:.4f} "
                    f"({record['train_seconds']:.1f} s)",
                    file=log,
                    flush=True,
                )
    return records


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m model.benchmark",
        description="Benchmark every rounding method on every task; write a table and a plot.",
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output directory")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--tasks", nargs="+", choices=sorted(tasks.TASKS), default=None)
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="LABEL", help="run only these row labels"
    )
    parser.add_argument(
        "--records", type=Path, default=None, help="also save every run's record to this JSON file"
    )
    parser.add_argument(
        "--from-records",
        type=Path,
        default=None,
        help="no training: rewrite the report from a --records file",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and writes the report; returns the exit status."""
    from model import benchmark_report

    args = build_parser().parse_args(argv)
    rows = variants()
    if args.only:
        unknown = set(args.only) - {row.label for row in rows}
        if unknown:
            raise SystemExit(f"Unknown row label(s): {', '.join(sorted(unknown))}")
        rows = [row for row in rows if row.label in args.only]
    if args.from_records is not None:
        saved = json.loads(args.from_records.read_text())
        records, wall_seconds = saved["records"], saved["wall_seconds"]
        task_names = list(dict.fromkeys(r["task"] for r in records))
        seeds = sorted({r["seed"] for r in records})
        labels = {r["variant"] for r in records}
        rows = [row for row in rows if row.label in labels]
        epochs = saved["epochs"]
    else:
        task_names = args.tasks or list(tasks.TASKS)
        seeds, epochs = args.seeds, args.epochs
        started = time.perf_counter()
        records = run(rows, task_names, seeds, epochs)
        wall_seconds = time.perf_counter() - started
        if args.records is not None:
            saved = {"epochs": epochs, "wall_seconds": wall_seconds, "records": records}
            args.records.write_text(json.dumps(saved, indent=1) + "\n")
    markdown, plot = benchmark_report.write(
        records, rows, task_names, seeds, epochs, wall_seconds, args.out
    )
    print(markdown)
    print(plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
