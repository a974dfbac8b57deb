"""The traced signatures of `diffround.export`: `serve` and `grad`.

`ExportModule` holds the model (so its variables are saved) and two
`tf.function`s over the model's named inputs. Tracing them fills a `Trace`:
output names, shapes and dtypes, the rounding layers met in the relaxed pass
(`diffround.relaxed_mode`), which outputs they produce directly, and which
Jacobians were exported or left out (and why); `diffround.export` turns that
into the metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from diffround import modes

#: The `grad` outputs of each rounding layer: `<layer>__<part>`.
LAYER_PARTS = ("pre_round", "surrogate", "local_grad", "hard")
#: Outputs with at most this many elements per row get their Jacobian from one backward
#: pass per element (`row_jacobian`); wider ones from `tape.batch_jacobian` (pfor).
UNROLLED_JACOBIAN_OUTPUTS = 16


class Trace:
    """What tracing the signatures found out about the model (for the metadata)."""

    def __init__(self) -> None:
        self.output_names: list[str] = []
        self.output_shapes: dict[str, list[int]] = {}
        self.serve_dtypes: dict[str, str] = {}
        self.rounded_by: dict[str, str] = {}
        self.layers: dict[str, Any] = {}
        self.layer_shapes: dict[str, list[int]] = {}
        self.jacobian_keys: dict[tuple[str, str], str] = {}
        self.omitted: list[dict[str, Any]] = []


class ExportModule(tf.Module):
    """The saved object: the model (its variables) and the two traced functions.

    Args:
        model: The Keras model.
        specs: Its named inputs (from :func:`input_specs`).
        jacobians: Whether `grad` returns input Jacobians.
        max_jacobian_elements: Largest `out_size * in_size` per row exported.
    """

    def __init__(
        self,
        model: keras.Model,
        specs: list[tf.TensorSpec],
        jacobians: bool,
        max_jacobian_elements: int,
    ) -> None:
        super().__init__(name="diffround_export")
        self.model = model
        self._specs = specs
        self._jacobians = jacobians
        self._max_elements = max_jacobian_elements
        self.trace = Trace()
        self.serve_function = tf.function(self._serve, input_signature=specs)
        self.grad_function = tf.function(self._grad, input_signature=specs)

    def _call(self, feed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if len(feed) == 1:
            outputs = self.model(next(iter(feed.values())), training=False)
        else:
            outputs = self.model(feed, training=False)
        return named_outputs(self.model, outputs)

    def _serve(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
        feed = {spec.name: arg for spec, arg in zip(self._specs, args, strict=True)}
        outputs = self._call(feed)
        trace = self.trace
        trace.output_names = list(outputs)
        for name, tensor in outputs.items():
            trace.output_shapes[name] = shape_list(tensor.shape)
            trace.serve_dtypes[name] = tensor.dtype.name
        return outputs

    def _grad(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
        feed: dict[str, tf.Tensor] = {}
        sources: dict[str, tf.Tensor] = {}
        trace = self.trace
        trace.omitted = []
        with tf.GradientTape(persistent=True) as tape:
            for spec, arg in zip(self._specs, args, strict=True):
                if self._jacobians and arg.dtype.is_floating:
                    # Differentiate with respect to the flattened rows, so that
                    # inputs of any rank (even [batch]) give [b, out, in] Jacobians.
                    flat = tf.reshape(arg, [tf.shape(arg)[0], -1])
                    tape.watch(flat)
                    sources[spec.name] = flat
                    feed[spec.name] = tf.reshape(flat, tf.shape(arg))
                else:
                    feed[spec.name] = arg
            with modes.relaxed_mode() as calls:
                outputs = self._call(feed)
            relaxed = {name: tf.cast(tensor, tf.float32) for name, tensor in outputs.items()}
            flat_outputs = {
                name: tf.reshape(tensor, [tf.shape(tensor)[0], -1])
                for name, tensor in relaxed.items()
            }
        result: dict[str, tf.Tensor] = {}
        for name, tensor in relaxed.items():
            result[f"{name}__relaxed"] = tensor
        for name, tensor in outputs.items():
            for spec in self._specs:
                key = self._jacobian(name, tensor, spec, sources)
                if key is None:
                    continue
                jacobian = row_jacobian(
                    tape, flat_outputs[name], sources[spec.name], row_size(tensor.shape)
                )
                shape = tf.concat(
                    [tf.shape(tensor), tf.shape(args[self._specs.index(spec)])[1:]], axis=0
                )
                result[key] = tf.reshape(tf.cast(jacobian, tf.float32), shape)
        del tape
        self._record_layers(calls, outputs)
        for call in calls:
            name = call.layer.name
            pre_round = call.inputs
            with tf.GradientTape() as local_tape:
                local_tape.watch(pre_round)
                surrogate = call.layer.relaxed(pre_round)
            local_grad = local_tape.gradient(
                surrogate, pre_round, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            hard = call.layer(pre_round, training=False)
            parts = {"pre_round": pre_round, "surrogate": surrogate}
            parts.update(local_grad=local_grad, hard=hard)
            for part, value in parts.items():
                key = f"{name}__{part}"
                if key in result:
                    raise ValueError(f"grad key {key!r} of layer {name!r} clashes with another.")
                result[key] = tf.cast(value, tf.float32)
        return result

    def _jacobian(
        self, output: str, tensor: tf.Tensor, spec: tf.TensorSpec, sources: dict[str, tf.Tensor]
    ) -> str | None:
        """The Jacobian's key, or None (recorded in `omitted`) when it is left out."""
        elements = row_size(tensor.shape)
        in_size = row_size(spec.shape)
        if elements is not None and in_size is not None:
            elements *= in_size
        else:
            elements = None
        if not spec.dtype.is_floating:
            reason = f"input dtype {spec.dtype.name} is not a float (no gradient)"
        elif not self._jacobians:
            reason = "jacobians=False"
        elif elements is None:
            reason = "the non-batch shape is not fully known"
        elif elements > self._max_elements:
            reason = f"{elements} elements per row > max_jacobian_elements={self._max_elements}"
        else:
            key = f"{output}__jacobian__{spec.name}"
            self.trace.jacobian_keys[(output, spec.name)] = key
            return key
        self.trace.omitted.append(
            {"output": output, "input": spec.name, "elements": elements, "reason": reason}
        )
        return None

    def _record_layers(
        self, calls: list[modes.RoundingCall], outputs: dict[str, tf.Tensor]
    ) -> None:
        trace = self.trace
        trace.layers, trace.layer_shapes, trace.rounded_by = {}, {}, {}
        for call in calls:
            name = call.layer.name
            if name in trace.layers:
                what = (
                    "is called more than once"
                    if trace.layers[name] is call.layer
                    else "is the name of two rounding layers"
                )
                raise ValueError(
                    f"Rounding layer {name!r} {what}; the grad signature names its outputs "
                    "after the layer. Use one uniquely named DiffRound layer per rounding."
                )
            trace.layers[name] = call.layer
            trace.layer_shapes[name] = shape_list(call.inputs.shape)
            for output, tensor in outputs.items():
                if tensor is call.outputs:
                    trace.rounded_by[output] = name


