"""The benchmark's report: a Markdown table per task and a matplotlib figure."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from model import tasks
from model.benchmark import REPRODUCE_COMMAND, Variant, params_text
from model.data import VALIDATION_SHARE
from model.evaluate import RETRIEVAL_K
from model.metadata import versions

MARKDOWN_NAME = "method-benchmark.md"
PLOT_NAME = "method-benchmark.png"

#: Per task: (metric key, column title, as percent) of the two hard-inference columns.
HARD_COLUMNS = {
    "digit-bits": (("exact_match", "exact match", True), ("bit_accuracy", "bit accuracy", True)),
    "digit-hash": (
        ("reconstruction_mse", "reconstruction MSE", False),
        (f"precision_at_{RETRIEVAL_K}", f"precision@{RETRIEVAL_K}", True),
    ),
    "digit-levels": (
        ("exact_match", "exact match", True),
        ("level_accuracy", "digit accuracy", True),
    ),
}
MISMATCH_TITLE = {
    "digit-bits": "mismatch: bit accuracy, surrogate − hard",
    "digit-hash": "mismatch: MSE, surrogate − hard",
    "digit-levels": "mismatch: digit accuracy, surrogate − hard",
}
SHARE_COLUMNS = (
    ("initial_dead_gradient_share", "dead grad. at init"),
    ("dead_gradient_share", "dead grad. trained"),
    ("exploding_gradient_share", "exploding grad."),
    ("negative_gradient_share", "wrong-sign grad."),
)


def values(records: Sequence[dict[str, Any]], task: str, label: str, key: str) -> np.ndarray:
    """The per-seed values of one metric for one row (``None`` values dropped)."""
    found = [
        r[key]
        for r in records
        if r["task"] == task and r["variant"] == label and r[key] is not None
    ]
    return np.asarray(found, dtype=np.float64)


def mean_std(data: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else 0.0


def format_mean_std(data: np.ndarray, percent: bool, signed: bool = False) -> str:
    """``"95.8 ± 0.4 %"`` or ``"0.0241 ± 0.0010"``; ``"—"`` when empty."""
    if data.size == 0:
        return "—"
    mean, std = mean_std(data)
    sign = "+" if signed else ""
    if percent:
        return f"{100 * mean:{sign}.1f} ± {100 * std:.1f} %"
    return f"{mean:{sign}.4f} ± {std:.4f}"


def format_share(data: np.ndarray) -> str:
    """A mean share in percent, ``"—"`` when not applicable."""
    return "—" if data.size == 0 else f"{100 * data.mean():.1f} %"


def best_row(
    records: Sequence[dict[str, Any]], rows: Sequence[Variant], task: str
) -> tuple[Variant, float, float] | None:
    """The best rounding row (not the reference, not the seed constants) on a task.

    Chosen on the validation rows (``validation_<primary metric>``); the
    held-out mean is returned for reporting only, never compared.

    Returns:
        ``(row, validation mean, held-out mean)``, or ``None`` when no
        record has a validation metric.
    """
    spec = tasks.get_spec(task)
    candidates = []
    for row in rows:
        data = values(records, task, row.label, f"validation_{spec.primary_metric}")
        if row.kind in ("method", "recipe") and data.size:
            held_out = values(records, task, row.label, spec.primary_metric)
            candidates.append((row, float(data.mean()), float(held_out.mean())))
    if not candidates:
        return None
    return (max if spec.higher_is_better else min)(candidates, key=lambda item: item[1])


def findings(
    records: Sequence[dict[str, Any]], rows: Sequence[Variant], task_names: Sequence[str]
) -> list[str]:
    """Sentences read off the table: the seed answers' failure modes, with their numbers."""
    lines = ["## The seed answers' failure modes, in numbers", ""]

    def pct(task: str, label: str, key: str) -> str:
        data = values(records, task, label, key)
        return f"{100 * data.mean():.1f} %" if data.size else "—"

    for row in rows:
        if row.kind != "seed":
            continue
        parts = []
        for task in task_names:
            key, title, percent = HARD_COLUMNS[task][0]
            data = values(records, task, row.label, key)
            if not data.size:
                continue
            metric = f"{100 * data.mean():.1f} %" if percent else f"{data.mean():.4f}"
            parts.append(
                f"{task}: {title} {metric}, dead gradients "
                f"{pct(task, row.label, 'initial_dead_gradient_share')} at initialisation, "
                f"wrong-sign gradients {pct(task, row.label, 'negative_gradient_share')}, "
                f"exploding {pct(task, row.label, 'exploding_gradient_share')}"
            )
        if parts:
            lines.append(f"- **{row.label}** ({row.note}): " + "; ".join(parts) + ".")
    lines.append("")
    return lines


