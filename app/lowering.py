"""Gradient ops rewritten into ops TensorFlow Lite has, so a gradient signature converts.

A signature that computes gradients (`diffround.export`'s `grad`, any
`tape.gradient` or `batch_jacobian` inside an exported function) holds ops
that exist only for backpropagation. TFLite's builtin kernels lack the ones
below, and the converter refuses the whole graph for any one of them. Each is
an elementwise formula or shape arithmetic, so it is rewritten into ops
TFLite has, computing exactly what TensorFlow's kernel computes, in the
kernel's own operand order (a product of three floats rounds differently in
another order):

- `ReluGrad(g, f) = g * cast(f > 0)`
- `Relu6Grad(g, f) = g * cast((f > 0) & (f < 6))`
- `SigmoidGrad(y, dy) = dy * (y * (1 - y))`
- `TanhGrad(y, dy) = dy * (1 - y * y)`
- `BroadcastGradientArgs(s0, s1) = (r0, r1)`: the axes each operand of a
  broadcasting binary op was broadcast along, which its gradient sums over.
  Both shapes are left-padded with 1 to the same rank; `r_i` lists the
  axes where the padded `s_i` is 1, and both lists are empty when the two
  shapes are equal.

Each rewrite is checked against `tf.raw_ops` bit for bit in the tests; the
converted signature still serves only once `app.runtimes` has proven its
answers (`choose_runner`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import node_def_pb2

from app.graph_runner import FrozenSignature


def relu_grad(gradients: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """`ReluGrad`: `gradients * cast(features > 0)`."""
    return gradients * tf.cast(features > tf.zeros([], features.dtype), features.dtype)


def relu6_grad(gradients: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """`Relu6Grad`: `gradients * cast((features > 0) & (features < 6))`."""
    zero, six = tf.zeros([], features.dtype), tf.constant(6, features.dtype)
    inside = tf.logical_and(features > zero, features < six)
    return gradients * tf.cast(inside, features.dtype)


def sigmoid_grad(y: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """`SigmoidGrad`: `dy * (y * (1 - y))`, with `y = sigmoid(x)`."""
    return dy * (y * (tf.ones([], y.dtype) - y))


def tanh_grad(y: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """`TanhGrad`: `dy * (1 - y * y)`, with `y = tanh(x)`."""
    return dy * (tf.ones([], y.dtype) - y * y)


def broadcast_gradient_args(s0: tf.Tensor, s1: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`BroadcastGradientArgs`: the reduction axes of each operand of a broadcast.

    With `p_i` = `s_i` left-padded with 1 to `max(len(s0), len(s1))`:
    `r_i = [k for k in range(len(p_i)) if p_i[k] == 1]`, and `r0 = r1 = []`
    when `s0 == s1`.
    """
    one = tf.ones([], s0.dtype)
    rank = tf.maximum(tf.size(s0), tf.size(s1))
    padded = [tf.concat([tf.fill([rank - tf.size(s)], one), s], 0) for s in (s0, s1)]
    same = tf.logical_and(
        tf.equal(tf.size(s0), tf.size(s1)), tf.reduce_all(tf.equal(padded[0], padded[1]))
    )
    differ = tf.logical_not(same)
    return tuple(
        tf.cast(tf.reshape(tf.where(tf.logical_and(tf.equal(p, one), differ)), [-1]), s0.dtype)
        for p in padded
    )


#: Op type -> its rewrite (a function of the op's inputs, in order, returning its outputs).
LOWERINGS: dict[str, Callable[..., Any]] = {
    "ReluGrad": relu_grad,
    "Relu6Grad": relu6_grad,
    "SigmoidGrad": sigmoid_grad,
    "TanhGrad": tanh_grad,
    "BroadcastGradientArgs": broadcast_gradient_args,
}


def _copy(node: node_def_pb2.NodeDef) -> node_def_pb2.NodeDef:
    copy = node_def_pb2.NodeDef()
    copy.CopyFrom(node)
    return copy


