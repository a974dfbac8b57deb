"""The protocol-neutral data plane (KServe's `DataPlane`): every protocol's requests end here.

A codec (native, TF Serving, v2) turns a body into an `InferenceRequest`
of named, still-undecoded input values; the data plane resolves model and
version, picks the signature (refusing `grad` when gradients are disabled),
validates every input against the signature's specs (names, dtypes, shapes
with -1 dimensions), applies the row limit, runs the model through the
version's batchers and returns the requested outputs. The envelope rules of
all three protocols live here, once.
"""

import asyncio
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.batching import Tensors
from app.config import Settings
from app.errors import InvalidInput, ModelNotFound, PayloadTooLarge
from app.predictor import GRAD_SIGNATURE, ModelCallError, SignatureRunner
from app.repository import ModelRepository
from app.served import ServedVersion
from app.tensors import check_shape, json_to_array, show_shape


@dataclass(slots=True)
class InferenceRequest:
    """One inference request, whatever protocol it came in.

    Attributes:
        model: The model named, or None for the default model.
        version: The version named, or None for the serving one.
        signature: The signature named, or None for the model's default.
        inputs: Input name -> a decoded JSON value or an already decoded array (binary data).
        outputs: Output names to return (in this order), or None for all.
        strict_types: Whether the body may hide booleans among numbers (see `json_to_array`).
    """

    model: str | None
    version: int | None
    signature: str | None
    inputs: dict[str, Any]
    outputs: list[str] | None = None
    strict_types: bool = True


@dataclass(slots=True)
class InferenceResult:
    """The outputs of one request and what computed them."""

    served: ServedVersion
    signature: str
    outputs: Tensors


