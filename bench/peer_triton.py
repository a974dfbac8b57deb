"""The second peer: Triton Inference Server through PyTriton, serving the same SavedModel.

Runs in the benchmark-only virtual environment `.venv-bench-triton/`
(bench/requirements-triton.txt), never in the service's. The nvidia-pytriton
wheel ships `tritonserver` with the Python backend only (no TensorFlow
backend), so the model is a Python function calling the SavedModel's
`serving_default` (inputs and outputs bound from its signature: any model),
bound with dynamic batching (no queue delay: Triton batches whatever queued
while the previous call ran), v2 protocol over HTTP.
TensorFlow at one intra-op and one inter-op thread, as the service's workers.

Triton's backend helper loads `libpython3.11.so`; under an interpreter that
is not the system's (pyenv), the benchmark sets `LD_LIBRARY_PATH` to the
running interpreter's library directory (bench/servers.py) or the stub fails
with `'_thread.RLock' object has no attribute '_recursion_count'`.

Environment: `PEER_MODEL_DIR` (the SavedModel version directory),
`PEER_MODEL_NAME` (default digit-bits), `TRITON_HTTP_PORT`,
`TRITON_GRPC_PORT`, `TRITON_METRICS_PORT`.
"""

import logging
import os

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

#: Triton's largest batch: the benchmark's big requests carry 1024 rows.
MAX_BATCH_SIZE = 1024


def _tensors(specs: dict) -> list[Tensor]:
    """PyTriton tensors for a signature's inputs or outputs (the batch dimension dropped)."""
    return [
        Tensor(
            name=name,
            dtype=spec.dtype.as_numpy_dtype,
            shape=tuple(-1 if d is None else d for d in spec.shape.as_list()[1:]),
        )
        for name, spec in sorted(specs.items())
    ]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    serving_default = tf.saved_model.load(os.environ["PEER_MODEL_DIR"]).signatures[
        "serving_default"
    ]
    input_specs = dict(serving_default.structured_input_signature[1])
    output_specs = dict(serving_default.structured_outputs)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {n: tf.constant(v, dtype=input_specs[n].dtype) for n, v in inputs.items()}
        return {k: v.numpy() for k, v in serving_default(**feeds).items()}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=int(os.environ["TRITON_HTTP_PORT"]),
        grpc_address="127.0.0.1",
        grpc_port=int(os.environ["TRITON_GRPC_PORT"]),
        metrics_port=int(os.environ["TRITON_METRICS_PORT"]),
        metrics_address="127.0.0.1",
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=os.environ.get("PEER_MODEL_NAME", "digit-bits"),
            infer_func=infer,
            inputs=_tensors(input_specs),
            outputs=_tensors(output_specs),
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
