"""The peer: KServe's Python model server serving the same SavedModel (v1 protocol).

Runs in the benchmark-only virtual environment `.venv-bench-peer/`
(bench/requirements-peer.txt), never in the service's. Configured as a
careful user would: one worker, gRPC off, per-request latency logging and
uvicorn's access log off, TensorFlow at one intra-op and one inter-op thread
(as the service's workers). KServe parses its own flags at import time;
`python bench/peer_kserve.py --http_port N` passes them through.

Environment: `PEER_MODEL_DIR` (the SavedModel version directory),
`PEER_MODEL_NAME` (default digit-bits).
"""

import logging
import os

import numpy as np
import tensorflow as tf
from kserve import Model, ModelServer
from kserve.errors import InvalidInput


class SavedModelPredictor(Model):
    """`serving_default` of a diffround SavedModel behind KServe's v1 `:predict`."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.serving_default = None
        self.load()

    def load(self) -> bool:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.serving_default = tf.saved_model.load(self.path).signatures["serving_default"]
        self.serving_default(inputs=tf.zeros([1, 64]))  # warm up
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        try:
            rows = np.asarray(payload["instances"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"instances must be rows of 64 numbers ({exc})") from None
        outputs = self.serving_default(inputs=tf.constant(rows))["outputs"].numpy()
        return {"predictions": outputs.astype(np.int8).tolist()}


if __name__ == "__main__":
    model = SavedModelPredictor(
        os.environ.get("PEER_MODEL_NAME", "digit-bits"), os.environ["PEER_MODEL_DIR"]
    )
    server = ModelServer(workers=1, enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").disabled = True
    server.start([model])
