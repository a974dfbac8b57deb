"""A loaded, validated, warmed-up model version: its signatures, metadata and batchers."""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.batching import Batcher, Tensors
from app.metadata import ModelInfo, warm_up_inputs
from app.predictor import GRAD_SIGNATURE, InvalidModel, Predictor, SignatureRunner
from app.probes import answered, random_probes, range_probes, row_independence
from app.runtimes import choose_runner

logger = logging.getLogger(__name__)

#: Batch sizes every signature is called with before the version serves.
WARM_UP_BATCHES = (1, 2)

BatchKey = tuple[str, tuple[tuple[str, tuple[int, ...], str], ...]]


def batchable(runner: SignatureRunner) -> bool:
    """Whether requests to a signature can be stacked: every input and output is batch-major.

    TF1 graph exports declare shapes loosely, so they are never stacked.
    """
    return (
        runner.strict_shapes
        and bool(runner.inputs)
        and all(spec.batched for spec in runner.inputs.values())
        and all(spec.batched for spec in runner.outputs.values())
    )


@dataclass(eq=False)
class ServedVersion:
    """One model version in service.

    Args:
        name: The model's name.
        version: The version number.
        predictor: Its signatures.
        info: Its metadata (empty for SavedModels without `diffround.json`).
        make_batcher: Builds the batcher of one signature and one input layout.
    """

    name: str
    version: int
    predictor: Predictor
    info: ModelInfo
    make_batcher: Callable[[str, Callable[[Tensors], Tensors]], Batcher[Tensors]]
    loaded_at: float = field(default_factory=time.time)
    #: Signature -> (runtime, why): "tflite", "graph" or "savedmodel" and the reason.
    runtimes: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Signature -> whether its requests are stacked into shared calls, and why ("on: ..."
    #: or "off: ...", `check_batching`).
    batching: dict[str, str] = field(default_factory=dict)
    _batchers: dict[BatchKey, Batcher[Tensors]] = field(default_factory=dict)
    _batchable: dict[str, bool] = field(default_factory=dict)

    @property
    def runners(self) -> dict[str, SignatureRunner]:
        """Every signature, by key."""
        return self.predictor.runners

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata document (`{}` when the version has none)."""
        return self.info.document

    async def call(self, signature: str, inputs: Tensors) -> Tensors:
        """Run a signature; batch-major requests with the same layout share model calls.

        Args:
            signature: The signature key.
            inputs: Validated arrays, one per input.

        Returns:
            Every output of the signature for exactly these inputs.
        """
        batcher = self._batcher(signature, inputs)
        if batcher is None:
            return self.runners[signature](inputs)
        return await batcher.submit(inputs)

    def start(self, signature: str, inputs: Tensors) -> Awaitable[Tensors]:
        """`call`, begun now where it is batched: two calls started before either is
        awaited share one turn of the event loop. Elsewhere the call runs when awaited.

        Returns:
            What to await for the outputs (a future, or the `call` coroutine).
        """
        batcher = self._batcher(signature, inputs)
        if batcher is None or not batcher.batches:
            return self.call(signature, inputs)
        return batcher.enqueue(inputs)

    def _batcher(self, signature: str, inputs: Tensors) -> Batcher[Tensors] | None:
        """The batcher for this signature and input layout, or None when it does not stack."""
        runner = self.runners[signature]
        stackable = self._batchable.get(signature)
        if stackable is None:
            stackable = self._batchable[signature] = batchable(runner)
        if not stackable:
            return None
        if len(inputs) == 1:
            ((only, array),) = inputs.items()
            layout: tuple[tuple[str, tuple[int, ...], str], ...] = (
                (only, array.shape[1:], array.dtype.str),
            )
        else:
            layout = tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(inputs.items()))
        key: BatchKey = (signature, layout)
        batcher = self._batchers.get(key)
        if batcher is None:
            if len(self._batchers) >= 64:  # many layouts (variable dims): keep the newest few
                self._batchers.pop(next(iter(self._batchers)))
            batcher = self._batchers[key] = self.make_batcher(signature, runner)
        return batcher

    def check_batching(self, enabled: bool) -> None:
        """Decide, per signature, whether requests are stacked into shared model calls.

        Only where every input and output is batch-major and each row's answer is
        the same alone as among other rows (`app.probes.row_independence` on
        rows drawn from the signature's specs); a model whose rows depend on each
        other gets one call per request. Run after `select_runtimes`, on the
        runners that serve.

        Args:
            enabled: Whether batching is on at all (`BATCH_MAX_SIZE` > 1).
        """
        for key, runner in self.runners.items():
            if not batchable(runner):
                self._batchable[key] = False
                self.batching[key] = "off: not every input and output has the batch dimension first"
                continue
            if not enabled:
                self.batching[key] = "off: BATCH_MAX_SIZE=1"
                continue
            probes = answered(runner, random_probes(runner.inputs, bound=TFLITE_INPUT_BOUND))
            try:
                independent, detail = row_independence(runner, probes)
            except LookupError as exc:
                self.batching[key] = f"on: row independence not checked ({exc})"
                continue
            if independent:
                self.batching[key] = f"on: each row answers alone as among other rows ({detail})"
            else:
                self._batchable[key] = False
                self.batching[key] = f"off: {detail}; each request gets its own call"

    def warm_up(self) -> None:
        """Call every signature at each warm-up batch size and check what comes back.

        Raises:
            InvalidModel: A call fails, an output misses its batch dimension, or an
                output the metadata declares rounded is not on its grid.
        """
        for signature, runner in self.runners.items():
            probes = warm_up_inputs(self.info, runner)
            for probe in probes[:2]:
                for rows in WARM_UP_BATCHES if batchable(runner) else (1,):
                    inputs = {n: np.concatenate([a] * rows) for n, a in probe.items()}
                    try:
                        outputs = runner(inputs)
                    except Exception as exc:  # TensorFlow errors from a graph that cannot run
                        raise InvalidModel(
                            f"warm-up call of signature '{signature}' failed ({type(exc).__name__})"
                        ) from exc
                    self._check_warm_up(signature, runner, rows, outputs)

    def _check_warm_up(
        self, signature: str, runner: SignatureRunner, rows: int, outputs: Tensors
    ) -> None:
        if batchable(runner):
            for out_name, value in outputs.items():
                if value.ndim == 0 or len(value) != rows:
                    raise InvalidModel(
                        f"warm-up: output '{out_name}' of '{signature}' has shape "
                        f"{list(value.shape)} for {rows} rows"
                    )
        if signature == GRAD_SIGNATURE:
            return
        for out_name, grid in self.info.grids.items():
            value = outputs.get(out_name)
            if value is not None and value.dtype.kind in "iuf" and grid.off_grid(value).any():
                raise InvalidModel(
                    f"warm-up: output '{out_name}' of '{signature}' is not on its rounding grid"
                )


#: TFLite answers a call only when every float input is finite and at most this large in
#: magnitude (proven on probes drawn up to it); other calls go to the SavedModel. Far
#: outside any data a model was trained on, kernels differ: XNNPACK turned a 1e30 input
#: of the default model into NaN where TensorFlow saturates to 0/1.
TFLITE_INPUT_BOUND = 1e6


class _Guarded:
    """A TFLite runner inside the input range it was proven on, the SavedModel outside it."""

    def __init__(self, fast: SignatureRunner, reference: SignatureRunner, bound: float) -> None:
        self._fast = fast
        self._reference = reference
        self._bound = bound
        self._floats = [n for n, spec in fast.inputs.items() if spec.dtype.kind == "f"]
        self.name = reference.name
        self.inputs = fast.inputs
        self.outputs = fast.outputs
        self.strict_shapes = fast.strict_shapes
        self.runtime = getattr(fast, "runtime", "tflite")

    def __call__(self, inputs: Tensors) -> Tensors:
        for name in self._floats:
            value = inputs[name]
            # `not <=` is also true for NaN (which validation refuses before this).
            if value.size and not np.abs(value).max() <= self._bound:
                return self._reference(inputs)
        return self._fast(inputs)


class _Renamed:
    """One runner under a second signature key (`serve` beside `serving_default`)."""

    def __init__(self, runner: SignatureRunner, name: str) -> None:
        self._runner = runner
        self.name = name
        self.inputs = runner.inputs
        self.outputs = runner.outputs
        self.strict_shapes = runner.strict_shapes
        self.runtime = getattr(runner, "runtime", "savedmodel")

    def __call__(self, inputs: Tensors) -> Tensors:
        return self._runner(inputs)


def _runtime(
    served: ServedVersion, path: Path, key: str, runner: SignatureRunner, mode: str
) -> tuple[SignatureRunner, str]:
    """The runner chosen for one signature in `mode`, and why.

    A TFLite runner is guarded: inputs beyond the range it was proven on run on the
    SavedModel. The graph runtime is not: it runs TensorFlow's own kernels on the same
    graph, so no input range is special to it (the range probes are in its proof too).
    """
    gradient = key == GRAD_SIGNATURE
    if gradient and mode == "savedmodel":
        return runner, "savedmodel: GRAD_RUNTIME=savedmodel, not converted"
    if gradient and mode == "disabled":
        return runner, "savedmodel: /grad is disabled (ENABLE_GRAD=false), not converted"
    probes = warm_up_inputs(served.info, runner)
    probes += range_probes(runner, probes, TFLITE_INPUT_BOUND)
    probes += answered(runner, random_probes(runner.inputs, bound=TFLITE_INPUT_BOUND))
    try:
        fast, reason = choose_runner(
            str(path),
            served.predictor.loaded,
            key,
            probes,
            mode,  # type: ignore[arg-type]
        )
    except Exception as exc:
        if gradient:  # /predict does not need it: serve it as exported
            return runner, f"savedmodel: TFLite cannot run the gradient signature ({exc})"
        # RUNTIME=tflite and no conversion runs: refuse the version
        raise InvalidModel(f"signature '{key}' cannot run on TFLite ({exc})") from exc
    if getattr(fast, "runtime", "savedmodel") == "tflite":
        fast = _Guarded(fast, runner, TFLITE_INPUT_BOUND)
        reason += f"; inputs beyond +-{TFLITE_INPUT_BOUND:g} run on the SavedModel"
    return fast, reason


def select_runtimes(served: ServedVersion, path: Path, mode: str, grad_mode: str = "graph") -> None:
    """Serve each signature on the fastest runtime proven equal (or forced).

    `app.runtimes.choose_runner` keeps TFLite, then the graph runtime
    (`app.graph_runner`), only when its answers are bit-identical to the
    SavedModel's on the warm-up inputs and on probes reaching
    `TFLITE_INPUT_BOUND`, tiled to 1, 2, 7 and 64 rows (`auto`; `graph` tries
    only the graph runtime), or TFLite whenever it runs (`tflite`); on TFLite,
    calls with larger float inputs then go to the SavedModel. Signatures
    sharing one concrete function (`serve` and `serving_default`) share one
    choice. TF1 graph exports (whose declared shapes are not what their graphs
    take) stay on the SavedModel.

    The `grad` signature follows `grad_mode` (`GRAD_RUNTIME`), by default
    `graph`: converting it to TFLite (its gradient ops rewritten,
    `app.lowering`) costs 1-3 s of every load, and its float answers are
    often not bit-identical (TFLite's kernels sum in another order: on the
    default model 1 ulp already in the layers before rounding), so `auto`
    would often pay that only to refuse it. Where TFLite cannot run it, it
    stays on the SavedModel instead of refusing the version.

    Args:
        served: The warmed-up version; its runners are replaced in place.
        path: Its directory.
        mode: `auto`, `tflite`, `graph` or `savedmodel` (the `RUNTIME` setting).
        grad_mode: The same for the `grad` signature (the `GRAD_RUNTIME` setting), or
            `disabled` (`ENABLE_GRAD=false`: not converted).
    """
    runners = served.predictor.runners
    chosen: dict[str, tuple[SignatureRunner, str]] = {}
    for key, runner in list(runners.items()):
        if not runner.strict_shapes:
            served.runtimes[key] = ("savedmodel", "savedmodel: TF1 graph export, not converted")
            continue
        function_name = getattr(getattr(runner, "function", None), "name", key)
        if function_name not in chosen:
            key_mode = grad_mode if key == GRAD_SIGNATURE else mode
            chosen[function_name] = _runtime(served, path, key, runner, key_mode)
        replacement, reason = chosen[function_name]
        if replacement.name != key:
            replacement = _Renamed(replacement, key)
        runners[key] = replacement
        served.runtimes[key] = (getattr(replacement, "runtime", "savedmodel"), reason)
        logger.info(
            "signature runtime chosen",
            extra={
                "model": served.name,
                "version": served.version,
                "signature": key,
                "runtime": reason,
            },
        )


__all__ = ["ServedVersion", "batchable", "select_runtimes"]
