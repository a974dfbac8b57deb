"""`diagnostics` and `FlipRatio` against NumPy computations."""

import keras
import numpy as np
import pytest
from surrogate_reference import REFERENCES, as_float32_params

import diffround
from diffround.diagnostics import DEAD_BELOW, EXPLODING_ABOVE

X = np.random.default_rng(3).uniform(0, 1, size=2000).astype(np.float32)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("soft_round", {"alpha": 3.0}),
        ("sigmoid", {"slope": 1000.0}),
        ("clamp", {"threshold": 0.499, "slope": 1e4}),
        ("fourier", {"terms": 5}),
        ("sine", {}),
        ("noise", {}),
    ],
)
def test_diagnostics_match_numpy(method, params):
    result = diffround.diagnostics(X, method, **params)
    value, grad = REFERENCES[method](X.astype(np.float64), **as_float32_params(params))
    hard = np.round(X)
    assert result["surrogate_gap"] == pytest.approx(np.mean(np.abs(value - hard)), abs=1e-5)
    # The shares describe float32 arithmetic (what training sees: a sigmoid's
    # 1 - s underflows to 0 where float64 still has 1e-8), so count them on a
    # float32 evaluation of the reference. Elements within float error of a
    # threshold may fall either way: allow a few.
    _, grad32 = REFERENCES[method](X, **as_float32_params(params))
    tol = 5 / X.size
    dead = np.mean(np.abs(grad32) < DEAD_BELOW)
    exploding = np.mean(np.abs(grad32) > EXPLODING_ABOVE)
    assert result["dead_gradient_share"] == pytest.approx(dead, abs=tol)
    assert result["exploding_gradient_share"] == pytest.approx(exploding, abs=tol)
    assert result["flip_ratio"] == pytest.approx(np.mean(np.round(value) != hard), abs=tol)
    assert result["max_abs_local_grad"] == pytest.approx(np.max(np.abs(grad)), rel=1e-3)


def test_seed_constants_are_diagnosed_dead_or_exploding():
    clamp = diffround.diagnostics(X, "clamp", threshold=0.499, slope=1e4)
    assert clamp["dead_gradient_share"] > 0.99
    sigmoid = diffround.diagnostics(X, "sigmoid", slope=1000.0)
    assert sigmoid["dead_gradient_share"] > 0.9
    assert sigmoid["exploding_gradient_share"] > 0.0
    default = diffround.diagnostics(X, "clamp")
    assert default["dead_gradient_share"] == pytest.approx(0.5, abs=0.05)
    assert diffround.diagnostics(X, "ste")["dead_gradient_share"] == 0.0
    assert diffround.diagnostics(X, "ste")["surrogate_gap"] == 0.0


def test_diagnostics_accept_any_shape():
    flat = diffround.diagnostics(X, "fourier", terms=5)
    assert diffround.diagnostics(X.reshape(40, 25, 2), "fourier", terms=5) == pytest.approx(flat)


def test_diagnostics_thresholds_are_arguments():
    loose = diffround.diagnostics(X, "soft_round", alpha=5.0, exploding_above=1.0)
    strict = diffround.diagnostics(X, "soft_round", alpha=5.0)
    assert loose["exploding_gradient_share"] > strict["exploding_gradient_share"] == 0.0
    assert diffround.diagnostics(X, diffround.get("sine"))["surrogate_gap"] > 0


def test_flip_ratio_metric_counts_differing_hard_values():
    metric = diffround.FlipRatio()
    y_true = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=np.float32)
    y_pred = np.array([[0.2, 0.4, 0.9, 0.51], [0.7, 0.6, 0.1, 0.3]], dtype=np.float32)
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(2 / 8)
    metric.update_state(y_true, 1 - y_true)
    assert float(metric.result()) == pytest.approx((2 / 4 + 0 / 4 + 4 / 4 + 4 / 4) / 4)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    restored = diffround.FlipRatio.from_config(metric.get_config())
    assert restored.name == "flip_ratio"


def test_flip_ratio_in_fit_reports_bit_errors_of_the_surrogate_output():
    inputs = keras.Input((4,))
    probabilities = keras.layers.Dense(4, activation="sigmoid")(inputs)
    model = keras.Model(inputs, diffround.DiffRound("soft_round", alpha=2.0)(probabilities))
    model.compile("sgd", "mse", metrics=[diffround.FlipRatio()])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.round(np.random.default_rng(1).uniform(size=(64, 4))).astype(np.float32)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = np.mean(model.predict(x, verbose=0) != y)
    assert logs["flip_ratio"] == pytest.approx(expected, abs=1e-6)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert 0.0 <= history.history["flip_ratio"][0] <= 1.0
