"""The grid benchmark: a quantized autoencoder at 2, 3 and 4 bits, every grid method.

Run::

    python -m model.quantized_benchmark --out docs/ \
        --records docs/quantized-benchmark-records.json
    python -m model.quantized_benchmark --out docs/ \
        --from-records docs/quantized-benchmark-records.json

The task: the digits' 64 grey levels -> dense 32 (relu) -> 8 linear latents
-> a quantizer to signed ``bits``-bit codes -> dense 32 (relu) -> 64 sigmoid
pixels; the loss is the pixel MSE through the quantizer. Rows: LSQ (learned
step, ``diffround.LearnedStepRound``), and on a fixed grid (step ``4 / 2^bits``,
codes ``-2^(bits-1)..2^(bits-1)-1``, i.e. the latents live in [-2, 2)):
``ste``, ``stochastic`` rounding, ``universal`` quantization, ``noise``,
``soft_round``, ``soft_round_noise`` and ``sine``; plus the float autoencoder
(no quantizer) as the reference. The method per bit width is chosen on the
validation rows (``model.data.VALIDATION_SHARE`` of the training rows) and
reported on the held-out rows, which play no part in the choice. The records
are saved, so the report re-renders without training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import diffround
from model.data import MAX_GREY_LEVEL, NUM_INPUTS, VALIDATION_SHARE, load_split

BITS = (2, 3, 4)
DEFAULT_SEEDS = (0, 1)
DEFAULT_EPOCHS = 15
LATENTS = 8
HIDDEN = 32
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
#: The fixed grid covers [-RANGE/2, RANGE/2).
RANGE = 4.0
MARKDOWN_NAME = "quantized-benchmark.md"
REPRODUCE_COMMAND = (
    "python -m model.quantized_benchmark --out docs/ "
    "--records docs/quantized-benchmark-records.json"
)


@dataclass(frozen=True)
class Row:
    """One quantizer configuration.

    Attributes:
        label: Row label.
        method: A ``diffround`` method, ``"lsq"`` or ``None`` (float reference).
        params: The method's parameters.
    """

    label: str
    method: str | None
    params: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Row("float (no quantizer)", None),
    Row("lsq", "lsq"),
    Row("ste", "ste"),
    Row("stochastic", "stochastic"),
    Row("universal", "universal"),
    Row("noise", "noise"),
    Row("soft_round", "soft_round"),
    Row("soft_round_noise", "soft_round_noise"),
    Row("sine", "sine"),
)


def quantizer(row: Row, bits: int) -> keras.layers.Layer | None:
    """The row's quantizer layer at ``bits`` (``None`` for the float reference)."""
    if row.method is None:
        return None
    if row.method == "lsq":
        return diffround.LearnedStepRound(bits=bits, signed=True, name="quantizer")
    step = RANGE / 2**bits
    return diffround.DiffRound(
        row.method, step=step, bits=bits, signed=True, name="quantizer", **row.params
    )


