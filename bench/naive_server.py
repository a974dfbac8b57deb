"""The naive baseline: the simplest FastAPI model endpoint a user would write.

pydantic validates `list[list[float]]` element by element, and each request
makes its own `serving_default` call (no batching, no orjson, TensorFlow's
default threads, no gc tuning). The SavedModel directory comes from
`NAIVE_MODEL_DIR`. Run with `python -m bench.serve_asgi bench.naive_server:app`.
"""

import os

import numpy as np
import tensorflow as tf
from fastapi import FastAPI
from pydantic import BaseModel

model = tf.saved_model.load(os.environ["NAIVE_MODEL_DIR"])
serving_default = model.signatures["serving_default"]

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[list[float]]


@app.post("/predict")
async def predict(request: PredictRequest) -> dict:
    x = tf.constant(np.asarray(request.inputs, dtype=np.float32))
    outputs = serving_default(inputs=x)["outputs"].numpy()
    return {"outputs": outputs.astype(int).tolist()}


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}
