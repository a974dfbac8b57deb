"""The peer: KServe's Python model server serving the same SavedModel (v1 protocol).

Runs in the benchmark-only virtual environment `.venv-bench-peer/`
(bench/requirements-peer.txt), never in the service's. Configured as a
careful user would: one worker, gRPC off, per-request latency logging and
uvicorn's access log off, TensorFlow at one intra-op and one inter-op thread
(as the service's workers). KServe parses its own flags at import time;
`python bench/peer_kserve.py --http_port N` passes them through.

Environment: `PEER_MODEL_DIR` (the SavedModel version directory),
`PEER_MODEL_NAME` (default digit-bits). Any SavedModel: inputs and outputs come from
its `serving_default` signature.
"""

import logging
import os

import numpy as np
import tensorflow as tf
from kserve import Model, ModelServer
from kserve.errors import InvalidInput


class SavedModelPredictor(Model):
    """`serving_default` of any SavedModel behind KServe's v1 `:predict` (row form).

    Inputs and outputs come from the signature: one input takes `instances` as rows,
    several take one object per row naming every input; one output answers
    `predictions` as rows, several as one object per row (TF Serving's row format).
    """

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.serving_default = None
        self.specs: dict[str, tf.TensorSpec] = {}
        self.load()

    def load(self) -> bool:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.serving_default = tf.saved_model.load(self.path).signatures["serving_default"]
        self.specs = dict(self.serving_default.structured_input_signature[1])
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        try:
            instances = payload["instances"]
            if len(self.specs) == 1:
                (name,) = self.specs
                columns = {name: instances}
            else:
                columns = {n: [row[n] for row in instances] for n in self.specs}
            feeds = {
                n: tf.constant(np.asarray(v, dtype=self.specs[n].dtype.as_numpy_dtype))
                for n, v in columns.items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"instances do not match the signature ({exc})") from None
        outputs = {k: v.numpy() for k, v in self.serving_default(**feeds).items()}
        if len(outputs) == 1:
            ((_, only),) = outputs.items()
            return {"predictions": only.tolist()}
        count = len(next(iter(outputs.values())))
        return {
            "predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(count)]
        }


if __name__ == "__main__":
    model = SavedModelPredictor(
        os.environ.get("PEER_MODEL_NAME", "digit-bits"), os.environ["PEER_MODEL_DIR"]
    )
    server = ModelServer(workers=1, enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").disabled = True
    server.start([model])