def _rewrite(node: node_def_pb2.NodeDef) -> tuple[list[node_def_pb2.NodeDef], list[str]]:
    """The nodes computing `node`'s rewrite, named under `<node>/lowered/`, and the
    references of its outputs (`name` or `name:i`), in the op's output order."""
    data = [i for i in node.input if not i.startswith("^")]
    control = [i for i in node.input if i.startswith("^")]
    dtype = tf.as_dtype(node.attr["T"].type)
    traced = tf.function(LOWERINGS[node.op]).get_concrete_function(
        *[tf.TensorSpec(None, dtype) for _ in data]
    )
    placeholders = {t.op.name: source for t, source in zip(traced.inputs, data, strict=True)}
    prefix = f"{node.name}/lowered/"

    def resolve(ref: str) -> str:
        bare = ref.lstrip("^")
        op_name = bare.partition(":")[0]
        if op_name in placeholders:
            source = placeholders[op_name]
            return f"^{source.partition(':')[0]}" if ref.startswith("^") else source
        return f"{'^' if ref.startswith('^') else ''}{prefix}{bare}"

    nodes = []
    for sub in traced.graph.as_graph_def().node:
        if sub.name in placeholders:
            continue
        sub = _copy(sub)
        sub.name = prefix + sub.name
        sub.input[:] = [resolve(i) for i in sub.input] + control
        sub.device = ""
        nodes.append(sub)
    outputs = []
    for tensor in tf.nest.flatten(traced.outputs):
        op_name, _, index = tensor.name.partition(":")
        outputs.append(prefix + op_name + ("" if index == "0" else f":{index}"))
    return nodes, outputs


def lower_graph(graph_def: Any) -> tuple[Any, list[str]]:
    """A copy of `graph_def` with every op of `LOWERINGS` in its main graph rewritten.

    Ops inside the graph's function library (loop bodies, branches) are left as they are.

    Returns:
        `(graph_def, lowered)`: the new graph and the sorted op types rewritten.
    """
    nodes: list[node_def_pb2.NodeDef] = []
    renamed: dict[str, str] = {}
    controls: dict[str, list[str]] = {}
    lowered: set[str] = set()
    for node in graph_def.node:
        if node.op not in LOWERINGS:
            nodes.append(_copy(node))
            continue
        new, outputs = _rewrite(node)
        nodes += new
        lowered.add(node.op)
        for index, ref in enumerate(outputs):
            renamed[f"{node.name}:{index}"] = ref
        renamed[node.name] = outputs[0]
        controls[node.name] = [f"^{ref.partition(':')[0]}" for ref in outputs]
    for node in nodes:
        inputs: list[str] = []
        for ref in node.input:
            if ref.startswith("^") and ref[1:] in controls:
                inputs += controls[ref[1:]]
            else:
                inputs.append(renamed.get(ref, ref))
        node.input[:] = inputs
    result = type(graph_def)()
    result.CopyFrom(graph_def)
    del result.node[:]
    result.node.extend(nodes)
    return result, sorted(lowered)


def lower_function(function: Any) -> tuple[Any, tf.Module, list[str]]:
    """A signature function with its variables frozen and its gradient ops rewritten.

    The result takes the same keyword inputs (same names, dtypes and shapes) and
    returns the same dict of outputs as `function`, ready for
    `tf.lite.TFLiteConverter.from_concrete_functions([result], module)`.

    Args:
        function: A concrete signature function (`loaded.signatures[key]`).

    Returns:
        `(concrete_function, module, lowered)`: the module holds the function (the
        converter names its signature from it); `lowered` lists the op types rewritten.
    """
    frozen = FrozenSignature.of(function)
    graph_def, lowered = lower_graph(frozen.graph_def)
    _, kwargs = function.structured_input_signature
    output_keys = list(frozen.fetches)

    def call(**inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        results = tf.graph_util.import_graph_def(
            graph_def,
            input_map={feed: inputs[key] for key, feed in frozen.feeds.items()},
            return_elements=list(frozen.fetches.values()),
            name="lowered",
        )
        return dict(zip(output_keys, results, strict=True))

    module = tf.Module()
    module.call = tf.function(call)
    concrete = module.call.get_concrete_function(
        **{key: tf.TensorSpec(spec.shape, spec.dtype, name=key) for key, spec in kwargs.items()}
    )
    return concrete, module, lowered


__all__ = ["LOWERINGS", "lower_function", "lower_graph"]
