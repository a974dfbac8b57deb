"""`signatures.row_jacobian`: per-row Jacobians, unrolled for narrow outputs, pfor otherwise."""

import numpy as np
import pytest
import tensorflow as tf

from diffround.signatures import UNROLLED_JACOBIAN_OUTPUTS, row_jacobian


def _numpy_jacobian(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """J[b, k, i] of y = tanh(x @ kernel): (1 - y[b, k]^2) * kernel[i, k]."""
    y = np.tanh(x.astype(np.float64) @ kernel.astype(np.float64))
    return (1.0 - y**2)[:, :, None] * kernel.T.astype(np.float64)[None, :, :]


def _jacobian(x: np.ndarray, kernel: np.ndarray, outputs: int | None) -> np.ndarray:
    source = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(source)
        target = tf.tanh(tf.matmul(source, tf.cast(kernel, source.dtype)))
    return row_jacobian(tape, target, source, outputs).numpy()


# Narrow (unrolled), the widest unrolled, the narrowest pfor, and an unknown width (pfor).
@pytest.mark.parametrize(
    "width, declared",
    [
        (1, 1),
        (4, 4),
        (UNROLLED_JACOBIAN_OUTPUTS, UNROLLED_JACOBIAN_OUTPUTS),
        (UNROLLED_JACOBIAN_OUTPUTS + 1, UNROLLED_JACOBIAN_OUTPUTS + 1),
        (5, None),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_jacobian_matches_the_numpy_formula(width, declared, dtype):
    rng = np.random.default_rng(width)
    # Exact integers and half-integers among the inputs.
    x = np.concatenate([rng.normal(size=(3, 6)), [[0.0, 1.0, -2.0, 0.5, -1.5, 3.0]]]).astype(dtype)
    kernel = (rng.normal(size=(6, width)) * 0.5).astype(dtype)
    got = _jacobian(x, kernel, declared)
    assert got.shape == (4, width, 6) and got.dtype == dtype
    # float32: 1 - y^2 near saturation loses digits to y's rounding (a few 1e-7 absolute).
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    np.testing.assert_allclose(got, _numpy_jacobian(x, kernel), rtol=rtol, atol=atol)


def test_the_unrolled_and_pfor_forms_agree_and_rows_stay_separate():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 4)).astype(np.float32)
    unrolled = _jacobian(x, kernel, 4)
    pfor = _jacobian(x, kernel, None)
    np.testing.assert_allclose(unrolled, pfor, rtol=1e-6, atol=1e-7)
    # Row b's Jacobian depends on row b only: changing another row leaves it.
    moved = x.copy()
    moved[1] += 10.0
    np.testing.assert_array_equal(_jacobian(moved, kernel, 4)[0], unrolled[0])


def test_unconnected_source_gives_zeros_and_an_empty_batch_gives_no_rows():
    source = tf.zeros([2, 3])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(source)
        target = tf.ones([2, 2])
    np.testing.assert_array_equal(row_jacobian(tape, target, source, 2), np.zeros((2, 2, 3)))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def traced(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = tf.square(x[:, :2])
        return row_jacobian(tape, y, x, 2)

    assert traced(tf.zeros([0, 3])).shape == (0, 2, 3)
    x = np.array([[1.0, -0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(traced(x)[0], [[2.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
