"""The probes that prove a runtime equal: generated from the specs, varied, and enough to catch
a TFLite reduction summing in another order (which tiled copies of one row did not)."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import make_settings, save_serving_modules, serving, wait_for_model

from app.predictor import ModelCallError, TensorSpec
from app.probes import MIN_ROWS, OPEN_WIDTHS, PROBE_VALUES, ROWS, answered, random_probes


def _spec(name: str, dtype: str, shape: tuple[int, ...] | None) -> TensorSpec:
    return TensorSpec(name, np.dtype(dtype), shape)


def test_random_probes_fill_the_declared_shapes_with_distinct_rows_in_two_ranges():
    specs = {
        "feat": _spec("feat", "float32", (-1, 3, 2)),
        "ids": _spec("ids", "int64", (-1,)),
        "flags": _spec("flags", "bool", (-1, 2)),
        "tiny": _spec("tiny", "uint8", (-1,)),
    }
    probes = random_probes(specs, bound=1e6)
    assert len(probes) == 2  # nothing open: one width, a wide and a small range
    wide, small = probes
    assert wide["feat"].shape == (ROWS, 3, 2) and wide["feat"].dtype == np.float32
    assert wide["ids"].shape == (ROWS,) and wide["flags"].dtype == np.bool_
    assert len({row.tobytes() for row in wide["feat"]}) == ROWS  # no row repeated
    assert np.all(np.abs(wide["ids"]) <= 100) and np.ptp(wide["ids"]) > 50
    assert wide["tiny"].min() >= 0 and wide["tiny"].max() <= 200
    assert set(np.unique(small["ids"])) <= {0, 1} and 0.0 <= small["feat"].min() <= 1.0
    # Magnitudes from 1e-3 to 1e3, and every fourth row on half-integers.
    peaks = np.abs(wide["feat"]).reshape(ROWS, -1).max(axis=1)
    assert peaks.min() < 0.05 and peaks.max() > 50
    snapped = wide["feat"][3::4]
    np.testing.assert_array_equal(snapped * 2, np.round(snapped * 2))
    assert np.any(snapped % 1 == 0.5)
    # The same at every load.
    again = random_probes(specs, bound=1e6)
    for probe, same in zip(probes, again, strict=True):
        for name in specs:
            np.testing.assert_array_equal(probe[name], same[name])


def test_open_dimensions_are_tried_at_several_widths_within_the_value_budget():
    specs = {"m": _spec("m", "float64", (-1, -1)), "v": _spec("v", "float16", (-1, -1, 4))}
    probes = random_probes(specs, bound=1e6)
    widths = sorted({probe["m"].shape[1] for probe in probes})
    assert widths == list(OPEN_WIDTHS)
    for probe in probes:
        assert probe["v"].shape[1] == probe["m"].shape[1]  # open dims share a width
        assert probe["v"].dtype == np.float16 and np.isfinite(probe["v"]).all()
    # Large rows: fewer of them, never under MIN_ROWS; no wider open widths past the budget.
    big = random_probes({"image": _spec("image", "float32", (-1, 512, 512, 3))}, bound=1e6)
    assert [p["image"].shape[0] for p in big] == [MIN_ROWS, MIN_ROWS]
    mid = random_probes({"image": _spec("image", "float32", (-1, 64, 64, 3))}, bound=1e6)
    assert mid[0]["image"].shape[0] == PROBE_VALUES // (64 * 64 * 3)
    wide_open = random_probes({"m": _spec("m", "float32", (-1, -1, 8192))}, bound=1e6)
    assert sorted({p["m"].shape[1] for p in wide_open}) == [1]


def test_no_probes_for_unknown_ranks_or_complex_and_bounds_are_kept():
    assert random_probes({"t": _spec("t", "float32", None)}, bound=1e6) == []
    assert random_probes({"c": _spec("c", "complex64", (-1, 2))}, bound=1e6) == []
    bounded = random_probes({"x": _spec("x", "float32", (-1, 8))}, bound=0.5)
    assert all(np.abs(p["x"]).max() <= 0.5 for p in bounded)
    scalar = random_probes({"s": _spec("s", "int32", ())}, bound=1e6)
    assert [p["s"].shape for p in scalar] == [(), ()]
    strings = random_probes({"text": _spec("text", "object", (-1,))}, bound=1e6)
    assert all(isinstance(v, bytes) and v.isdigit() for v in strings[0]["text"])


def test_answered_keeps_only_what_the_reference_answers():
    def reference(inputs):
        if inputs["ids"].max() > 1:
            raise ModelCallError("index out of range")
        return {"y": inputs["ids"]}

    probes = random_probes({"ids": _spec("ids", "int32", (-1,))}, bound=1e6)
    kept = answered(reference, probes)
    assert len(kept) == 1 and kept[0]["ids"].max() <= 1


class _SumOfSix(tf.Module):
    """The outside check's model: a 6-value reduction TFLite sums in another order."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3, 2], tf.float32, name="feat"),
            tf.TensorSpec([None], tf.int64, name="ids"),
        ]
    )
    def serve(self, feat, ids):
        return {
            "score": tf.reduce_sum(feat, axis=[1, 2]) + tf.cast(ids, tf.float32),
            "count": tf.cast(ids * 2, tf.int32),
        }


class _OpenWidth(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="m")])
    def serve(self, m):
        return {"rowsum": tf.reduce_sum(m, axis=1), "neg": -m}


@pytest.fixture(scope="module")
def reductions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_serving_modules(
        tmp_path_factory.mktemp("reductions"),
        {"sum-of-six": _SumOfSix(), "open-width": _OpenWidth()},
    )


@pytest.mark.parametrize("runtime", ["auto", "graph"])
def test_served_answers_equal_the_savedmodel_on_data_the_probes_never_saw(reductions, run, runtime):
    rng = np.random.default_rng(123)
    feat = np.round(rng.normal(size=(64, 3, 2)), 1).astype(np.float32)  # 0.1-steps: inexact sums
    ids = rng.integers(-5, 5, 64)
    wide = (rng.normal(size=(64, 64)) * 10).astype(np.float32)
    direct = {
        name: tf.saved_model.load(str(reductions / name / "1")).signatures["serving_default"]
        for name in ("sum-of-six", "open-width")
    }
    want_six = direct["sum-of-six"](feat=tf.constant(feat), ids=tf.constant(ids))
    want_open = direct["open-width"](m=tf.constant(wide))

    async def go():
        settings = make_settings(reductions, default_model="sum-of-six", runtime=runtime)
        async with serving(settings) as client:
            await wait_for_model(client, "open-width")
            await wait_for_model(client, "sum-of-six")
            six = await client.post(
                "/predict",
                json={
                    "model": "sum-of-six",
                    "inputs": {"feat": feat.tolist(), "ids": ids.tolist()},
                },
            )
            open_width = await client.post(
                "/predict", json={"model": "open-width", "inputs": wide.tolist()}
            )
            models = (await client.get("/models")).json()
            return six, open_width, models

    six, open_width, models = run(go())
    assert six.status_code == 200 and open_width.status_code == 200, (six.text, open_width.text)
    got = np.asarray(six.json()["outputs"]["score"], np.float32)
    assert got.tobytes() == want_six["score"].numpy().tobytes()
    got = np.asarray(open_width.json()["outputs"]["rowsum"], np.float32)
    assert got.tobytes() == want_open["rowsum"].numpy().tobytes()
    runtimes = {m["name"]: m["runtimes"]["serving_default"]["runtime"] for m in models["models"]}
    assert set(runtimes) == {"sum-of-six", "open-width"}
