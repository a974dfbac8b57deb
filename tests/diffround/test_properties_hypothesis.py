"""Property tests (hypothesis): exact hard values, soft_round inverse, finiteness everywhere."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import diffround

FLOATS = arrays(
    np.float32,
    st.integers(1, 32),
    elements=st.floats(-1e4, 1e4, width=32, allow_nan=False),
)
SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(x=FLOATS, method=st.sampled_from(["ste", "ste_custom", "clipped_ste", "approx_sign"]))
def test_hard_forward_methods_equal_round_exactly(x, method):
    np.testing.assert_array_equal(diffround.surrogate(x, method).numpy(), np.round(x))
    np.testing.assert_array_equal(diffround.DiffRound(method)(x).numpy(), np.round(x))


@SETTINGS
@given(
    x=arrays(np.float32, 16, elements=st.floats(-50, 50, width=32)),
    alpha=st.floats(0.05, 8.0),
)
def test_soft_round_inverse_recovers_x_away_from_half_integers(x, alpha):
    x = x[np.abs(x - np.floor(x) - 0.5) > 0.02]
    back = diffround.soft_round_inverse(diffround.soft_round(x, alpha), alpha).numpy()
    np.testing.assert_allclose(back, x, atol=2e-3)


PARAMS = {
    "sine": st.fixed_dictionaries({"compose": st.integers(1, 3)}),
    "clamp": st.fixed_dictionaries({"threshold": st.floats(-1, 1), "slope": st.floats(1e-3, 1e5)}),
    "fourier": st.fixed_dictionaries({"terms": st.integers(1, 64)}),
    "sigmoid": st.fixed_dictionaries({"slope": st.floats(1e-3, 1e5), "center": st.floats(-1, 1)}),
    "soft_round": st.fixed_dictionaries({"alpha": st.floats(1e-6, 1e6)}),
    "binary_concrete": st.fixed_dictionaries({"temperature": st.floats(1e-4, 1e2)}),
    "clipped_ste": st.fixed_dictionaries({"clip": st.floats(1e-4, 10), "center": st.floats(-2, 2)}),
}


@SETTINGS
@given(data=st.data(), x=FLOATS, method=st.sampled_from(diffround.METHODS))
def test_values_and_gradients_are_finite_for_any_valid_parameters(data, x, method):
    params = data.draw(PARAMS.get(method, st.just({})))
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diffround.surrogate(x, method, **params)
    assert np.all(np.isfinite(y.numpy()))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))
