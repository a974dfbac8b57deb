"""Model runtimes: one signature of a SavedModel behind one call interface, and the choice.

Three runners implement `app.predictor.SignatureRunner` (NumPy in, NumPy out):

- `app.predictor.SavedModelRunner`, the reference: the loaded SavedModel's
  concrete signature function (`loaded.signatures[key]`). A call costs
  250-300 us of TensorFlow dispatch however small the model.
- `TFLiteRunner`: the same signature converted with `tf.lite.TFLiteConverter`
  and run by `tf.lite.Interpreter(num_threads=1)`. A 1-row call of a small
  model costs a few microseconds.
- `app.graph_runner.GraphRunner`: the signature frozen into a graph that a
  `tf.compat.v1.Session` runs in the caller's thread: TensorFlow's own
  kernels at a fraction of the cost (the default model: 19 us instead of 370
  for `serving_default`, 106 us instead of 530 for its gradient signature).

`choose_runner` picks one per signature when a model version loads. A faster
runtime serves only where it is proven equal: its answers must be bit-identical
(same dtype, same shape, same bytes) to the SavedModel's on every probe input
tiled to 1, 2, 7 and 64 rows. Otherwise the next one is tried, the SavedModel
last, and the reason says why (conversion failed, an op TFLite lacks, an
answer that differs).

Why proving matters here: `TFLiteConverter.from_saved_model` leaves the
variables of a `tf.Module`-exported SavedModel as resource variables that
nothing initialises; the interpreter then reads uninitialised memory (NaN or
garbage at any batch size) or fails in `READ_VARIABLE`. Converting the
loaded concrete function instead (`from_concrete_functions`, which freezes
the variables into constants) gives the right answers. So that one is tried
first and `from_saved_model` second (it keeps what a concrete function
cannot, e.g. table initialisers), each with XNNPACK (TFLite's default CPU
delegate) and then with the builtin kernels alone; the first candidate that
is bit-identical wins. A signature computing gradients fails both for the
gradient ops TFLite lacks (`ReluGrad`, `BroadcastGradientArgs`, ...); it is
converted once more with those ops rewritten into builtins (`app.lowering`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from app.graph_runner import GraphRunner, executor_name
from app.lowering import LOWERINGS, lower_function
from app.predictor import SavedModelRunner, SignatureRunner, TensorSpec, check_inputs

logger = logging.getLogger(__name__)

#: Batch sizes (rows) every probe input is tiled to when proving TFLite equal.
PROBE_BATCH_SIZES = (1, 2, 7, 64)

#: How a conversion failure for ops TFLite's builtin kernels lack begins.
UNSUPPORTED = "ops TFLite's builtins lack: "

Mode = Literal["auto", "tflite", "graph", "savedmodel"]
MODES: tuple[str, ...] = ("auto", "tflite", "graph", "savedmodel")

#: How `choose_runner`'s reasons name the graph runtime (`app.graph_runner`).
GRAPH_LABEL = "frozen graph in the caller's thread"


def _tensor_spec(name: str, spec: tf.TensorSpec) -> TensorSpec:
    shape = spec.shape
    dims = None if shape.rank is None else tuple(-1 if d is None else int(d) for d in shape)
    dtype = np.dtype(object) if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)
    return TensorSpec(name=name, dtype=dtype, shape=dims)


def signature_specs(function: Any) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """Input and output specs of a concrete signature function (`loaded.signatures[key]`).

    Args:
        function: A signature function: keyword inputs, a dict of outputs.

    Returns:
        `(inputs, outputs)`, each `{name: TensorSpec}` in the signature's order.
    """
    _, kwargs = function.structured_input_signature
    inputs = {name: _tensor_spec(name, spec) for name, spec in kwargs.items()}
    outputs = {name: _tensor_spec(name, spec) for name, spec in function.structured_outputs.items()}
    return inputs, outputs


class TFLiteRunner:
    """A signature converted to TensorFlow Lite, on one single-threaded interpreter.

    Each call resizes the interpreter's inputs only when the shapes differ from
    the previous call's (then reallocates all tensors, so no buffer of an older
    shape is reused), copies the inputs in, invokes, and copies every output
    out (`get_tensor` returns a copy, so no answer aliases the interpreter's
    memory). Thread-safe: one lock serialises calls, since a TFLite
    interpreter must not be used by two threads at once; concurrent callers
    wait for each other (one interpreter per worker process is the intent).

    Args:
        model_content: The TFLite flatbuffer of exactly one signature.
        key: The SavedModel's key for that signature (the runner's `name`).
        inputs: Input specs (from the SavedModel signature: same names, dtypes, shapes).
        outputs: Output specs, likewise.
        xnnpack: Whether to let TFLite apply its default CPU delegate, XNNPACK
            (default True); False runs TFLite's builtin kernels only.

    Raises:
        ValueError: The flatbuffer's signature does not have exactly these inputs and outputs.
    """

    runtime = "tflite"
    strict_shapes = True

    def __init__(
        self,
        model_content: bytes,
        key: str,
        inputs: dict[str, TensorSpec],
        outputs: dict[str, TensorSpec],
        *,
        xnnpack: bool = True,
    ) -> None:
        self.name = key
        self.inputs = inputs
        self.outputs = outputs
        self.xnnpack = xnnpack
        resolver = tf.lite.experimental.OpResolverType
        options: dict[str, Any] = {}
        if not xnnpack:
            options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter("ignore")
            self._interpreter = tf.lite.Interpreter(
                model_content=model_content, num_threads=1, **options
            )
        signatures = list(self._interpreter.get_signature_list())
        if len(signatures) != 1:
            raise ValueError(f"the TFLite model has signatures {signatures}, not exactly one")
        # A concrete function converted alone is keyed "serving_default" whatever its
        # SavedModel key: the one signature is the one asked for.
        runner = self._interpreter.get_signature_runner(signatures[0])
        in_details = runner.get_input_details()
        out_details = runner.get_output_details()
        if set(in_details) != set(inputs) or set(out_details) != set(outputs):
            raise ValueError(
                f"the TFLite signature has inputs {sorted(in_details)} and outputs "
                f"{sorted(out_details)}; the SavedModel's are {sorted(inputs)} and "
                f"{sorted(outputs)}"
            )
        # One signature per model: it is the interpreter's primary subgraph, so the
        # interpreter-level calls below address its tensors by index (checked, not assumed).
        self._input_index = [int(in_details[name]["index"]) for name in inputs]
        self._output_index = [(name, int(out_details[name]["index"])) for name in outputs]
        primary_in = {int(d["index"]) for d in self._interpreter.get_input_details()}
        primary_out = {int(d["index"]) for d in self._interpreter.get_output_details()}
        if primary_in != set(self._input_index) or primary_out != {
            i for _, i in self._output_index
        }:
            raise ValueError("the TFLite signature is not the model's primary subgraph")
        self._shapes: list[tuple[int, ...]] | None = None
        self._lock = threading.Lock()
        self._set = self._interpreter.set_tensor
        self._get = self._interpreter.get_tensor
        self._invoke = self._interpreter.invoke

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.inputs, inputs)
        shapes = [a.shape for a in arrays]
        with self._lock:
            if shapes != self._shapes:
                self._shapes = None  # stays None if a resize fails half way
                for index, shape in zip(self._input_index, shapes, strict=True):
                    self._interpreter.resize_tensor_input(index, shape, strict=False)
                self._interpreter.allocate_tensors()
                self._shapes = shapes
            for index, array in zip(self._input_index, arrays, strict=True):
                self._set(index, array)
            self._invoke()
            return {name: self._get(index) for name, index in self._output_index}

    def __repr__(self) -> str:
        kernels = "XNNPACK" if self.xnnpack else "builtin kernels"
        return f"TFLiteRunner({self.name!r}, {kernels})"


# --- conversion ---------------------------------------------------------------------------


def _converter_message(exc: BaseException) -> str:
    """A one-line reason from a converter error: the unsupported ops when it names them.

    The converter lists the ops TF Select could run on one line ("TF Select ops: A, B")
    and names each op that not even TF Select has in its own error line; both count.
    """
    text = str(exc)
    ops: set[str] = set()
    found = re.search(r"TF Select ops: ([^\n]+)", text)
    if found:
        ops.update(op.strip() for op in found.group(1).split(",") if op.strip())
    not_even_flex = r"'tf\.(\w+)' op is neither a custom op nor a flex op"
    ops.update(re.findall(not_even_flex, text))
    if ops:
        return f"{UNSUPPORTED}{', '.join(sorted(ops))}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}"


def convert_saved_model(path: str, key: str) -> bytes:
    """`TFLiteConverter.from_saved_model(path, signature_keys=[key])`, builtin ops only."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[key])
    return converter.convert()


