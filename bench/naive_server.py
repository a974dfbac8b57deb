"""The naive baseline: the simplest FastAPI model endpoint a user would write, for any model.

The request model is what a user would type for their model's signature: for a
one-input model `inputs: list[list[float]]` (one `list[...]` per dimension, `int`
for integer inputs), for several inputs an object with one such field per input.
pydantic validates it element by element, and each request makes its own
`serving_default` call (no batching, no orjson, TensorFlow's default threads, no gc
tuning). The answer is `{"outputs": {"<output>": rows}}`, the service's native shape.
The SavedModel version directory comes from `NAIVE_MODEL_DIR`. Run with
`python -m bench.serve_asgi bench.naive_server:app`.
"""

import os
from typing import Any

import numpy as np
import tensorflow as tf
from fastapi import FastAPI
from pydantic import Field, create_model

model = tf.saved_model.load(os.environ["NAIVE_MODEL_DIR"])
serving_default = model.signatures["serving_default"]
SPECS = serving_default.structured_input_signature[1]


def _nested(spec: tf.TensorSpec) -> Any:
    """`list[list[float]]` and the like: one `list` per dimension of the input."""
    kind: Any = int if spec.dtype.is_integer else bool if spec.dtype.is_bool else float
    for _ in range(max(spec.shape.rank or 1, 1)):
        kind = list[kind]
    return kind


if len(SPECS) == 1:
    ((ONLY, ONLY_SPEC),) = SPECS.items()
    PredictRequest = create_model("PredictRequest", inputs=(_nested(ONLY_SPEC), ...))
else:
    ONLY = None
    NamedInputs = create_model(
        "NamedInputs",
        **{f"f{i}": (_nested(s), Field(alias=n)) for i, (n, s) in enumerate(sorted(SPECS.items()))},
    )
    PredictRequest = create_model("PredictRequest", inputs=(NamedInputs, ...))

app = FastAPI()


@app.post("/predict")
async def predict(request: PredictRequest) -> dict:  # type: ignore[valid-type]
    inputs = request.inputs  # type: ignore[attr-defined]
    given = {ONLY: inputs} if ONLY is not None else inputs.model_dump(by_alias=True)
    feeds = {
        name: tf.constant(np.asarray(value, dtype=SPECS[name].dtype.as_numpy_dtype))
        for name, value in given.items()
    }
    outputs = serving_default(**feeds)
    return {"outputs": {name: value.numpy().tolist() for name, value in outputs.items()}}


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}
