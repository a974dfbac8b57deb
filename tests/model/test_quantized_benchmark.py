"""The grid benchmark on a tiny budget: records, choice on validation, re-render."""

import json

from model import quantized_benchmark as qb


def test_tiny_run_records_and_rerenders_without_training(tmp_path):
    rows = [row for row in qb.ROWS if row.label in ("lsq", "stochastic")]
    records = qb.run(rows, bits=[2], seeds=[0], epochs=1, log=None)
    assert [r["row"] for r in records] == ["lsq", "stochastic"]
    for r in records:
        assert r["validation_mse"] > 0 and r["test_mse"] > 0
        assert 0.0 <= r["saturated_share"] <= 1.0
    stochastic = records[1]
    assert stochastic["step"] == qb.RANGE / 4
    saved = tmp_path / "records.json"
    saved.write_text(json.dumps({"epochs": 1, "seeds": [0], "wall_seconds": 1.0,
                                 "records": records}))  # fmt: skip
    assert qb.main(["--out", str(tmp_path), "--from-records", str(saved)]) == 0
    text = (tmp_path / qb.MARKDOWN_NAME).read_text()
    assert "## 2 bits" in text and "Chosen on validation at 2 bits" in text
    assert "| `lsq` |" in text and "| `stochastic` |" in text


def test_choice_uses_validation_not_held_out():
    records = [
        {"row": "lsq", "bits": 3, "validation_mse": 0.02, "test_mse": 0.05},
        {"row": "ste", "bits": 3, "validation_mse": 0.03, "test_mse": 0.01},
    ]
    assert qb.choose(records, 3) == ("lsq", 0.02, 0.05)
