"""Grids `step * k + offset`, clipping, bit widths and codes against a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import REFERENCES, SIGN_FAMILY, STOCHASTIC, exact

import diffround

# Steps and offsets that are exact in float32, so codes land exactly on
# integers and half-integers.
GRIDS = [
    {"step": 0.25},
    {"step": 0.5, "offset": 0.125},
    {"step": 2.0, "offset": -1.0, "bits": 2},
    {"step": 0.25, "bits": 3, "signed": True},
    {"step": 0.25, "bits": 3, "signed": True, "narrow_range": True},
    {"step": 1.0, "bits": 1},
    {"step": 0.5, "min_value": -1.0, "max_value": 1.5},
    {"step": 0.5, "max_value": 1.0},
    {"step": 0.25, "offset": 0.5, "bits": 2, "return_codes": True},
]
METHODS_ON_GRIDS = [
    ("ste", {}),
    ("sine", {}),
    ("soft_round", {"alpha": 5.0}),
    ("soft_round", {"alpha": 1e3}),
    ("fourier", {"terms": 4}),
    ("approx_sign", {}),
    ("noise", {}),
    ("stochastic", {}),
    ("soft_round_noise", {"alpha": 3.0}),
]


def numpy_bounds(step=1.0, offset=0.0, min_value=None, max_value=None, bits=None, signed=False,
                 narrow_range=False, return_codes=False):  # fmt: skip
    """Code range written from the definitions (fake_quant's narrow range)."""
    if bits is not None:
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return low + (1 if narrow_range else 0), high
    low = None if min_value is None else np.ceil((min_value - offset) / step)
    high = None if max_value is None else np.floor((max_value - offset) / step)
    return low, high


def numpy_on_grid(x, method, params, grid):
    """(value, d value / d x) of `method` on `grid`, float64."""
    step, offset = grid.get("step", 1.0), grid.get("offset", 0.0)
    low, high = numpy_bounds(**grid)
    z = (x - offset) / step
    inside = np.ones_like(z, dtype=bool)
    if low is not None:
        inside &= z > low
    if high is not None:
        inside &= z < high
    zc = np.clip(z, -np.inf if low is None else low, np.inf if high is None else high)
    q, dq = REFERENCES[method](zc, **params)
    dq = np.where(inside, dq, 0.0)
    if grid.get("return_codes"):
        return q, dq / step
    return q * step + offset, dq


def points(grid):
    """Integers and half-integers of the codes, the clip ends and beyond, in value space."""
    step, offset = grid.get("step", 1.0), grid.get("offset", 0.0)
    codes = np.arange(-24, 25) / 4.0  # every quarter code in [-6, 6]
    low, high = numpy_bounds(**grid)
    extra = [c for c in (low, high) if c is not None]
    extra += [c + d for c in extra for d in (-0.5, -1e-3, 1e-3, 0.5, 3.0)]
    return ((np.concatenate([codes, extra]) * step) + offset).astype(np.float32)


def _value_and_grad(layer, x, mode):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer.relaxed(x) if mode == "relaxed" else layer(x, training=mode == "train")
    return y.numpy(), tape.gradient(y, x, unconnected_gradients="zero").numpy()


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("case", METHODS_ON_GRIDS, ids=lambda c: c[0] + str(c[1] or ""))
def test_relaxed_values_and_gradients_on_grids_match_numpy(case, grid):
    method, params = case
    layer = diffround.DiffRound(method, **params, **grid)
    x = points(grid)
    value, grad = _value_and_grad(layer, x, "relaxed")
    ref_value, ref_grad = numpy_on_grid(x.astype(np.float64), method, params, grid)
    step = grid.get("step", 1.0)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5 * max(step, 1.0))
    scale = max(1.0, float(np.max(np.abs(ref_grad))))
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_exact_inference_lies_on_the_grid_and_in_range(grid):
    layer = diffround.DiffRound("ste", **grid)
    x = points(grid)
    y = layer(x).numpy().astype(np.float64)
    low, high = numpy_bounds(**grid)
    step, offset = grid.get("step", 1.0), grid.get("offset", 0.0)
    z = np.clip((x.astype(np.float64) - offset) / step, low, high)
    codes = np.round(z)
    expected = codes if grid.get("return_codes") else codes * step + offset
    np.testing.assert_array_equal(y, expected)
    spec = layer.grid_spec()
    k = (y - spec["offset"]) / spec["step"]
    np.testing.assert_array_equal(k, np.round(k))
    if spec["min"] is not None:
        assert y.min() >= spec["min"] and spec["min"] in y
    if spec["max"] is not None:
        assert y.max() <= spec["max"] and spec["max"] in y


