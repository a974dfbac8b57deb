"""The model runtime in-process: the SavedModel's signature vs its TFLite conversion.

`python -m bench.runtimes MODEL_DIR --seconds S` (the benchmark runs it under
`taskset` on the server's core, TensorFlow at one intra-op and one inter-op
thread) lets `app.runtimes.choose_runner` pick the runtime of
`serving_default` from the metadata's examples (as the service does at load),
then times one runner call (NumPy in, NumPy out, input checks included) at
1 and 64 rows with each runtime, after checking that both give the same
bytes on those inputs. Prints one `BENCH_JSON {...}` line.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from app.runtimes import SavedModelRunner, TFLiteRunner, choose_runner, example_probes
from bench.inprocess import _rate

KEY = "serving_default"
BATCHES = (1, 64)


def _probes(model_dir: str, runner: SavedModelRunner) -> list[dict[str, np.ndarray]]:
    """One 1-row probe per metadata example (random grey levels when there are none)."""
    try:
        with open(f"{model_dir}/assets.extra/diffround.json") as handle:
            examples = json.load(handle).get("examples") or []
    except OSError:
        examples = []
    probes = example_probes(examples, runner.inputs)
    if not probes:
        (name,) = runner.inputs
        rows = np.random.default_rng(0).integers(0, 17, size=(8, 64))
        probes = [{name: rows[i : i + 1].astype(runner.inputs[name].dtype)} for i in range(8)]
    return probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(args.model_dir)
    reference = SavedModelRunner(loaded, KEY)
    probes = _probes(args.model_dir, reference)
    started = time.perf_counter()
    chosen, reason = choose_runner(args.model_dir, loaded, KEY, probes, mode="auto")
    choose_s = time.perf_counter() - started
    try:
        lite, _ = choose_runner(args.model_dir, loaded, KEY, probes, mode="tflite")
    except RuntimeError as exc:
        lite = None
        reason += f" (forced TFLite fails too: {str(exc)[:200]})"
    results: dict = {"chosen": chosen.runtime, "reason": reason, "choose_s": round(choose_s, 2)}
    (name,) = reference.inputs
    pool = np.concatenate([p[name] for p in probes])
    runners = {"savedmodel": reference} | ({"tflite": lite} if lite is not None else {})
    for batch in BATCHES:
        inputs = {name: pool[np.arange(batch) % len(pool)]}
        answers = {label: runner(inputs) for label, runner in runners.items()}
        if "tflite" in answers:
            results[f"equal_b{batch}"] = all(
                answers["tflite"][k].tobytes() == v.tobytes()
                and answers["tflite"][k].dtype == v.dtype
                for k, v in answers["savedmodel"].items()
            )
        for label, runner in runners.items():
            calls = _rate(lambda runner=runner, inputs=inputs: runner(inputs), args.seconds)
            results[f"{label}_b{batch}_us"] = round(1e6 / calls, 2)
    if isinstance(chosen, TFLiteRunner):
        results["tflite_kernels"] = "XNNPACK" if chosen.xnnpack else "builtin"
    print("BENCH_JSON " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
