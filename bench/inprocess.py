"""The limit: `serving_default` called in-process, and JSON decode + call, on one core.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(args.model_dir)
    predict = loaded.signatures["serving_default"]
    grad = loaded.signatures["grad"]
    rng = np.random.default_rng(0)
    results: dict[str, float] = {}
    for batch in (1, 64, 1024):
        x = tf.constant(rng.integers(0, 17, size=(batch, 64)).astype(np.float32))
        calls = _rate(lambda x=x: predict(inputs=x)["outputs"].numpy(), args.seconds)
        results[f"call_b{batch}_calls_per_s"] = calls
        results[f"call_b{batch}_rows_per_s"] = calls * batch
    for batch in (1, 64):
        x = tf.constant(rng.integers(0, 17, size=(batch, 64)).astype(np.float32))
        calls = _rate(lambda x=x: {k: v.numpy() for k, v in grad(inputs=x).items()}, args.seconds)
        results[f"grad_b{batch}_calls_per_s"] = calls
    for batch in (1, 1024):
        body = orjson.dumps({"inputs": rng.integers(0, 17, size=(batch, 64)).tolist()})

        def decode_and_call(body: bytes = body) -> np.ndarray:
            rows = orjson.loads(body)["inputs"]
            array = np.asarray(rows, dtype=np.float32)
            return predict(inputs=tf.constant(array))["outputs"].numpy()

        calls = _rate(decode_and_call, args.seconds)
        results[f"json_call_b{batch}_calls_per_s"] = calls
        results[f"json_call_b{batch}_rows_per_s"] = calls * batch
    print("BENCH_JSON " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