@pytest.mark.parametrize("method", [m for m in diffround.METHODS if m not in STOCHASTIC])
def test_default_grid_is_bit_identical_to_the_unit_grid_method(method):
    x = tf.constant(np.linspace(-3, 3, 97, dtype=np.float32))
    layer = diffround.DiffRound(method)
    np.testing.assert_array_equal(layer(x, training=True), diffround.surrogate(x, method))
    np.testing.assert_array_equal(layer(x), diffround.exact(x, method))
    assert layer.grid_spec()["step"] in (1.0, 2.0)


def test_unit_grid_spec_is_the_contracts():
    assert diffround.DiffRound("sine").grid_spec() == {
        "step": 1.0,
        "offset": 0.0,
        "min": None,
        "max": None,
    }


@pytest.mark.parametrize(
    ("method", "grid", "expected"),
    [
        ("ste_sign", {}, {"step": 2.0, "offset": -1.0, "min": -1.0, "max": 1.0}),
        ("ste_sign", {"step": 0.5}, {"step": 1.0, "offset": -0.5, "min": -0.5, "max": 0.5}),
        ("ste_heaviside", {}, {"step": 1.0, "offset": 0.0, "min": 0.0, "max": 1.0}),
        ("ste_tern", {"step": 0.1}, {"step": 0.1, "offset": -0.1, "min": -0.1, "max": 0.1}),
        ("ste", {"bits": 4, "signed": True}, {"step": 1.0, "offset": 0.0, "min": -8.0, "max": 7.0}),
        ("ste", {"bits": 8, "narrow_range": True, "step": 0.5}, {"step": 0.5, "offset": 0.0,
                                                                 "min": 0.5, "max": 127.5}),
        ("ste", {"bits": 2, "step": 0.5, "return_codes": True}, {"step": 1.0, "offset": 0.0,
                                                                "min": 0.0, "max": 3.0}),
        ("ste", {"step": 0.3, "min_value": 0.0, "max_value": 0.9}, {"step": 0.3, "offset": 0.0,
                                                                   "min": 0.0, "max": 0.9}),
    ],
)  # fmt: skip
def test_grid_spec_describes_the_outputs(method, grid, expected):
    spec = diffround.DiffRound(method, **grid).grid_spec()
    assert spec.keys() == expected.keys()
    for key, value in expected.items():
        assert spec[key] == pytest.approx(value)


@pytest.mark.parametrize("method", SIGN_FAMILY)
def test_sign_family_on_a_grid_scales_its_codes(method):
    x = np.float32([-2.0, -0.3, -0.05, 0.0, 0.04, 0.05, 0.3, 2.0])
    layer = diffround.DiffRound(method, step=0.5, offset=0.25)
    codes = exact(method, (x.astype(np.float64) - 0.25) / 0.5)
    np.testing.assert_allclose(layer(x).numpy(), codes * 0.5 + 0.25, rtol=1e-7)


