"""The cost of each surrogate: forward + backward on 1M float32 elements, eager graph vs XLA.

`python -m bench.surrogates --seconds S` prints one `BENCH_JSON {...}` line:
the fastest of repeated calls (ms) of `tape.gradient(reduce_sum(surrogate(x)), x)` inside a
`tf.function`, with `jit_compile=False` and `jit_compile=True`, for every
method in `diffround.METHODS` with its default parameters. Imports diffround,
so it lives in bench/ (the service never imports it).

The stochastic methods draw from a `keras.random.SeedGenerator`, as the
`DiffRound` layer does in training: new noise on every call. (An int seed
makes the noise the same on every call, a constant that XLA and Grappler fold
at compile time, so it would time `x + constant`, not the random draw.)
"""

import argparse
import json
import time

import keras
import tensorflow as tf

import diffround

ELEMENTS = 1_000_000
STOCHASTIC = ("noise", "binary_concrete")
SEED = 4


def _make(method: str, jit: bool):
    params = {"seed": keras.random.SeedGenerator(SEED)} if method in STOCHASTIC else {}

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def forward_backward(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = diffround.surrogate(x, method, **params)
            loss = tf.reduce_sum(y)
        return loss, tape.gradient(loss, x)

    return forward_backward


def _time_ms(fn, x: tf.Tensor, seconds: float) -> float:
    for _ in range(3):
        _, g = fn(x)
        g.numpy()
    samples = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 200):
        start = time.perf_counter()
        _, g = fn(x)
        g.numpy()
        samples.append((time.perf_counter() - start) * 1000)
    # The fastest call: other work on the machine only ever adds time.
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="per method and mode")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # Values around the rounding steps, including exact integers and half-integers.
    x = tf.random.stateless_uniform([ELEMENTS], seed=[0, 1], minval=-3.0, maxval=3.0)
    results: dict[str, dict[str, float | str]] = {}
    for method in diffround.METHODS:
        row: dict[str, float | str] = {}
        for jit in (False, True):
            key = "xla_ms" if jit else "graph_ms"
            try:
                row[key] = _time_ms(_make(method, jit), x, args.seconds)
            except (
                Exception
            ) as exc:  # report, don't stop: one method failing under XLA is a finding
                row[key] = f"failed: {type(exc).__name__}"
        results[method] = row
    print("BENCH_JSON " + json.dumps({"elements": ELEMENTS, "methods": results}), flush=True)


if __name__ == "__main__":
    main()