class DataPlane:
    """Resolve, validate, batch and run requests against the model repository.

    Args:
        repository: The served models.
        settings: Limits (`MAX_BATCH_ROWS`) and the gradient policy (`ENABLE_GRAD`).
    """

    def __init__(self, repository: ModelRepository, settings: Settings) -> None:
        self.repository = repository
        self.settings = settings

    # -- resolution ----------------------------------------------------------

    def resolve(self, model: str | None, version: int | None) -> ServedVersion:
        """The served version a request names (see `ModelRepository.resolve`)."""
        return self.repository.resolve(model, version)

    def signatures(self, served: ServedVersion) -> dict[str, SignatureRunner]:
        """The signatures a request may name: all of them, less `grad` when it is disabled."""
        runners = served.runners
        if self.settings.enable_grad or GRAD_SIGNATURE not in runners:
            return runners
        return {name: runner for name, runner in runners.items() if name != GRAD_SIGNATURE}

    def runner(self, served: ServedVersion, signature: str | None) -> SignatureRunner:
        """The signature a request runs.

        Raises:
            InvalidInput: No such signature (or `grad` while gradients are disabled).
        """
        name = served.predictor.default_signature if signature in (None, "") else signature
        runners = self.signatures(served)
        if name not in runners:
            disabled = (
                " (gradients are disabled on this service: ENABLE_GRAD=false)"
                if name == GRAD_SIGNATURE and GRAD_SIGNATURE in served.runners
                else ""
            )
            raise InvalidInput(
                f'Serving signature name: "{str(name)[:64]}" not found in signature def'
                f"{disabled}; signatures are: {', '.join(sorted(runners))}."
            )
        return runners[name]

    def signatures_for_outputs(
        self, served: ServedVersion, outputs: list[str]
    ) -> dict[str, list[str]]:
        """Which signature answers each requested output (v2 picks signatures by outputs).

        Each output comes from the default signature when it has it, else from
        the first other signature (by name) that does, so one request may
        combine hard outputs and a `diffround.export` model's gradients.

        Returns:
            Signature -> its requested outputs, in request order.

        Raises:
            InvalidInput: An output no signature has; the message lists what there is.
        """
        default = served.predictor.default_signature
        runners = self.signatures(served)
        order = [default, *sorted(name for name in runners if name != default)]
        plan: dict[str, list[str]] = {}
        for output in outputs:
            owner = next((name for name in order if output in runners[name].outputs), None)
            if owner is None:
                raise InvalidInput(self._unknown_output(served, output))
            plan.setdefault(owner, []).append(output)
        return plan

    def _unknown_output(self, served: ServedVersion, output: str) -> str:
        runners = self.signatures(served)
        default = served.predictor.default_signature
        others = [name for name in runners if name != default]
        message = (
            f"Unknown output '{output[:64]}': outputs are {', '.join(runners[default].outputs)}"
        )
        if others:
            message += f" (and those of signatures {', '.join(sorted(others))})"
        if GRAD_SIGNATURE in served.runners and GRAD_SIGNATURE not in runners:
            message += "; gradient outputs are disabled (ENABLE_GRAD=false)"
        return message + "."

    # -- validation ----------------------------------------------------------

    def check_rows(self, rows: int) -> None:
        """Refuse a batch over `MAX_BATCH_ROWS` (before any conversion work)."""
        limit = self.settings.max_batch_rows
        if rows > limit:
            raise PayloadTooLarge(
                f"Batch of {rows} rows is over the limit of {limit} rows "
                "(MAX_BATCH_ROWS); split it into smaller requests."
            )

    def prepare(
        self, runner: SignatureRunner, inputs: dict[str, Any], *, strict_types: bool = True
    ) -> Tensors:
        """Validate and convert a request's inputs for one signature.

        Args:
            runner: The signature.
            inputs: Input name -> decoded JSON value or array.
            strict_types: See `json_to_array`.

        Returns:
            One array per signature input.

        Raises:
            InvalidInput: A missing or unknown input, a wrong dtype or shape, or
                batch-major inputs with different row counts.
            PayloadTooLarge: More rows than `MAX_BATCH_ROWS`.
        """
        expected = runner.inputs
        if inputs.keys() != expected.keys():
            missing = [name for name in expected if name not in inputs]
            if missing:
                raise InvalidInput(
                    f"Missing input '{missing[0]}': the signature takes {_describe_inputs(runner)}."
                )
            unknown = next(name for name in inputs if name not in expected)
            raise InvalidInput(
                f"Unknown input '{str(unknown)[:64]}': the signature takes "
                f"{_describe_inputs(runner)}."
            )
        # Rows are counted before any conversion, so an oversized batch costs no work.
        limit = self.settings.max_batch_rows
        for name, value in inputs.items():
            if isinstance(value, list):
                if len(value) <= limit:
                    continue
                shape = expected[name].shape
                if shape is not None and len(shape) >= 2 and not isinstance(value[0], list):
                    continue  # not a list of rows: the shape check refuses it
            elif not isinstance(value, np.ndarray) or value.ndim == 0 or len(value) <= limit:
                continue
            if expected[name].batched:
                self.check_rows(len(value))
        arrays: Tensors = {}
        for name, spec in expected.items():
            value = inputs[name]
            what = f"Input '{name}'"
            if isinstance(value, np.ndarray):
                if value.dtype != spec.dtype:
                    raise InvalidInput(
                        f"{what} has dtype {value.dtype.name}, "
                        f"the signature takes {spec.dtype_name}."
                    )
                if runner.strict_shapes:
                    check_shape(value, spec, what)
                arrays[name] = value
            else:
                arrays[name] = json_to_array(
                    value,
                    spec,
                    what=what,
                    strict_shape=runner.strict_shapes,
                    strict_types=strict_types,
                )
        counts = [
            (name, array.shape[0])
            for name, array in arrays.items()
            if array.ndim >= 1 and expected[name].batched
        ]
        if counts:
            rows = counts[0][1]
            if any(count != rows for _, count in counts):
                shown = ", ".join(f"'{n}' {count}" for n, count in counts)
                raise InvalidInput(
                    f"Inputs have different numbers of rows ({shown}): give each the same."
                )
            if rows == 0:
                raise InvalidInput("Empty batch: the inputs have no rows; send at least one row.")
        return arrays

    # -- inference -------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Run one request end to end.

        Raises:
            ModelNotFound, ModelNotReady: Resolution failed.
            InvalidInput: Validation failed, an output is unknown or repeated, or
                the model refused the inputs at call time.
            PayloadTooLarge: Too many rows.
        """
        served = self.resolve(request.model, request.version)
        runner = self.runner(served, request.signature)
        return await self.infer_on(
            served, runner, request.inputs, request.outputs, strict_types=request.strict_types
        )

    async def infer_on(
        self,
        served: ServedVersion,
        runner: SignatureRunner,
        inputs: dict[str, Any],
        outputs: list[str] | None = None,
        *,
        strict_types: bool = True,
    ) -> InferenceResult:
        """`infer` for a codec that already resolved the version and picked the signature.

        Resolving once per request also keeps every part of a request on one
        version while a new one is swapped in.
        """
        if outputs is not None:
            repeated = {name for name in outputs if outputs.count(name) > 1}
            if repeated:
                raise InvalidInput(
                    f"Output '{sorted(repeated)[0][:64]}' is requested more than once: "
                    "name each output once."
                )
            unknown = [name for name in outputs if name not in runner.outputs]
            if unknown:
                raise InvalidInput(
                    f"Unknown output '{unknown[0][:64]}': signature '{runner.name}' has outputs "
                    f"{', '.join(runner.outputs)}."
                )
        arrays = self.prepare(runner, inputs, strict_types=strict_types)
        result = await self.run(served, runner.name, arrays)
        if outputs is not None:
            result = {name: result[name] for name in outputs}
        return InferenceResult(served, runner.name, result)

    async def run(self, served: ServedVersion, signature: str, arrays: Tensors) -> Tensors:
        """Call a signature on validated arrays; the model's own refusals become 400s."""
        try:
            return await served.call(signature, arrays)
        except ModelCallError as exc:
            raise InvalidInput(f"The model refused the input: {exc}") from None

    async def run_both(
        self, served: ServedVersion, first: tuple[str, Tensors], second: tuple[str, Tensors]
    ) -> tuple[Tensors, Tensors]:
        """Two signature calls `(signature, arrays)` begun together (`ServedVersion.start`:
        batched calls share one turn of the event loop); refusals become 400s as in `run`.
        When one fails or the request is cancelled, the other is cancelled or its outcome
        dropped."""
        pending = [served.start(*first), served.start(*second)]
        try:
            return await pending[0], await pending[1]
        except ModelCallError as exc:
            raise InvalidInput(f"The model refused the input: {exc}") from None
        finally:
            for call in pending:
                _discard(call)

    def require_grad(self, served: ServedVersion) -> None:
        """Refuse gradient requests when disabled or when the model was not exported for them.

        Raises:
            ModelNotFound: `ENABLE_GRAD=false`, or the version has no `grad` map.
        """
        if not self.settings.enable_grad:
            raise ModelNotFound("/grad is disabled on this service (ENABLE_GRAD=false).")
        if served.info.grad is None:
            raise ModelNotFound(
                f"Model '{served.name}' version {served.version} has no gradients to serve: it "
                "was not exported by diffround.export (no 'grad' signature described in "
                "assets.extra/diffround.json)."
            )


def _discard(call: Awaitable[Tensors]) -> None:
    """Drop a started call nobody will await: cancel a pending future, mark a finished
    one's error as seen (asyncio would log it), close a coroutine never awaited."""
    if isinstance(call, asyncio.Future):
        if not call.done():
            call.cancel()
        elif not call.cancelled():
            call.exception()
    elif inspect.iscoroutine(call):
        call.close()


def _describe_inputs(runner: SignatureRunner) -> str:
    return ", ".join(
        f"'{name}' {spec.dtype_name} {show_shape(spec.shape)}"
        for name, spec in runner.inputs.items()
    )