def test_step_is_a_tensor_and_its_gradient_follows_the_method():
    """A tensor step: d y / d s = q(z) - z q'(z) inside, the clipped code outside."""
    x = tf.constant(np.float32([-3.0, -0.6, -0.2, 0.1, 0.35, 0.5, 0.9, 1.2, 5.0]))
    step = tf.Variable(0.5)
    for method, params in (("ste", {}), ("sine", {}), ("soft_round", {"alpha": 4.0})):
        with tf.GradientTape() as tape:
            y = diffround.quantize(x, method, "relaxed", step=step, bits=2, signed=True, **params)
        grad = tape.gradient(y, step).numpy()
        z = x.numpy().astype(np.float64) / 0.5
        inside = (z > -2) & (z < 1)
        zc = np.clip(z, -2, 1)
        q, dq = REFERENCES[method](zc, **params)
        expected = np.sum(np.where(inside, q - z * dq, q))
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(y.numpy(), q * 0.5, rtol=1e-5, atol=1e-6)


def test_grid_validation_messages():
    with pytest.raises(ValueError, match=r"Expected a positive float\. Received: step=0"):
        diffround.DiffRound("ste", step=0)
    with pytest.raises(ValueError, match="either `bits` or `min_value`"):
        diffround.DiffRound("ste", bits=4, max_value=3.0)
    with pytest.raises(ValueError, match="Received: bits=0"):
        diffround.DiffRound("ste", bits=0)
    with pytest.raises(ValueError, match="fewer than two codes"):
        diffround.DiffRound("ste", bits=1, signed=True, narrow_range=True)
    with pytest.raises(ValueError, match="no grid point"):
        diffround.DiffRound("ste", step=1.0, min_value=0.2, max_value=0.8)
    with pytest.raises(ValueError, match="`signed` and `narrow_range` apply to `bits`"):
        diffround.DiffRound("ste", signed=True)
    with pytest.raises(ValueError, match="bounded codes"):
        diffround.DiffRound("ste_sign", bits=2)
    with pytest.raises(ValueError, match="Expected one of train, relaxed, exact"):
        diffround.quantize([0.3], "ste", mode="eval")


def test_bit_range_matches_fake_quant():
    """fake_quant_with_min_max_args on [0, 2^b - 1] (scale 1) gives the same codes."""
    for bits in (2, 3, 4, 8):
        low, high = diffround.bit_range(bits)
        codes = np.arange(low - 2, high + 3, 0.25, dtype=np.float32)
        fq = tf.quantization.fake_quant_with_min_max_args(
            codes, min=float(low), max=float(high), num_bits=bits
        ).numpy()
        layer = diffround.DiffRound("ste", bits=bits)
        # fake_quant rounds half away from zero, diffround half to even.
        away = np.abs(codes - np.floor(codes) - 0.5) > 0
        np.testing.assert_array_equal(layer(codes).numpy()[away], fq[away])


def test_grid_keys_serialize_and_old_configs_load():
    layer = diffround.DiffRound("soft_round", alpha=3.0, step=0.25, offset=0.5, bits=3,
                                signed=True, return_codes=True)  # fmt: skip
    config = layer.get_config()
    for key in ("step", "offset", "min_value", "max_value", "bits", "signed", "narrow_range",
                "return_codes"):  # fmt: skip
        assert key in config
    clone = diffround.DiffRound.from_config(config)
    assert clone.get_config() == config and clone.grid == layer.grid
    old = {"name": "r", "trainable": True, "dtype": "float32", "method": "soft_round",
           "seed": None, "alpha": 2.0}  # fmt: skip
    restored = diffround.DiffRound.from_config(old)
    assert restored.grid.is_unit and restored.current_params() == {"alpha": 2.0}
    assert diffround.get(config).params == {"alpha": 3.0}


def test_grid_layer_keras_file_round_trip(tmp_path):
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(5, name="dense")(inputs)
    outputs = diffround.DiffRound("sine", step=0.25, bits=4, signed=True, name="q")(hidden)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("q").grid_spec() == model.get_layer("q").grid_spec()