def task_table(records: Sequence[dict[str, Any]], rows: Sequence[Variant], task: str) -> list[str]:
    """The Markdown table of one task."""
    (key1, title1, pct1), (key2, title2, pct2) = HARD_COLUMNS[task]
    header = [
        "method",
        "params",
        f"{title1} (hard)",
        f"{title2} (hard)",
        MISMATCH_TITLE[task],
        *[title for _, title in SHARE_COLUMNS],
        "train s",
        "note",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if not values(records, task, row.label, "train_seconds").size:
            continue
        params = params_text(row.params) if row.params else "defaults"
        if row.anneal:
            params = f"{row.anneal['parameter']} {row.anneal['schedule']} "
            params += f"{row.anneal['start']:g}→{row.anneal['end']:g}"
        if row.method is None:
            params = "—"
        cells = [
            f"`{row.method}`" if row.method and row.label == row.method else row.label,
            params,
            format_mean_std(values(records, task, row.label, key1), pct1),
            format_mean_std(values(records, task, row.label, key2), pct2),
            format_mean_std(
                values(records, task, row.label, "train_serve_mismatch"), pct1, signed=True
            ),
            *[format_share(values(records, task, row.label, key)) for key, _ in SHARE_COLUMNS],
            f"{values(records, task, row.label, 'train_seconds').mean():.1f}",
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(
    records: Sequence[dict[str, Any]],
    rows: Sequence[Variant],
    task_names: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    wall_seconds: float,
) -> str:
    """The whole report as Markdown."""
    v = versions()
    lines = [
        "# Which rounding surrogate works? The method benchmark",
        "",
        "Generated by `model/benchmark.py`. Reproduce (on 2 CPU cores it took "
        f"{wall_seconds / 60:.1f} min):",
        "",
        "```bash",
        REPRODUCE_COMMAND,
        "```",
        "",
        f"Every row is trained {len(seeds)} times (seeds {', '.join(map(str, seeds))}) for the "
        f"same budget, {epochs} epochs of batch 32 with Adam (learning rate 3e-3), on a fixed "
        "stratified split of scikit-learn's 8x8 digits: 450 rows held out, and of the 1347 "
        f"others {VALIDATION_SHARE:.0%} for validation, the rest for training. The best row "
        "per task is chosen on the validation rows; all numbers in the tables are on the "
        "held-out rows, which play no part in any choice: mean ± sample standard deviation "
        "over the seeds.",
        "",
        "- **digit-bits**: 64 grey levels → dense 64-64 → 4 sigmoid probabilities → rounding → "
        "the digit's 4-bit code (MSB first); the loss is the squared error of the *rounded* "
        "output. Hard metrics use exact rounding (what the service returns).",
        "- **digit-hash**: an autoencoder with a 16-bit rounded bottleneck (encoder 64-64-16, "
        "decoder 128-64); the loss is the pixel reconstruction error through the rounding. "
        "Reconstruction MSE is on pixels scaled to [0, 1], the decoder fed the hard code; "
        f"precision@{RETRIEVAL_K}: share of the {RETRIEVAL_K} nearest held-out codes (Hamming) "
        "with the query's digit.",
        "- **digit-levels**: an 8x8x1 image → conv 16 (3x3) → conv 32 (3x3, stride 2) → dense "
        "64 → 3 × sigmoid → rounding → the digit as two base-4 digits 0..3 (MSB first): a "
        "multi-level code, not 0/1; the loss is the squared error of the *rounded* output.",
        "- **float (no rounding)**: the same network without rounding (digit-bits outputs "
        "thresholded at 0.5 only for scoring, trained with binary cross-entropy, the loss that "
        "suits probabilities; digit-hash decodes and ranks its float code, MSE on pixels). A "
        "reference, not an upper bound: a loss on the rounded output can do better.",
        "- **mismatch** (train/serve): the metric under the deterministic surrogate "
        "(`DiffRound.relaxed`, what training optimises) minus the metric under exact rounding "
        "(what serving returns). For digit-bits the surrogate-side bit accuracy is "
        "`mean(1 - |surrogate - target|)`. Near 0: training sees what serving does.",
        "- **dead / exploding / wrong-sign grad.**: shares of the surrogate's local derivatives "
        "at the trained model's held-out pre-round values that are below 1e-6 in magnitude "
        "(no learning signal), above 10 (`diffround.diagnostics`), or negative (the gradient "
        "pushes the wrong way). Straight-through methods report their pseudo-gradient. "
        "*At init*: the untrained model's pre-round values, i.e. whether learning can start; "
        "*trained*: the final model's. A share that is high only after training (default "
        "`clamp`) means confident outputs sit where the surrogate is flat, after learning; a "
        "share high at initialisation means the encoder gets (almost) no signal at all.",
        "- **train s**: wall time of `Model.fit`, shared 2-core machine.",
        "",
    ]
    for task in task_names:
        spec = tasks.get_spec(task)
        lines += [f"## {task}", "", spec.description + ".", ""]
        lines += task_table(records, rows, task)
        best = best_row(records, rows, task)
        if best is not None:
            row, validation, held_out = best
            percent = HARD_COLUMNS[task][0][2]
            shown = [f"{100 * v:.1f} %" if percent else f"{v:.4f}" for v in (validation, held_out)]
            lines += [
                "",
                f"Best rounding row on {task}, chosen by validation "
                f"{spec.primary_metric.replace('_', ' ')}: **{row.label}** (validation "
                f"{shown[0]}; held-out {shown[1]}, reported only).",
            ]
        lines.append("")
    lines += findings(records, rows, task_names)
    lines += [
        f"![method benchmark]({PLOT_NAME})",
        "",
        "## Per-seed results",
        "",
        "<details><summary>every run</summary>",
        "",
        "| task | row | seed | primary metric | mismatch | train s |",
        "|---|---|---|---|---|---|",
    ]
    for record in records:
        spec = tasks.get_spec(record["task"])
        lines.append(
            f"| {record['task']} | {record['variant']} | {record['seed']} | "
            f"{spec.primary_metric} = {record[spec.primary_metric]:.4f} | "
            f"{record['train_serve_mismatch']:+.4f} | {record['train_seconds']:.1f} |"
        )
    lines += [
        "",
        "</details>",
        "",
        f"Environment: TensorFlow {v['tensorflow']}, Keras {v['keras']}, diffround "
        f"{v['diffround']}, Python {v['python']}, {os.cpu_count()} CPU cores "
        f"({platform.machine()}); generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
    ]
    return "\n".join(lines)


def _bar_panel(
    ax: Any,
    records: Sequence[dict[str, Any]],
    rows: Sequence[Variant],
    task: str,
    key: str,
    title: str,
    percent: bool,
) -> None:
    colors = {"reference": "0.55", "method": "tab:blue", "recipe": "tab:green", "seed": "tab:red"}
    labels, means, stds, bar_colors = [], [], [], []
    for row in rows:
        data = values(records, task, row.label, key)
        if not data.size:
            continue
        mean, std = mean_std(data)
        scale = 100.0 if percent else 1.0
        labels.append(row.label)
        means.append(scale * mean)
        stds.append(scale * std)
        bar_colors.append(colors[row.kind])
    positions = np.arange(len(labels))
    ax.barh(positions, means, xerr=stds, color=bar_colors, capsize=2)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _dead_panel(
    ax: Any, records: Sequence[dict[str, Any]], rows: Sequence[Variant], task: str
) -> None:
    """Bars: dead local gradients at initialisation; black marks: after training."""
    shown = [r for r in rows if values(records, task, r.label, "dead_gradient_share").size]
    _bar_panel(
        ax,
        records,
        shown,
        task,
        "initial_dead_gradient_share",
        f"{task}: dead local gradients (%), bars at init, ◆ trained",
        percent=True,
    )
    trained = [100 * values(records, task, r.label, "dead_gradient_share").mean() for r in shown]
    ax.scatter(trained, np.arange(len(shown)), marker="D", s=16, color="black", zorder=3)
    ax.set_xlim(0, 102)


def plot(
    records: Sequence[dict[str, Any]],
    rows: Sequence[Variant],
    task_names: Sequence[str],
    path: Path,
) -> Path:
    """Writes the figure: per task, the primary hard metric and the dead-gradient share."""
    # A bare Figure (no pyplot): no GUI backend, no global state.
    fig = Figure(figsize=(5.6 * len(task_names), 2 * (0.3 * len(rows) + 1.2)))
    axes = np.asarray(fig.subplots(2, len(task_names), squeeze=False))
    for column, task in enumerate(task_names):
        key, title, percent = HARD_COLUMNS[task][0]
        arrow = "higher is better" if tasks.get_spec(task).higher_is_better else "lower is better"
        title = f"{task}: {title}{' (%)' if percent else ''}, hard ({arrow})"
        _bar_panel(axes[0, column], records, rows, task, key, title, percent)
        _dead_panel(axes[1, column], records, rows, task)
    fig.suptitle(
        "Rounding surrogates: mean ± std over seeds (red: the seed answers' constants)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write(
    records: Sequence[dict[str, Any]],
    rows: Sequence[Variant],
    task_names: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    wall_seconds: float,
    out: Path,
) -> tuple[Path, Path]:
    """Writes ``method-benchmark.md`` and ``method-benchmark.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md_path = out / MARKDOWN_NAME
    md_path.write_text(markdown(records, rows, task_names, seeds, epochs, wall_seconds))
    png_path = plot(records, rows, task_names, out / PLOT_NAME)
    return md_path, png_path
