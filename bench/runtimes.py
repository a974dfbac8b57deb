"""The model runtimes in-process: the SavedModel's signature vs TFLite and the graph runtime.

`python -m bench.runtimes MODEL_DIR --seconds S` (the benchmark runs it under
`taskset` on the server's core, TensorFlow at one intra-op and one inter-op
thread) lets `app.runtimes.choose_runner` pick the runtime of
`serving_default` from the metadata's examples (as the service does at load; random rows
from the signature when there are none),
then times one runner call (NumPy in, NumPy out, input checks included) at
1 and 64 rows with each runtime (SavedModel, TFLite forced, the graph
runtime of `app.graph_runner` where proven), after checking which give the
SavedModel's bytes on those inputs. Where the model has a `grad` signature,
times it too at 1 row, on the SavedModel, on the graph runtime
(`GRAD_RUNTIME=graph`, the default) and forced onto TFLite (its gradient ops
rewritten, `app.lowering`), with the largest difference from the SavedModel.
Prints one `BENCH_JSON {...}` line.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from app.graph_runner import GraphRunner
from app.runtimes import SavedModelRunner, TFLiteRunner, choose_runner
from bench.inprocess import _rate, load_spec
from bench.modelspec import ModelSpec

KEY = "serving_default"
GRAD = "grad"
BATCHES = (1, 64)


def _probes(spec: ModelSpec, rows: int = 8) -> list[dict[str, np.ndarray]]:
    """1-row probes from the spec (its examples cycled, or its random rows)."""
    batch = spec.batch(rows)
    return [{n: v[i : i + 1] for n, v in batch.items()} for i in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(args.model_dir)
    reference = SavedModelRunner(KEY, loaded.signatures[KEY])
    spec = load_spec(args.model_dir, loaded)
    probes = _probes(spec, max(len(spec.examples), 1) if spec.examples else 8)
    started = time.perf_counter()
    chosen, reason = choose_runner(args.model_dir, loaded, KEY, probes, mode="auto")
    choose_s = time.perf_counter() - started
    try:
        lite, _ = choose_runner(args.model_dir, loaded, KEY, probes, mode="tflite")
    except RuntimeError as exc:
        lite = None
        reason += f" (forced TFLite fails too: {str(exc)[:200]})"
    graph, graph_reason = choose_runner(args.model_dir, loaded, KEY, probes, mode="graph")
    results: dict = {"chosen": chosen.runtime, "reason": reason, "choose_s": round(choose_s, 2)}
    results["graph_reason"] = graph_reason
    pools = {n: np.concatenate([p[n] for p in probes]) for n in reference.inputs}
    runners = (
        {"savedmodel": reference}
        | ({"tflite": lite} if lite is not None else {})
        | ({"graph": graph} if isinstance(graph, GraphRunner) else {})
    )
    for batch in BATCHES:
        inputs = {n: pool[np.arange(batch) % len(pool)] for n, pool in pools.items()}
        answers = {label: runner(inputs) for label, runner in runners.items()}
        for label, prefix in (("tflite", ""), ("graph", "graph_")):
            if label in answers:
                results[f"{prefix}equal_b{batch}"] = _same_bytes(
                    answers[label], answers["savedmodel"]
                )
        for label, runner in runners.items():
            calls = _rate(lambda runner=runner, inputs=inputs: runner(inputs), args.seconds)
            results[f"{label}_b{batch}_us"] = round(1e6 / calls, 2)
    if isinstance(chosen, TFLiteRunner):
        results["tflite_kernels"] = "XNNPACK" if chosen.xnnpack else "builtin"
    if GRAD in loaded.signatures:
        results |= _grad(args, loaded, probes)
    print("BENCH_JSON " + json.dumps(results), flush=True)


def _same_bytes(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return all(got[k].dtype == v.dtype and got[k].tobytes() == v.tobytes() for k, v in want.items())


def _largest_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    return max(
        (float(np.max(np.abs(want[k].astype(np.float64) - got[k].astype(np.float64)), initial=0))
         for k in want if want[k].dtype.kind in "fiu"),
        default=0.0,
    )  # fmt: skip


def _grad(args: argparse.Namespace, loaded, probes: list[dict[str, np.ndarray]]) -> dict:
    """The `grad` signature at 1 row: SavedModel vs the graph runtime (`GRAD_RUNTIME=graph`,
    the default) and forced TFLite (gradient ops rewritten)."""
    reference = SavedModelRunner(GRAD, loaded.signatures[GRAD])
    names = reference.inputs.keys()
    probes = [{n: p[n] for n in names} for p in probes if p.keys() >= names]
    if not probes:
        return {"grad_reason": "no probe inputs fit its signature"}
    inputs = probes[0]
    want = reference(inputs)
    results: dict = {
        "grad_savedmodel_b1_us": round(1e6 / _rate(lambda: reference(inputs), args.seconds), 2),
    }
    graph, results["grad_graph_reason"] = choose_runner(
        args.model_dir, loaded, GRAD, probes, mode="graph"
    )
    if isinstance(graph, GraphRunner):
        results["grad_graph_equal_b1"] = _same_bytes(graph(inputs), want)
        results["grad_graph_b1_us"] = round(1e6 / _rate(lambda: graph(inputs), args.seconds), 2)
    try:
        lite, reason = choose_runner(args.model_dir, loaded, GRAD, probes, mode="tflite")
    except RuntimeError as exc:
        return results | {"grad_reason": f"TFLite cannot run it: {str(exc)[:300]}"}
    return results | {
        "grad_reason": reason,
        "grad_largest_difference_b1": _largest_difference(lite(inputs), want),
        "grad_tflite_b1_us": round(1e6 / _rate(lambda: lite(inputs), args.seconds), 2),
    }


if __name__ == "__main__":
    main()