def convert_concrete_function(function: Any, loaded: Any) -> bytes:
    """`TFLiteConverter.from_concrete_functions([function], loaded)`: variables frozen to constants.

    The result has one signature, keyed "serving_default" whatever `function`'s key was.
    """
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    return converter.convert()


class ConversionCache:
    """Conversions of one signature kept on disk: `<digest>-<converter>.tflite`, or `.failed`
    holding the converter's one-line message.

    The digest covers the SavedModel's `fingerprint.pb` (its checksums of the graph and
    the variables; `saved_model.pb` and `variables/variables.index` where there is none),
    the signature key and the TensorFlow version, so a new model version, a retrained
    model or another TensorFlow converts afresh. Unreadable or unwritable cache
    files are ignored (logged): the cache only saves time.

    Args:
        root: The cache directory (created when needed).
        path: The SavedModel's directory.
        key: The signature key.
    """

    def __init__(self, root: str | os.PathLike[str], path: str, key: str) -> None:
        self.root = Path(root)
        digest = hashlib.sha256(f"{key}\0{tf.__version__}\0".encode())
        saved = Path(path)
        fingerprint = saved / "fingerprint.pb"
        for part in (
            [fingerprint]
            if fingerprint.is_file()
            else [saved / "saved_model.pb", saved / "variables" / "variables.index"]
        ):
            try:
                digest.update(part.read_bytes())
            except OSError:
                digest.update(b"missing")
        self.digest = digest.hexdigest()[:32]

    def _file(self, label: str, suffix: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", label)  # "a, b c" -> "a-b-c"
        return self.root / f"{self.digest}-{slug}.{suffix}"

    def get(self, label: str) -> tuple[bytes | None, str | None]:
        """`(flatbuffer, None)`, `(None, failure message)`, or `(None, None)` when not cached."""
        try:
            if self._file(label, "tflite").is_file():
                return self._file(label, "tflite").read_bytes(), None
            if self._file(label, "failed").is_file():
                return None, self._file(label, "failed").read_text()
        except OSError as exc:
            logger.warning("conversion cache unreadable (%s); converting", exc)
        return None, None

    def put(self, label: str, content: bytes | None, message: str | None) -> None:
        """Store a flatbuffer or a failure message (atomically: write, then rename)."""
        target = self._file(label, "tflite" if content is not None else "failed")
        data = content if content is not None else (message or "").encode()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            partial.write_bytes(data)
            os.replace(partial, target)
        except OSError as exc:
            logger.warning("conversion cache not written (%s)", exc)


def example_probes(
    examples: Sequence[dict[str, Any]], specs: dict[str, TensorSpec]
) -> list[dict[str, np.ndarray]]:
    """Probe inputs from a metadata file's examples (one row each, no batch dimension).

    Accepts both metadata formats: `{"inputs": {name: value}}` (v2, one entry per
    input) and `{"inputs": value}` (v1, a single-input signature). Examples that
    do not fit the specs (a missing input, a shape that does not fit) are left out.

    Args:
        examples: The metadata's `examples` list.
        specs: The signature's input specs.

    Returns:
        One probe per usable example, each `{name: array}` with a batch dimension of 1.
    """
    probes = []
    for example in examples:
        values = example.get("inputs")
        if not isinstance(values, dict):
            if len(specs) != 1:
                continue
            values = {next(iter(specs)): values}
        try:
            probe = {
                name: np.asarray(values[name], dtype=spec.dtype)[None]
                for name, spec in specs.items()
            }
            check_inputs(specs, probe)
        except (KeyError, TypeError, ValueError):
            continue
        probes.append(probe)
    return probes


# --- proving equality ---------------------------------------------------------------------


def _rows(probe: dict[str, np.ndarray]) -> int | None:
    """The probe's common leading dimension, or None when it has no batch dimension."""
    sizes = {np.asarray(v).shape[0] if np.asarray(v).ndim else None for v in probe.values()}
    if len(sizes) != 1:
        return None
    (size,) = sizes
    return size if size else None


def _batchable(specs: dict[str, TensorSpec]) -> bool:
    return all(s.shape is None or (len(s.shape) >= 1 and s.shape[0] == -1) for s in specs.values())


def probe_batches(
    probes: Sequence[dict[str, np.ndarray]],
    specs: dict[str, TensorSpec],
    batch_sizes: Sequence[int] = PROBE_BATCH_SIZES,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The calls that prove a runtime equal: each probe tiled to each batch size, and all mixed.

    Row `i` of a tiled batch is row `i mod n` of the probe (n its rows); the
    mixed batch stacks every probe's rows (those with the same row shapes) and
    tiles them to the largest batch size, so different rows share one call.
    Probes without a batch dimension (or signatures without one) are used as given.

    Args:
        probes: Inputs of the signature, each `{name: array}` with a batch dimension first.
        specs: The signature's input specs.
        batch_sizes: Rows per tiled call (default 1, 2, 7, 64).

    Returns:
        `[(label, inputs)]`, the label naming the probe and the batch size.
    """
    calls: list[tuple[str, dict[str, np.ndarray]]] = []
    tiled_ok = _batchable(specs)
    stackable: list[dict[str, np.ndarray]] = []
    for number, probe in enumerate(probes):
        probe = {k: np.asarray(v) for k, v in probe.items()}
        rows = _rows(probe) if tiled_ok else None
        if rows is None:
            calls.append((f"probe {number} as given", probe))
            continue
        stackable.append(probe)
        for size in batch_sizes:
            take = np.arange(size) % rows
            calls.append((f"probe {number} x {size} rows", {k: v[take] for k, v in probe.items()}))
    if len(stackable) > 1:
        first = {k: v.shape[1:] for k, v in stackable[0].items()}
        same = [p for p in stackable if {k: v.shape[1:] for k, v in p.items()} == first]
        if len(same) > 1:
            mixed = {k: np.concatenate([p[k] for p in same]) for k in first}
            size = max(batch_sizes)
            take = np.arange(size) % len(next(iter(mixed.values())))
            calls.append(
                (f"{len(same)} probes mixed x {size} rows", {k: v[take] for k, v in mixed.items()})
            )
    return calls


def _difference(name: str, want: np.ndarray, got: np.ndarray) -> str | None:
    """None when `got` is bit-identical to `want`, else what differs."""
    got = np.asarray(got)
    if got.dtype != want.dtype:
        return f"output '{name}' has dtype {got.dtype}, the SavedModel's {want.dtype}"
    if got.shape != want.shape:
        return f"output '{name}' has shape {got.shape}, the SavedModel's {want.shape}"
    if want.dtype == object:
        same = all(a == b for a, b in zip(want.ravel(), got.ravel(), strict=True))
        return None if same else f"output '{name}' differs (strings)"
    if np.ascontiguousarray(want).tobytes() == np.ascontiguousarray(got).tobytes():
        return None
    differing = int(np.count_nonzero(want != got)) if want.size else 0
    detail = f"{differing} of {want.size} values differ"
    if want.dtype.kind in "fc":
        if np.isnan(got).any() and not np.isnan(want).any():
            detail += ", NaN where the SavedModel has numbers"
        else:
            with np.errstate(invalid="ignore"):
                gap = np.nanmax(np.abs(want.astype(np.float64) - got.astype(np.float64)))
            detail += f", largest difference {gap:.3g}"
    return f"output '{name}': {detail}"


def compare(
    reference: SignatureRunner,
    candidate: SignatureRunner,
    calls: Sequence[tuple[str, dict[str, np.ndarray]]],
) -> str | None:
    """None when `candidate` answers every call bit-identically to `reference`, else the first
    difference (or the error the candidate raised where the reference answered)."""
    for label, inputs in calls:
        want = reference(inputs)
        try:
            got = candidate(inputs)
        except Exception as exc:  # any failure means: not this one
            return f"{label}: raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if got.keys() != want.keys():
            return f"{label}: outputs {sorted(got)}, the SavedModel's {sorted(want)}"
        for name in want:
            problem = _difference(name, want[name], got[name])
            if problem:
                return f"{label}: {problem}"
    return None


# --- the choice ---------------------------------------------------------------------------


@dataclass
class _Attempt:
    label: str
    runner: TFLiteRunner | GraphRunner | None = None
    problem: str | None = None


@dataclass(frozen=True)
class _Candidate:
    label: str
    convert: Callable[[], bytes]
    #: Whether this conversion rewrites gradient ops first (`app.lowering`): tried only
    #: after a plain conversion failed for ops that all have a rewrite.
    lowers: bool = False


def convert_lowered(function: Any) -> bytes:
    """`convert_concrete_function` of `function` with its gradient ops rewritten
    (`app.lowering.lower_function`)."""
    concrete, module, _ = lower_function(function)
    return convert_concrete_function(concrete, module)


def _candidates(path: str, loaded: Any, key: str, reference: SavedModelRunner) -> list[_Candidate]:
    return [
        _Candidate(
            "from_concrete_functions",
            lambda: convert_concrete_function(reference.function, loaded),
        ),
        _Candidate("from_saved_model", lambda: convert_saved_model(path, key)),
        _Candidate(
            "from_concrete_functions, gradient ops lowered",
            lambda: convert_lowered(reference.function),
            lowers=True,
        ),
    ]


def _missing_ops(message: str | None) -> set[str] | None:
    """The op types a conversion failure names as missing from TFLite, else None."""
    if not message or not message.startswith(UNSUPPORTED):
        return None
    return {op.strip() for op in message[len(UNSUPPORTED) :].split(",") if op.strip()}


def choose_runner(
    path: str,
    loaded: Any,
    key: str,
    probe_inputs: Sequence[dict[str, np.ndarray]],
    mode: Mode = "auto",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[SignatureRunner, str]:
    """The runner that serves signature `key` of one model version, and why.

    `auto`: the fastest runtime whose answers to every probe input, tiled to
    1, 2, 7 and 64 rows (`probe_batches`), are bit-identical to the
    SavedModel's: TFLite, else the graph runtime (`app.graph_runner`: the
    signature frozen into a graph that a Session runs in the caller's thread),
    else the SavedModel runner. `graph`: the same without trying TFLite (no
    conversion cost). `tflite`: TFLite whatever the probes say, provided a
    conversion runs and answers with numbers (prefers a bit-identical one; the
    reason states any difference); raises otherwise. `savedmodel`: the
    reference, nothing else built.

    Conversions tried, in order, each first with XNNPACK then with TFLite's
    builtin kernels alone: `from_concrete_functions` on the loaded signature
    (variables frozen), then `from_saved_model(path, signature_keys=[key])`.
    A conversion that fails is not retried with other kernels, and when it
    fails for ops TFLite lacks the other conversion is not tried either;
    when every op it names has a rewrite in `app.lowering.LOWERINGS`
    (gradient ops), `from_concrete_functions` is tried once more on the
    signature with those ops rewritten.

    Args:
        path: The SavedModel's directory (the one `loaded` came from).
        loaded: `tf.saved_model.load(path)`'s result.
        key: The signature key.
        probe_inputs: Inputs that must give identical answers, each `{name: array}`
            with a batch dimension (one or more rows), e.g. the metadata's examples
            and the warm-up inputs. With none, `auto` and `graph` keep the SavedModel.
        mode: "auto" (default), "tflite", "graph" or "savedmodel".
        cache_dir: Where to keep conversions (flatbuffers and failures) across
            restarts, keyed by the SavedModel's fingerprint, the key and the
            TensorFlow version (`ConversionCache`); None (default) converts every
            time. A conversion costs 0.3-3 s; the proof of equality always reruns.

    Returns:
        `(runner, reason)`: the reason is one human sentence naming the runtime,
        e.g. "tflite (from_concrete_functions, XNNPACK): bit-identical to the
        SavedModel on 3 probes x 1/2/7/64 rows (13 calls; chosen in 0.4 s)",
        "graph (frozen graph in the caller's thread, single-threaded executor):
        bit-identical ...; TFLite not used (from_concrete_functions: conversion failed: ops
        TFLite's builtins lack: Erfc, ReluGrad)" or "savedmodel: TFLite not
        used (...); graph not used (...)".

    Raises:
        ValueError: An unknown mode.
        KeyError: No signature `key`.
        RuntimeError: `tflite` mode and no TFLite conversion that runs.
    """
    if mode not in MODES:
        raise ValueError(
            f"Invalid value received for argument `mode`. Expected one of {MODES}. "
            f"Received: mode={mode!r}"
        )
    if key not in loaded.signatures:
        raise KeyError(f"the SavedModel has no signature '{key}'")
    reference = SavedModelRunner(key, loaded.signatures[key])
    if mode == "savedmodel":
        return reference, "savedmodel: forced by the setting"
    if mode in ("auto", "graph") and not probe_inputs:
        return reference, "savedmodel: no probe inputs to prove another runtime's answers equal"
    calls = probe_batches(probe_inputs, reference.inputs)
    started = time.perf_counter()
    attempts: list[_Attempt] = []
    cache = ConversionCache(cache_dir, path, key) if cache_dir else None
    missing: set[str] | None = None  # ops TFLite lacks, once a plain conversion said so
    for candidate in _candidates(path, loaded, key, reference) if mode != "graph" else ():
        if candidate.lowers != (missing is not None):
            continue  # lowering only helps (and plain conversions only fail) for missing ops
        if candidate.lowers and not missing <= LOWERINGS.keys():  # type: ignore[operator]
            break
        label = candidate.label
        content, message = cache.get(label) if cache else (None, None)
        if content is None and message is None:
            try:
                content = candidate.convert()
            except Exception as exc:  # any failure means: not this one
                message = _converter_message(exc)
            if cache:
                cache.put(label, content, message)
        if content is None:
            attempts.append(_Attempt(label, problem=f"conversion failed: {message}"))
            if candidate.lowers:
                break
            missing = _missing_ops(message)
            continue
        for xnnpack in (True, False):
            kernels = "XNNPACK" if xnnpack else "builtin kernels"
            attempt = _Attempt(f"{label}, {kernels}")
            try:
                attempt.runner = TFLiteRunner(
                    content, key, reference.inputs, reference.outputs, xnnpack=xnnpack
                )
            except Exception as exc:
                attempt.problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            else:
                attempt.problem = compare(reference, attempt.runner, calls)
            attempts.append(attempt)
            if attempt.problem is None:
                seconds = time.perf_counter() - started
                rejected = "; ".join(f"{a.label}: {a.problem}" for a in attempts[:-1])
                reason = (
                    f"tflite ({attempt.label}): bit-identical to the SavedModel on "
                    f"{len(probe_inputs)} probes x {'/'.join(map(str, PROBE_BATCH_SIZES))} rows "
                    f"({len(calls)} calls; chosen in {seconds:.1f} s)"
                    + (f"; rejected first: {rejected}" if rejected else "")
                )
                return attempt.runner, reason
    summary = "; ".join(f"{a.label}: {a.problem}" for a in attempts)
    if mode == "tflite":
        usable = [a for a in attempts if a.runner is not None and _answers(a, reference, calls)]
        if not usable:
            raise RuntimeError(f"TFLite was forced but no conversion runs: {summary}")
        chosen = usable[0]
        return chosen.runner, f"tflite ({chosen.label}): forced by the setting; {chosen.problem}"
    tflite_said = f"TFLite not used ({summary})" if attempts else "TFLite not tried (graph mode)"
    graph = _graph_attempts(reference, calls)
    if graph[-1].problem is None:
        seconds = time.perf_counter() - started
        chosen = graph[-1]
        rejected = "".join(f"; {a.label}: {a.problem}" for a in graph[:-1])
        return chosen.runner, (  # type: ignore[return-value]
            f"graph ({chosen.label}): bit-identical to the SavedModel on "
            f"{len(probe_inputs)} probes x {'/'.join(map(str, PROBE_BATCH_SIZES))} rows "
            f"({len(calls)} calls; chosen in {seconds:.1f} s){rejected}; {tflite_said}"
        )
    graph_said = "; ".join(f"{a.label}: {a.problem}" for a in graph)
    return reference, f"savedmodel: {tflite_said}; graph not used ({graph_said})"


def _graph_attempts(reference: SavedModelRunner, calls: Sequence) -> list[_Attempt]:
    """The graph runtime for `reference`'s signature: the single-threaded executor, then the
    default one; stops at the first bit-identical to the reference (`problem` None)."""
    attempts = []
    for single_threaded in (True, False):
        attempt = _Attempt(f"{GRAPH_LABEL}, {executor_name(single_threaded)}")
        try:
            attempt.runner = GraphRunner(
                reference.function,
                reference.name,
                reference.inputs,
                reference.outputs,
                single_threaded=single_threaded,
            )
        except Exception as exc:  # any failure means: not this one
            attempt.problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            attempt.problem = compare(reference, attempt.runner, calls)
        attempts.append(attempt)
        if attempt.problem is None:
            break
    return attempts


def _answers(attempt: _Attempt, reference: SignatureRunner, calls: Sequence) -> bool:
    """Whether a rejected TFLite runner still runs every call and answers with numbers
    wherever the SavedModel does (rules out uninitialised variables: NaN or errors)."""
    assert attempt.runner is not None
    for _, inputs in calls:
        want = reference(inputs)
        try:
            got = attempt.runner(inputs)
        except Exception:
            return False
        for name, value in want.items():
            other = got.get(name)
            if other is None or np.shape(other) != value.shape:
                return False
            if value.dtype.kind == "f" and (np.isfinite(value) & ~np.isfinite(other)).any():
                return False
    return True
