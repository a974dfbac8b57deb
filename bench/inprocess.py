"""The limit: `serving_default` called in-process, and JSON decode + call, on one core.

Inputs come from the model's own signature and metadata examples (`bench.modelspec`),
so any SavedModel works; `grad` is timed only when the model has one.

`python -m bench.inprocess MODEL_DIR --seconds S` (the benchmark runs it under
`taskset` on the server's core, TensorFlow at one intra-op and one inter-op
thread, as a service worker has) prints one `BENCH_JSON {...}` line.
"""

import argparse
import json
import time

import numpy as np
import orjson
import tensorflow as tf

from bench import protocols
from bench.modelspec import SIGNATURE, ModelSpec


def _rate(fn, seconds: float) -> float:
    """Calls per second of `fn()` over about `seconds` (after a short warm-up)."""
    for _ in range(20):
        fn()
    best = 0.0
    # Three slices; keep the best one (the machine is shared: noise only slows things down).
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        deadline = start + seconds / 3
        while True:
            fn()
            calls += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, calls / (now - start))
    return best


def load_spec(model_dir: str, loaded: tf.Module) -> ModelSpec:
    """The model's `ModelSpec` from its `serving_default` and `assets.extra/diffround.json`."""
    try:
        with open(f"{model_dir}/assets.extra/diffround.json") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError):
        metadata = {}
    name = metadata.get("model_name") or model_dir.rstrip("/").rsplit("/", 1)[-1]
    return ModelSpec.from_signature(name, loaded.signatures[SIGNATURE], metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(args.model_dir)
    spec = load_spec(args.model_dir, loaded)
    predict = loaded.signatures[SIGNATURE]
    grad = loaded.signatures.get("grad") if spec.gradients else None
    results: dict[str, float] = {}

    def feeds(rows: int) -> dict[str, tf.Tensor]:
        return {k: tf.constant(v) for k, v in spec.batch(rows).items()}

    for batch in (1, 64, 1024):
        x = feeds(batch)
        calls = _rate(lambda x=x: {k: v.numpy() for k, v in predict(**x).items()}, args.seconds)
        results[f"call_b{batch}_calls_per_s"] = calls
        results[f"call_b{batch}_rows_per_s"] = calls * batch
    for batch in (1, 64) if grad is not None else ():
        x = feeds(batch)
        calls = _rate(lambda x=x: {k: v.numpy() for k, v in grad(**x).items()}, args.seconds)
        results[f"grad_b{batch}_calls_per_s"] = calls
    dtypes = {t.name: t.numpy_dtype for t in spec.inputs}
    for batch in (1, 1024):
        body = protocols.body(protocols.NATIVE, spec, spec.batch(batch))

        def decode_and_call(body: bytes = body) -> dict[str, np.ndarray]:
            given = orjson.loads(body)["inputs"]
            if not isinstance(given, dict):
                given = {spec.inputs[0].name: given}
            x = {k: tf.constant(np.asarray(v, dtype=dtypes[k])) for k, v in given.items()}
            return {k: v.numpy() for k, v in predict(**x).items()}

        calls = _rate(decode_and_call, args.seconds)
        results[f"json_call_b{batch}_calls_per_s"] = calls
        results[f"json_call_b{batch}_rows_per_s"] = calls * batch
    print("BENCH_JSON " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
