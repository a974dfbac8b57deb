"""The method benchmark, on a tiny budget: rows, records, table and plot."""

import numpy as np
import pytest

import diffround
from model import benchmark, benchmark_report, tasks
from model.data import VALIDATION_SHARE, load_split


def test_variants_cover_every_method_the_reference_and_the_seed_constants():
    rows = benchmark.variants()
    labels = [row.label for row in rows]
    assert len(set(labels)) == len(labels)
    assert {row.method for row in rows if row.kind == "method"} == set(benchmark.ZERO_ONE_METHODS)
    assert set(benchmark.ZERO_ONE_METHODS) <= set(diffround.ROUNDING_METHODS)
    assert "upper reference" not in rows[0].note
    assert rows[0].method is None and rows[0].kind == "reference"
    seed_rows = {row.method: row.params for row in rows if row.kind == "seed"}
    assert seed_rows["clamp"] == {"threshold": 0.499, "slope": 1e4}
    assert seed_rows["sigmoid"]["slope"] == 1000.0
    assert seed_rows["fourier"]["terms"] % 2 == 1


def test_gradient_shares_expose_the_seed_answers_failure_modes():
    # Pre-round probabilities spread over [0, 1], like a trained sigmoid layer's.
    pre_round = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    clamp = benchmark.gradient_shares(pre_round, "clamp", {"threshold": 0.499, "slope": 1e4})
    assert clamp["dead_gradient_share"] > 0.99
    sigmoid = benchmark.gradient_shares(pre_round, "sigmoid", {"slope": 1000.0, "center": 0.5})
    assert sigmoid["dead_gradient_share"] > 0.9 and sigmoid["exploding_gradient_share"] > 0
    odd = benchmark.gradient_shares(pre_round, "fourier", {"terms": 5})
    even = benchmark.gradient_shares(pre_round, "fourier", {"terms": 4})
    assert odd["negative_gradient_share"] > 0.1
    assert odd["negative_gradient_share"] > even["negative_gradient_share"]
    ste = benchmark.gradient_shares(pre_round, "ste", {})
    assert ste["dead_gradient_share"] == ste["negative_gradient_share"] == 0.0


def test_tiny_benchmark_writes_table_and_plot(tmp_path):
    rows = [row for row in benchmark.variants() if row.label in ("float (no rounding)", "ste")]
    records = benchmark.run(rows, ["digit-bits", "digit-hash"], seeds=[0, 1], epochs=1)
    assert len(records) == 2 * 2 * 2
    assert all("validation_exact_match" in r for r in records if r["task"] == "digit-bits")
    assert all("validation_reconstruction_mse" in r for r in records if r["task"] == "digit-hash")
    assert all(r["initial_dead_gradient_share"] == 0.0 for r in records if r["variant"] == "ste")
    ste_bits = [r for r in records if r["variant"] == "ste" and r["task"] == "digit-bits"]
    assert all(0.0 <= r["exact_match"] <= 1.0 for r in ste_bits)
    # STE's relaxed forward is the exact round: no train/serve mismatch.
    assert all(r["train_serve_mismatch"] == pytest.approx(0.0, abs=1e-6) for r in ste_bits)
    md_path, png_path = benchmark_report.write(
        records, rows, ["digit-bits", "digit-hash"], [0, 1], 1, 12.0, tmp_path
    )
    text = md_path.read_text()
    assert benchmark.REPRODUCE_COMMAND in text
    assert text.count("\n## digit-") == 2
    table_rows = [line for line in text.splitlines() if line.startswith("| `ste` |")]
    assert len(table_rows) == 2
    exact = np.array([r["exact_match"] for r in ste_bits])
    expected = f"{100 * exact.mean():.1f} ± {100 * exact.std(ddof=1):.1f} %"
    assert expected in table_rows[0]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_saves_records_and_rerenders_the_same_tables_without_training(tmp_path):
    records = tmp_path / "records.json"
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--only", "ste", "--tasks", "digit-bits", "--seeds", "0"]
    assert (
        benchmark.main(["--out", str(first), *common, "--epochs", "1", "--records", str(records)])
        == 0
    )
    assert benchmark.main(["--out", str(second), "--from-records", str(records)]) == 0

    def tables(path):
        return [
            line
            for line in (path / "method-benchmark.md").read_text().splitlines()
            if line.startswith("|")
        ]

    assert tables(first) == tables(second)
    assert any(line.startswith("| `ste` |") for line in tables(second))


def test_digit_levels_is_benchmarked_with_its_own_columns(tmp_path):
    rows = [row for row in benchmark.variants() if row.label == "ste"]
    records = benchmark.run(rows, ["digit-levels"], seeds=[0], epochs=1)
    (record,) = records
    assert 0.0 <= record["exact_match"] <= record["level_accuracy"] <= 1.0
    assert record["train_serve_mismatch"] == pytest.approx(0.0, abs=1e-6)
    md_path, _ = benchmark_report.write(records, rows, ["digit-levels"], [0], 1, 3.0, tmp_path)
    text = md_path.read_text()
    assert "## digit-levels" in text and "digit accuracy" in text
    (line,) = [line for line in text.splitlines() if line.startswith("| `ste` |")]
    assert f"{100 * record['level_accuracy']:.1f}" in line


def test_best_row_is_chosen_on_validation_and_held_out_is_only_reported():
    rows = [row for row in benchmark.variants() if row.label in ("sine", "ste")]
    records = [
        # sine: better held-out, worse validation; ste: the reverse.
        {"task": "digit-bits", "variant": "sine", "exact_match": 0.99,
         "validation_exact_match": 0.80},
        {"task": "digit-bits", "variant": "ste", "exact_match": 0.90,
         "validation_exact_match": 0.85},
    ]  # fmt: skip
    row, validation, held_out = benchmark_report.best_row(records, rows, "digit-bits")
    assert (row.label, validation, held_out) == ("ste", 0.85, 0.90)


def test_validation_rows_come_from_the_training_rows_and_held_out_is_unchanged():
    plain = load_split()
    split = load_split(validation_share=VALIDATION_SHARE)
    np.testing.assert_array_equal(split.x_test, plain.x_test)
    assert len(split.y_train) + len(split.y_val) == len(plain.y_train)
    train_rows = {row.tobytes() for row in split.x_train}
    assert not any(row.tobytes() in train_rows for row in split.x_val if row.any())
    np.testing.assert_array_equal(split.validation().x_test, split.x_val)


def test_float_reference_of_digit_bits_trains_with_cross_entropy():
    reference = tasks.build(tasks.DIGIT_BITS, None)
    assert reference.train_model.loss == "binary_crossentropy"
    rounded = tasks.build(tasks.DIGIT_BITS, diffround.DiffRound("ste"))
    assert rounded.train_model.loss == "mse"
    assert tasks.build(tasks.DIGIT_HASH, None).train_model.loss == "mse"
