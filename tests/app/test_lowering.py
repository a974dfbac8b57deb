"""app.lowering: each gradient-op rewrite equals TensorFlow's kernel bit for bit, and a
gradient signature with them rewritten answers like the original and converts to TFLite."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from svc_helpers import ErfcWithGradient

from app import lowering, runtimes
from app.graph_runner import GraphRunner
from app.predictor import SavedModelRunner
from app.runtimes import TFLiteRunner, choose_runner


def _bits(value) -> bytes:
    array = np.asarray(value)
    return array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()


def _awkward(dtype) -> np.ndarray:
    """Signed zeros, exact integers, half-integers, the ReLU6 edges, tiny and huge values,
    infinities and NaN, then random values: 2 x 64."""
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 6.0, 5.999, 6.001, 1e-30, -1e-30, 1e30, -1e30]
    special += [np.inf, -np.inf, np.nan]
    rng = np.random.default_rng(7)
    values = np.concatenate([special, rng.standard_normal(128 - len(special)) * 4])
    return values.reshape(2, 64).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "op, lowered, names",
    [
        ("ReluGrad", lowering.relu_grad, ("gradients", "features")),
        ("Relu6Grad", lowering.relu6_grad, ("gradients", "features")),
        ("SigmoidGrad", lowering.sigmoid_grad, ("y", "dy")),
        ("TanhGrad", lowering.tanh_grad, ("y", "dy")),
    ],
)
def test_elementwise_rewrites_equal_the_kernels_bit_for_bit(op, lowered, names, dtype):
    first = _awkward(dtype)
    second = np.random.default_rng(3).standard_normal(first.shape).astype(dtype)
    if op in ("SigmoidGrad", "TanhGrad"):  # y is the activation's output: y in [0, 1] / [-1, 1]
        first, second = (np.abs(np.tanh(first)) if op == "SigmoidGrad" else np.tanh(first)), first
    for a, b in ((first, second), (second, first)):
        want = getattr(tf.raw_ops, op)(**{names[0]: a, names[1]: b})
        got = tf.function(lowered)(tf.constant(a), tf.constant(b))
        assert _bits(got) == _bits(want), op


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_broadcast_gradient_args_rewrite_equals_the_kernel_on_every_small_shape_pair(dtype):
    shapes = [()] + [s for rank in (1, 2, 3) for s in itertools.product((1, 3), repeat=rank)]
    compiled = tf.function(lowering.broadcast_gradient_args)
    for left, right in itertools.product(shapes, repeat=2):
        try:
            np.broadcast_shapes(left, right)
        except ValueError:
            continue  # not a valid broadcast: no gradient graph has it
        s0 = tf.constant(left, dtype, shape=[len(left)])
        s1 = tf.constant(right, dtype, shape=[len(right)])
        want = tf.raw_ops.BroadcastGradientArgs(s0=s0, s1=s1)
        got = compiled(s0, s1)
        assert [_bits(g) for g in got] == [_bits(w) for w in want], (left, right)


class ReluNet(tf.Module):
    """A two-layer ReLU net and its input gradient, with a broadcast bias and sigmoid/tanh
    heads: ReluGrad, SigmoidGrad, TanhGrad and BroadcastGradientArgs in one gradient graph."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(5)
        self.w1 = tf.Variable(rng.standard_normal((3, 8)).astype(np.float32))
        self.b1 = tf.Variable(rng.standard_normal(8).astype(np.float32))
        self.w2 = tf.Variable(rng.standard_normal((8, 2)).astype(np.float32))
        self.w3 = tf.Variable(rng.standard_normal((8, 2)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def grad(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            hidden = tf.nn.relu(x @ self.w1 + self.b1)
            y = tf.reduce_sum(tf.sigmoid(hidden @ self.w2) + tf.tanh(hidden @ self.w3), axis=1)
        return {"y": y, "dy_dx": tape.gradient(y, x)}


@pytest.fixture(scope="module")
def relu_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("lowering") / "net"
    net = ReluNet()
    tf.saved_model.save(net, str(path), signatures={"grad": net.grad})
    return str(path), tf.saved_model.load(str(path))


def test_lowered_signature_has_no_gradient_ops_and_answers_like_the_original(relu_net):
    _, loaded = relu_net
    function = loaded.signatures["grad"]
    ops = {node.op for node in function.graph.as_graph_def().node}
    library = {n.op for f in function.graph.as_graph_def().library.function for n in f.node_def}
    assert {"ReluGrad", "SigmoidGrad", "TanhGrad"} <= ops | library

    concrete, _, lowered = lowering.lower_function(function)
    assert {"ReluGrad", "SigmoidGrad", "TanhGrad"} <= set(lowered)
    left = {node.op for node in concrete.graph.as_graph_def().node}
    assert not left & lowering.LOWERINGS.keys()
    _, kwargs = concrete.structured_input_signature
    assert list(kwargs) == ["x"] and kwargs["x"].shape.as_list() == [None, 3]
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32) * 3
    want = {k: v.numpy() for k, v in function(x=tf.constant(x)).items()}
    got = {k: v.numpy() for k, v in concrete(x=tf.constant(x)).items()}
    assert got.keys() == want.keys() == {"y", "dy_dx"}
    for key in want:  # the same TensorFlow kernels: the same bits
        assert _bits(got[key]) == _bits(want[key]), key


def test_gradient_signature_converts_with_its_ops_lowered(relu_net):
    path, loaded = relu_net
    reference = SavedModelRunner("grad", loaded.signatures["grad"])
    probes = [{"x": np.random.default_rng(2).standard_normal((3, 3)).astype(np.float32)}]
    runner, reason = choose_runner(path, loaded, "grad", probes, mode="tflite")
    assert isinstance(runner, TFLiteRunner), reason
    assert "gradient ops lowered" in reason
    assert "conversion failed: ops TFLite's builtins lack:" not in reason  # forced: the winner
    for rows in (1, 7, 64):
        x = np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
        want, got = reference({"x": x}), runner({"x": x})
        for key in want:  # other kernels: equal up to float rounding, never wrong
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    auto, why = choose_runner(path, loaded, "grad", probes)
    assert why.startswith("tflite" if isinstance(auto, TFLiteRunner) else "graph")
    assert "from_concrete_functions: conversion failed: ops TFLite's builtins lack:" in why
    if not isinstance(auto, TFLiteRunner):  # refused: the reason says by how much
        assert "gradient ops lowered, XNNPACK: probe 0" in why and "differ" in why


def test_ops_without_a_rewrite_are_not_lowered_and_the_reason_names_them(tmp_path, monkeypatch):
    net = ErfcWithGradient()
    tf.saved_model.save(net, str(tmp_path / "erfc"), signatures={"grad": net.grad})
    loaded = tf.saved_model.load(str(tmp_path / "erfc"))

    def never(function):
        raise AssertionError("lowered although Erfc has no rewrite")

    monkeypatch.setattr(runtimes, "convert_lowered", never)
    probes = [{"x": np.ones((1, 2), np.float32)}]
    runner, reason = choose_runner(str(tmp_path / "erfc"), loaded, "grad", probes)
    assert isinstance(runner, GraphRunner), reason  # TensorFlow's own kernels, proven equal
    assert "Erfc" in reason and "ReluGrad" in reason