def build(row: Row, bits: int) -> tuple[keras.Model, keras.Model, keras.layers.Layer | None]:
    """The autoencoder: (model, encoder, quantizer). The network is built before the quantizer."""
    inputs = keras.Input((NUM_INPUTS,), name="pixels")
    hidden = keras.layers.Dense(HIDDEN, activation="relu", name="enc_hidden")(inputs)
    latents = keras.layers.Dense(LATENTS, name="latents")(hidden)
    encoder = keras.Model(inputs, latents, name="encoder")
    decoder = keras.Sequential(
        [
            keras.Input((LATENTS,)),
            keras.layers.Dense(HIDDEN, activation="relu", name="dec_hidden"),
            keras.layers.Dense(NUM_INPUTS, activation="sigmoid", name="reconstruction"),
        ],
        name="decoder",
    )
    layer = quantizer(row, bits)
    code = layer(encoder(inputs)) if layer is not None else encoder(inputs)
    model = keras.Model(inputs, decoder(code), name="quantized_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
    return model, encoder, layer


def _mse(model: keras.Model, x: np.ndarray) -> float:
    return float(np.mean((model.predict(x, verbose=0, batch_size=256) - x) ** 2))


def run_one(row: Row, bits: int, seed: int, epochs: int, split: Any) -> dict[str, Any]:
    """Trains one (row, bits, seed); returns its record."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model, encoder, layer = build(row, bits)
    x_train = split.x_train / MAX_GREY_LEVEL
    x_val, x_test = split.x_val / MAX_GREY_LEVEL, split.x_test / MAX_GREY_LEVEL
    started = time.perf_counter()
    model.fit(x_train, x_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, shuffle=True)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {
        "row": row.label,
        "bits": bits,
        "seed": seed,
        "train_seconds": seconds,
        "validation_mse": _mse(model, x_val),
        "test_mse": _mse(model, x_test),
        "relaxed_minus_hard_mse": None,
        "saturated_share": None,
        "step": None,
    }
    if layer is not None:
        latents = encoder.predict(x_test, verbose=0, batch_size=256)
        decoder = model.get_layer("decoder")
        hard = layer(latents, training=False)
        relaxed = layer.relaxed(latents)
        mse = [float(np.mean((decoder(c).numpy() - x_test) ** 2)) for c in (relaxed, hard)]
        record["relaxed_minus_hard_mse"] = mse[0] - mse[1]
        spec = layer.grid_spec()
        codes = np.asarray(hard)
        record["saturated_share"] = float(np.mean((codes <= spec["min"]) | (codes >= spec["max"])))
        record["step"] = float(spec["step"])
    return record


def run(
    rows: Sequence[Row], bits: Sequence[int], seeds: Sequence[int], epochs: int, log: Any
) -> list[dict[str, Any]]:
    """Every (bits, row, seed), in that order."""
    split = load_split(validation_share=VALIDATION_SHARE)
    records = []
    floats = sum(row.method is None for row in rows)
    total = (len(rows) - floats) * len(bits) * len(seeds) + floats * len(seeds)
    for b in bits:
        for row in rows:
            if row.method is None and b != bits[0]:
                continue  # the float reference does not depend on bits
            for seed in seeds:
                record = run_one(row, b, seed, epochs, split)
                records.append(record)
                print(
                    f"[{len(records)}/{total}] {b} bits {row.label} seed={seed}: "
                    f"val {record['validation_mse']:.4f} test {record['test_mse']:.4f} "
                    f"({record['train_seconds']:.1f} s)",
                    file=log,
                    flush=True,
                )
    return records


def _select(
    records: Sequence[dict[str, Any]], label: str, bits: int | None, key: str
) -> np.ndarray:
    return np.asarray(
        [
            r[key]
            for r in records
            if r["row"] == label and (bits is None or r["bits"] == bits) and r[key] is not None
        ],
        dtype=np.float64,
    )


def _cell(data: np.ndarray, digits: int = 4, signed: bool = False) -> str:
    if not data.size:
        return "—"
    std = data.std(ddof=1) if data.size > 1 else 0.0
    return f"{data.mean():{'+' if signed else ''}.{digits}f} ± {std:.{digits}f}"


def choose(records: Sequence[dict[str, Any]], bits: int) -> tuple[str, float, float] | None:
    """The quantizer row with the lowest mean validation MSE at ``bits``.

    Returns:
        ``(label, validation mean, held-out mean)``; the held-out value is
        only reported, never compared.
    """
    candidates = []
    for row in {r["row"] for r in records if r["bits"] == bits}:
        if row == ROWS[0].label:
            continue
        val = _select(records, row, bits, "validation_mse")
        candidates.append(
            (row, float(val.mean()), float(_select(records, row, bits, "test_mse").mean()))
        )
    return min(candidates, key=lambda c: c[1]) if candidates else None


def markdown(
    records: Sequence[dict[str, Any]], epochs: int, seeds: Sequence[int], wall_seconds: float
) -> str:
    """The report."""
    import tensorflow as tf

    split = load_split(validation_share=VALIDATION_SHARE)
    bits_seen = sorted({r["bits"] for r in records})
    labels = [row.label for row in ROWS if any(r["row"] == row.label for r in records)]
    lines = [
        "# Rounding to a grid: a quantized autoencoder at 2, 3 and 4 bits",
        "",
        f"Generated by `model/quantized_benchmark.py` ({wall_seconds / 60:.1f} min of training "
        "on 2 shared CPU cores). Reproduce, or re-render from the committed records:",
        "",
        "```bash",
        REPRODUCE_COMMAND,
        "python -m model.quantized_benchmark --out docs/ "
        "--from-records docs/quantized-benchmark-records.json",
        "```",
        "",
        f"The digits' pixels (scaled to [0, 1]) → dense {HIDDEN} → {LATENTS} linear latents → "
        f"quantizer → dense {HIDDEN} → 64 sigmoid pixels, pixel MSE through the quantizer, "
        f"{epochs} epochs of batch {BATCH_SIZE}, Adam {LEARNING_RATE:g}, seeds "
        f"{', '.join(map(str, seeds))}. Codes are signed `bits`-bit integers "
        f"(`-2^(b-1)..2^(b-1)-1`); the fixed-grid rows use step `{RANGE:g} / 2^bits` "
        f"(`DiffRound(method, step=..., bits=b, signed=True)`), `lsq` learns its step "
        "(`LearnedStepRound(bits=b, signed=True)`, LSQ's initialisation and gradient scale). "
        f"Rows: {len(split.y_train)} training, {len(split.y_val)} validation (taken from the "
        f"training rows), {len(split.y_test)} held out. **The best quantizer per bit width is "
        "chosen on the validation MSE; the held-out MSE is reported only.** Mean ± sample "
        "standard deviation over the seeds.",
        "",
        "- **held-out MSE (hard)**: reconstruction error with exact rounding on the grid "
        "(what an exported model computes).",
        "- **relaxed − hard**: the same with the quantizer's deterministic relaxed form "
        "(`layer.relaxed`) minus hard: how far training's view is from serving's.",
        "- **saturated**: share of held-out latent codes at the ends of the code range.",
        "",
    ]
    float_val = _select(records, ROWS[0].label, None, "validation_mse")
    float_test = _select(records, ROWS[0].label, None, "test_mse")
    for b in bits_seen:
        lines += [
            f"## {b} bits ({2**b} levels per latent)",
            "",
            "| quantizer | validation MSE | held-out MSE (hard) | relaxed − hard | saturated | "
            "final step | train s |",
            "|---|---|---|---|---|---|---|",
        ]
        for label in labels:
            if label == ROWS[0].label:
                val, test = float_val, float_test
                rest = ["—", "—", "—"]
                seconds = _select(records, label, None, "train_seconds")
            else:
                val = _select(records, label, b, "validation_mse")
                test = _select(records, label, b, "test_mse")
                rest = [
                    _cell(_select(records, label, b, "relaxed_minus_hard_mse"), signed=True),
                    _cell(100 * _select(records, label, b, "saturated_share"), 1) + " %",
                    _cell(_select(records, label, b, "step"), 3),
                ]
                seconds = _select(records, label, b, "train_seconds")
            time_cell = f"{seconds.mean():.1f}" if seconds.size else "—"
            lines.append(
                f"| `{label}` | {_cell(val)} | {_cell(test)} | "
                + " | ".join(rest)
                + f" | {time_cell} |"
            )
        chosen = choose(records, b)
        if chosen is not None:
            lines += [
                "",
                f"Chosen on validation at {b} bits: **`{chosen[0]}`** (validation "
                f"{chosen[1]:.4f}; held-out {chosen[2]:.4f}).",
            ]
        lines.append("")
    lines += [
        "<details><summary>every run</summary>",
        "",
        "| bits | quantizer | seed | validation MSE | held-out MSE | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['bits']} | {r['row']} | {r['seed']} | {r['validation_mse']:.4f} | "
            f"{r['test_mse']:.4f} | {r['train_seconds']:.1f} |"
        )
    lines += [
        "",
        "</details>",
        "",
        f"Environment: TensorFlow {tf.__version__}, Keras {keras.__version__}, diffround "
        f"{diffround.__version__}, {os.cpu_count()} CPU cores ({platform.machine()}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs (or re-renders) the grid benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m model.quantized_benchmark",
        description="Quantized autoencoder at 2, 3 and 4 bits, every grid method.",
    )
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    parser.add_argument("--records", type=Path, default=None, help="save the records here")
    parser.add_argument("--from-records", type=Path, default=None, help="no training")
    args = parser.parse_args(argv)
    if args.from_records is not None:
        saved = json.loads(args.from_records.read_text())
    else:
        started = time.perf_counter()
        records = run(ROWS, args.bits, args.seeds, args.epochs, sys.stderr)
        saved = {
            "epochs": args.epochs,
            "seeds": args.seeds,
            "wall_seconds": time.perf_counter() - started,
            "records": records,
        }
        if args.records is not None:
            args.records.write_text(json.dumps(saved, indent=1) + "\n")
    text = markdown(saved["records"], saved["epochs"], saved["seeds"], saved["wall_seconds"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MARKDOWN_NAME).write_text(text)
    print(args.out / MARKDOWN_NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
