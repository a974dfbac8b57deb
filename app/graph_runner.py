"""The graph runtime: a signature frozen into a TensorFlow graph, run by a Session in the
caller's thread.

Calling a loaded SavedModel's concrete function (`SavedModelRunner`) costs
250-300 us per call here however small the model: the eager call machinery,
and TensorFlow's executor handing the function's ops to its inter-op thread
pool and waking the caller when they are done. The same ops run by a
`tf.compat.v1.Session` whose config has `inter_op_parallelism_threads < 0`
execute in the calling thread ("all operations are performed in caller's
thread", `ConfigProto`). The runner calls them through a callable built once
from `CallableOptions`: one C call per request (the public
`Session.make_callable` routes calls with feeds through `Session.run`, which
adds 150-200 us of Python). The default model's `serving_default` then costs
19 us per call instead of 370, and its `grad` signature 106 us instead of 530
(65-75 us with the single-threaded executor) as exported with pfor's
`batch_jacobian` (540 nodes); exported with `diffround`'s unrolled narrow
Jacobians (364 nodes), 50-75 us.

It is TensorFlow's own kernels on the same graph, with the variables frozen
into constants (`convert_variables_to_constants_v2`), so its answers are
expected to be bit-identical to the SavedModel's; `app.runtimes.choose_runner`
still proves that on every probe before serving with it (Grappler optimises
the Session's graph as it optimises the function's, and without its rewrites
the answers do differ in the last bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from app.predictor import ModelCallError, TensorSpec, check_inputs, graph_error_message


@dataclass(frozen=True)
class FrozenSignature:
    """A signature function with its variables frozen into constants, as one GraphDef.

    Attributes:
        graph_def: The frozen graph.
        feeds: `{input key: tensor name}` of the graph's placeholders.
        fetches: `{output key: tensor name}` of the graph's outputs.
    """

    graph_def: Any
    feeds: dict[str, str]
    fetches: dict[str, str]

    @classmethod
    def of(cls, function: Any) -> FrozenSignature:
        """Freeze a concrete signature function (`loaded.signatures[key]`).

        The frozen function's inputs and outputs are flat lists in the order
        `tf.nest.flatten` gives the signature's keyword inputs and output dict
        (sorted keys); they are matched to their keys that way.
        """
        frozen = convert_variables_to_constants_v2(function)
        _, kwargs = function.structured_input_signature
        input_keys = tf.nest.flatten({key: key for key in kwargs})
        output_keys = tf.nest.flatten({key: key for key in function.structured_outputs})
        return cls(
            graph_def=frozen.graph.as_graph_def(),
            feeds={k: t.name for k, t in zip(input_keys, frozen.inputs, strict=True)},
            fetches={k: t.name for k, t in zip(output_keys, frozen.outputs, strict=True)},
        )


def executor_name(single_threaded: bool) -> str:
    """The executor a `GraphRunner` uses, in words."""
    return "single-threaded executor" if single_threaded else "default executor"


class GraphRunner:
    """One signature as a frozen graph in its own `tf.compat.v1.Session`.

    The Session runs every op in the calling thread (`inter_op_parallelism_threads=-1`)
    with `intra_op_threads` threads inside an op, the service's TensorFlow setting by
    default. Thread-safe (a Session may run concurrently). Errors the graph raises on its
    inputs become `ModelCallError`, as the SavedModel runner's do.

    Args:
        function: The concrete signature function (`loaded.signatures[key]`).
        key: The SavedModel's key for it (the runner's `name`).
        inputs: Input specs (the SavedModel signature's: same names, dtypes, shapes).
        outputs: Output specs, likewise.
        intra_op_threads: Threads one op may use; None (default) takes TensorFlow's
            current setting (`tf.config.threading.get_intra_op_parallelism_threads()`).
        single_threaded: Run the graph with TensorFlow's `SINGLE_THREADED_EXECUTOR`
            (default True), which walks the nodes in one precomputed order with less
            bookkeeping per node (the default model's `grad`: 15-20% less per call);
            False uses the default executor, still in the caller's thread.

    Raises:
        Exception: Whatever freezing raises for a signature that cannot be frozen
            (resources such as hash tables); the caller keeps the SavedModel then.
    """

    runtime = "graph"
    strict_shapes = True

    def __init__(
        self,
        function: Any,
        key: str,
        inputs: dict[str, TensorSpec],
        outputs: dict[str, TensorSpec],
        *,
        intra_op_threads: int | None = None,
        single_threaded: bool = True,
    ) -> None:
        self.name = key
        self.single_threaded = single_threaded
        self.inputs = inputs
        self.outputs = outputs
        frozen = FrozenSignature.of(function)
        if frozen.feeds.keys() != inputs.keys() or frozen.fetches.keys() != outputs.keys():
            raise ValueError(
                f"the frozen graph has inputs {sorted(frozen.feeds)} and outputs "
                f"{sorted(frozen.fetches)}; the signature's are {sorted(inputs)} and "
                f"{sorted(outputs)}"
            )
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(frozen.graph_def, name="")
        threads = (
            tf.config.threading.get_intra_op_parallelism_threads()
            if intra_op_threads is None
            else intra_op_threads
        )
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=-1
        )
        if single_threaded:
            config.experimental.executor_type = "SINGLE_THREADED_EXECUTOR"
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        self._output_names = list(outputs)
        # `Session.make_callable` with feeds goes through `Session.run` (150-200 us of
        # Python per call); a callable made from `CallableOptions` is one C call.
        self._call = self._session._make_callable_from_options(
            config_pb2.CallableOptions(
                feed=[frozen.feeds[name] for name in inputs],
                fetch=[frozen.fetches[name] for name in outputs],
            )
        )

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on NumPy arrays (exactly the signature's input names).

        Raises:
            ValueError: A name missing or unknown, or a shape that does not fit
                (`check_inputs`, as the TFLite runner).
            TypeError: A dtype that cannot be cast to the signature's.
            ModelCallError: The graph refused the inputs (a check inside it).
        """
        arrays = check_inputs(self.inputs, inputs)
        try:
            results = self._call(*arrays)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise ModelCallError(graph_error_message(exc)) from None
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        """Release the callable and the Session (and with it the graph's constants)."""
        del self._call
        self._session.close()

    @property
    def executor(self) -> str:
        """Which TensorFlow executor runs the graph, in words."""
        return executor_name(self.single_threaded)

    def __repr__(self) -> str:
        return f"GraphRunner({self.name!r}, {self.executor})"


__all__ = ["FrozenSignature", "GraphRunner", "executor_name"]
