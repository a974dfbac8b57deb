"""The defects of issue 13, one claim each (every test failed before its fix)."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround

ROOT = Path(__file__).resolve().parents[2]
X = np.random.default_rng(0).uniform(0, 1, size=(32, 4)).astype(np.float32)
Y = (X > 0.5).astype(np.float32)


def _model(method, **params):
    inputs = keras.Input((4,))
    probabilities = keras.layers.Dense(4, activation="sigmoid")(inputs)
    outputs = diffround.DiffRound(method, name="rounding", **params)(probabilities)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    return model


# Defect 1: an Annealer could drive a positive parameter to 0.
def test_annealer_rejects_a_schedule_outside_the_parameters_kind_before_training():
    model = _model("binary_concrete", seed=1)
    annealer = diffround.Annealer("temperature", 1.0, 0.0, 2)
    with pytest.raises(ValueError, match=r"Expected a positive float\. Received: temperature=0"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[annealer])
    layer = model.get_layer("rounding")
    assert layer.current_params()["temperature"] == pytest.approx(2 / 3)
    diffround.DiffRound.from_config(layer.get_config())  # still loadable
    with pytest.raises(ValueError, match="temperature=0"):
        annealer.validate([layer])  # what a command line can call before fit
    diffround.Annealer("temperature", 1.0, 0.5, 2).validate([layer])


def test_annealer_to_a_positive_end_still_trains_and_reloads(tmp_path):
    model = _model("binary_concrete", seed=1)
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[diffround.Annealer("temperature", 1, 0.1, 2)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").get_layer("rounding")
    assert loaded.current_params()["temperature"] == pytest.approx(0.1)


# Defect 2: two Annealers on one layer shared one counter.
def test_two_annealers_on_one_layer_keep_their_own_progress():
    model = _model("clamp")
    slope = diffround.Annealer("slope", 2.0, 12.0, 10)
    threshold = diffround.Annealer("threshold", 0.25, 0.45, 10)
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[slope, threshold])
    layer = model.get_layer("rounding")
    assert layer.current_params()["slope"] == pytest.approx(4.0)  # 2 + 10 * 2/10
    assert layer.current_params()["threshold"] == pytest.approx(0.29)
    assert {k: int(v.numpy()) for k, v in layer.anneal_steps.items()} == {
        "threshold": 2,
        "slope": 2,
    }


# Defect 3: soft_round_inverse's gradient at integers was 0, and NaN for large alpha.
@pytest.mark.parametrize("alpha", [0.5, 5.0, 20.0, 40.0, 80.0])
def test_soft_round_inverse_gradient_at_integers_is_sinh_alpha_over_alpha(alpha):
    y = tf.constant([-2.0, 0.0, 1.0, 3.0])
    with tf.GradientTape() as tape:
        tape.watch(y)
        x = diffround.soft_round_inverse(y, alpha)
    grad = tape.gradient(x, y).numpy()
    np.testing.assert_array_equal(x.numpy(), y.numpy())
    np.testing.assert_allclose(grad, np.sinh(alpha) / alpha, rtol=1e-3)


def test_soft_round_inverse_gradient_is_finite_for_huge_alpha_and_a_batch_stays_clean():
    y = tf.constant(np.linspace(-2, 2, 81, dtype=np.float32))
    for alpha in (100.0, 1e3, 1e4):
        with tf.GradientTape() as tape:
            tape.watch(y)
            x = diffround.soft_round_inverse(y, alpha)
        grad = tape.gradient(x, y).numpy()
        assert np.all(np.isfinite(grad)) and np.all(np.isfinite(x.numpy()))
        np.testing.assert_allclose(x.numpy()[::20], y.numpy()[::20])  # integers map to themselves


# Defect 4: a stochastic layer created before the network shifted its initial weights.
@pytest.mark.parametrize("method", ["noise", "binary_concrete", "stochastic", "universal"])
def test_stochastic_layer_does_not_shift_later_initializers(method):
    def initial_weights(m):
        keras.utils.set_random_seed(7)
        rounding = diffround.DiffRound(m)  # created first, as model.train does
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(5)(inputs)
        code = rounding(hidden)
        outputs = keras.layers.Dense(3)(code)
        return [w.numpy() for w in keras.Model(inputs, outputs).weights if w.trainable]

    for a, b in zip(initial_weights("ste"), initial_weights(method), strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_unseeded_stochastic_layers_draw_different_noise():
    keras.utils.set_random_seed(3)
    a, b = diffround.DiffRound("noise"), diffround.DiffRound("noise")
    x = tf.zeros((1, 64))
    assert not np.array_equal(a(x, training=True).numpy(), b(x, training=True).numpy())


# Defect 5: the README's first example used a loss that gives ste zero gradients.
def _first_readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


def test_readme_first_example_trains_with_every_method():
    code = _first_readme_example()
    loss = re.search(r"model\.compile\(\s*\"adam\",\s*\"(\w+)\"", code).group(1)
    for method in ("ste", "soft_round", "sine"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        probabilities = keras.layers.Dense(4, activation="sigmoid")(inputs)
        model = keras.Model(inputs, diffround.DiffRound(method)(probabilities))
        model.compile("adam", loss)
        with tf.GradientTape() as tape:
            value = model.compute_loss(x=X, y=Y, y_pred=model(X, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        assert any(np.any(g.numpy() != 0) for g in grads), (method, loss)


# Defect 7: the Fourier rationale claimed even N removes wrong-way gradients.
@pytest.mark.parametrize("terms", [1, 2, 3, 4, 5, 6])
def test_fourier_derivative_is_negative_on_n_over_2n_plus_1_of_each_interval(terms):
    x = tf.constant((np.arange(200_000) + 0.5) / 200_000, tf.float32)
    _, local = diffround.local_gradient(x, "fourier", terms=terms)
    share = float(np.mean(local.numpy() < 0))
    assert share == pytest.approx(terms / (2 * terms + 1), abs=2e-3)


def test_fourier_text_no_longer_says_even_terms_fix_the_sign():
    docstring = diffround.ops.fourier_round.__doc__
    assert "N/(2N+1)" in docstring or "terms / (2 terms + 1)" in docstring
    for path in ("README.md", "docs/library.md"):
        text = (ROOT / path).read_text()
        assert "the default is even for that reason" not in text
        assert "the\ndefault 4 is even" not in text and "the default 4 is even" not in text
