"""Every method's value and GradientTape gradient match the NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf
from surrogate_reference import CASES, REFERENCES, STOCHASTIC, as_float32_params, grid

import diffround


def _case_id(case):
    method, params = case
    return method + "".join(f"-{k}={v}" for k, v in params.items())


def _value_and_grad(method, params):
    x = tf.constant(grid())
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.relaxed(x, method, **params)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_value_and_gradient_match_numpy_reference(case):
    method, params = case
    value, grad = _value_and_grad(method, params)
    ref_value, ref_grad = REFERENCES[method](grid().astype(np.float64), **as_float32_params(params))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    # Float32 evaluation of steep functions: tolerance relative to the largest slope.
    scale = max(1.0, float(np.max(np.abs(ref_grad))))
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in STOCHASTIC])
def test_deterministic_surrogate_equals_relaxed(case):
    method, params = case
    x = tf.constant(grid())
    np.testing.assert_array_equal(
        diffround.surrogate(x, method, **params).numpy(),
        diffround.relaxed(x, method, **params).numpy(),
    )


@pytest.mark.parametrize("method", ["ste", "ste_custom", "clipped_ste", "approx_sign"])
def test_straight_through_values_are_exactly_round_half_to_even(method):
    x = np.concatenate([grid(), np.float32([2.5, -2.5, 3.5, 1e6 + 0.5, -7.49])]).astype(np.float32)
    y = diffround.surrogate(tf.constant(x), method).numpy()
    np.testing.assert_array_equal(y, np.round(x))


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="soft_round") as info:
        diffround.surrogate([0.5], "rounder")
    assert all(name in str(info.value) for name in diffround.METHODS)


def test_unknown_parameter_names_valid_ones():
    with pytest.raises(ValueError, match=r"Valid parameters: slope, center"):
        diffround.surrogate([0.5], "sigmoid", alpha=3.0)
    with pytest.raises(ValueError, match=r"Valid parameters: \(none\)"):
        diffround.surrogate([0.5], "ste", seed=1)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("soft_round", {"alpha": -1}, "Expected a positive float. Received: alpha=-1"),
        ("sigmoid", {"slope": 0.0}, "Expected a positive float. Received: slope=0.0"),
        ("fourier", {"terms": 0}, "Expected a positive int. Received: terms=0"),
        ("fourier", {"terms": 2.5}, "Expected a positive int. Received: terms=2.5"),
        ("clamp", {"threshold": float("nan")}, "Expected a finite float"),
        ("binary_concrete", {"straight_through": 1}, "Expected a bool"),
        ("clipped_ste", {"clip": "wide"}, "Expected a positive float"),
    ],
)
def test_invalid_values_raise_keras_style_message(method, params, message):
    name = next(iter(params))
    with pytest.raises(ValueError, match=f"Invalid value received for argument `{name}`"):
        diffround.surrogate([0.5], method, **params)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        diffround.surrogate([0.5], method, **params)


def test_methods_tuple_is_the_contract_list():
    assert diffround.METHODS == (
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
        "stochastic",
        "universal",
        "soft_round_noise",
        "ste_sign",
        "swish_sign",
        "ste_heaviside",
        "ste_tern",
    )
