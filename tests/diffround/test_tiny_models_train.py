"""A tiny model with each method trains: gradients reach the weights before the layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround

# Dead by design: the seed answer's clamp (threshold 0.499, slope 1e4) has a
# nonzero gradient only on (0.499, 0.4991), which no pre-round value hits.
DEAD_BY_DESIGN = [("clamp", {"threshold": 0.499, "slope": 1e4})]

LIVE = [(method, {}) for method in diffround.METHODS] + [
    ("sigmoid", {"slope": 1000.0}),
    ("fourier", {"terms": 5}),
    ("soft_round", {"alpha": 1e3}),
]

X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
# Target bits: the signs of fixed random projections of the inputs.
Y = (X @ np.random.default_rng(1).normal(size=(8, 3)) > 0).astype(np.float32)


def _model(method, params):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    probabilities = keras.layers.Dense(3, activation="sigmoid", name="dense")(inputs)
    seeded = {"seed": 0} if method in ("noise", "binary_concrete") else {}
    outputs = diffround.DiffRound(method, **params, **seeded)(probabilities)
    return keras.Model(inputs, outputs)


def _weight_gradients(model):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(X, training=True) - Y))
    return tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("case", LIVE, ids=lambda c: c[0] + str(c[1] or ""))
def test_gradients_reach_weights_and_fit_changes_them(case):
    method, params = case
    model = _model(method, params)
    grads = _weight_gradients(model)
    assert all(g is not None for g in grads)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.any(g.numpy() != 0) for g in grads)

    before = [w.numpy().copy() for w in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    history = model.fit(X, Y, epochs=3, batch_size=16, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert any(
        not np.array_equal(b, w.numpy())
        for b, w in zip(before, model.trainable_variables, strict=True)
    )


@pytest.mark.parametrize("case", DEAD_BY_DESIGN, ids=lambda c: c[0] + str(c[1]))
def test_dead_by_design_methods_give_all_zero_gradients(case):
    method, params = case
    model = _model(method, params)
    grads = _weight_gradients(model)
    assert all(np.all(g.numpy() == 0) for g in grads)


def test_plain_tf_round_gives_no_gradient():
    """The symptom the library exists for."""
    model = _model("ste", {})
    dense = model.get_layer("dense")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tf.round(dense(X)) - Y))
    assert all(g is None for g in tape.gradient(loss, dense.trainable_variables))