def input_specs(
    model: keras.Model,
    input_signature: Mapping[str, tf.TensorSpec] | Sequence[tf.TensorSpec] | None,
) -> list[tf.TensorSpec]:
    """Named `tf.TensorSpec`s of the model's inputs, batch dimension `None`."""
    if input_signature is not None:
        if isinstance(input_signature, Mapping):
            items = [(name, spec) for name, spec in input_signature.items()]
        else:
            items = [(spec.name, spec) for spec in input_signature]
        specs = [tf.TensorSpec(spec.shape, spec.dtype, name=name) for name, spec in items]
    else:
        try:
            inputs = model.inputs
        except AttributeError:
            inputs = None
        if not inputs:
            raise ValueError(
                f"Cannot tell the inputs of model {model.name!r} (a subclassed model records "
                "none). Pass `input_signature`, e.g. "
                "`input_signature=[tf.TensorSpec([None, 8], tf.float32, name='x')]`."
            )
        specs = [tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype), name=t.name) for t in inputs]
    names = [spec.name for spec in specs]
    for spec in specs:
        if not spec.name or not spec.name.replace("_", "a").replace("-", "a").isalnum():
            raise ValueError(
                f"Input name {spec.name!r} is not usable as a signature argument; name the "
                "Keras input with letters, digits, '_' or '-'."
            )
        if spec.shape.rank is None or spec.shape.rank < 1:
            raise ValueError(f"Input {spec.name!r} needs a batch dimension; got {spec.shape}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Input names must be unique; got {names}.")
    return [tf.TensorSpec([None, *spec.shape[1:]], spec.dtype, name=spec.name) for spec in specs]


def named_outputs(model: keras.Model, outputs: Any) -> dict[str, tf.Tensor]:
    """The model's outputs keyed by name: dict keys, `model.output_names`, or `output_<i>`."""
    if isinstance(outputs, Mapping):
        return {str(name): tensor for name, tensor in outputs.items()}
    flat = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    names = list(getattr(model, "output_names", None) or [])
    if not names and isinstance(model, keras.Sequential) and len(flat) == 1:
        names = [model.layers[-1].name]
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return dict(zip(names, flat, strict=True))


def shape_list(shape: Any) -> list[int]:
    """A static shape as a list, `-1` for an unknown dimension."""
    return [-1 if dim is None else int(dim) for dim in tf.TensorShape(shape).as_list()]


def row_jacobian(
    tape: tf.GradientTape, target: tf.Tensor, source: tf.Tensor, outputs: int | None
) -> tf.Tensor:
    """`J[b, k, i] = d target[b, k] / d source[b, i]` for `[b, n]` target and source.

    With a known `outputs = n <= UNROLLED_JACOBIAN_OUTPUTS`, row k of every
    Jacobian is one vector-Jacobian product, the gradient of
    `sum_b target[b, k]` (seed `e_k` on every row), stacked over k: what
    `tape.batch_jacobian` computes, as `n` plain backward passes instead of
    one pfor-vectorised pass. For small `n` the graph is smaller and a call about
    twice as fast (no pfor shape bookkeeping). Otherwise `tape.batch_jacobian`.
    Both assume row b of `target` depends on row b of `source` only.

    Args:
        tape: A persistent tape that watched `source` and recorded `target`.
        target: `[b, n]` float.
        source: `[b, m]` float.
        outputs: `n` when known statically, else None.

    Returns:
        `[b, n, m]`, zeros where `target` does not depend on `source`.
    """
    zero = tf.UnconnectedGradients.ZERO
    if outputs is None or outputs > UNROLLED_JACOBIAN_OUTPUTS:
        return tape.batch_jacobian(target, source, unconnected_gradients=zero)
    rows = []
    for k in range(outputs):
        seed = tf.broadcast_to(tf.one_hot(k, outputs, dtype=target.dtype), tf.shape(target))
        gradient = tape.gradient(target, source, output_gradients=seed, unconnected_gradients=zero)
        rows.append(gradient)
    return tf.stack(rows, axis=1)


def row_size(shape: Any) -> int | None:
    """Elements of one row (all but the first dimension); None when not fully known."""
    dims = tf.TensorShape(shape).as_list()[1:]
    if any(dim is None for dim in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))
