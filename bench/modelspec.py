"""The model under test, described by its own signature: input and output names, dtypes, shapes.

Every request body the benchmark sends and every answer it compares is built from a
`ModelSpec`, never from constants: the service's `GET /models/{name}` (its
`signatures` and `examples`) gives it over HTTP (`from_service`), and a loaded
SavedModel gives the same in-process (`from_signature`, used by the in-process parts and
the peers). Rows come from the metadata's examples, cycled; a model without examples
gets deterministic random values in each input's `range` (metadata) or `[0, 1)`.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The signature the benchmark drives (every server's default).
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: its name, NumPy dtype name and shape (-1: variable)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row (the batch dimension dropped; variable dimensions as 1)."""
        return tuple(1 if d is None or d < 0 else d for d in self.shape[1:])

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """What a benchmark needs to know about the served model's default signature.

    Attributes:
        name: The model's name in the models root (and in every URL).
        inputs: The signature's inputs, in the order the service lists them.
        outputs: The signature's outputs.
        examples: One row per metadata example: input name -> nested list (no batch dim).
        ranges: Input name -> (low, high) from the metadata, where it declares one.
        gradients: Whether the model has a `grad` signature (then `/grad` is measured).
    """

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    examples: tuple[dict[str, Any], ...] = ()
    ranges: tuple[tuple[str, float, float], ...] = ()
    gradients: bool = False

    @classmethod
    def from_metadata(cls, name: str, document: Mapping[str, Any]) -> ModelSpec:
        """From the service's `GET /models/{name}` answer (metadata plus `signatures`)."""
        signature = (document.get("signatures") or {}).get(SIGNATURE)
        if signature is None:
            raise ValueError(f"model {name!r} has no {SIGNATURE!r} signature in its metadata")
        inputs = tuple(_tensor(t) for t in signature["inputs"])
        outputs = tuple(_tensor(t) for t in signature["outputs"])
        return cls(
            name=name,
            inputs=inputs,
            outputs=outputs,
            examples=_examples(document, inputs),
            ranges=_ranges(document),
            gradients="grad" in (document.get("signatures") or {}) and bool(document.get("grad")),
        )

    @classmethod
    def from_service(cls, url: str, name: str, timeout_s: float = 10.0) -> ModelSpec:
        """GET `{url}/models/{name}` and describe its default signature."""
        with urllib.request.urlopen(f"{url}/models/{name}", timeout=timeout_s) as response:
            return cls.from_metadata(name, json.loads(response.read()))

    @classmethod
    def from_signature(
        cls, name: str, function: Any, metadata: Mapping[str, Any] | None = None
    ) -> ModelSpec:
        """From a loaded SavedModel's concrete function (`loaded.signatures[...]`).

        Args:
            name: The model's name.
            function: A signature's concrete function: `structured_input_signature` gives
                the inputs, `structured_outputs` the outputs (TensorSpecs or tensors).
            metadata: `assets.extra/diffround.json` when present (examples, ranges).
        """
        metadata = metadata or {}
        specs = function.structured_input_signature[1]
        inputs = tuple(_from_tf(key, spec) for key, spec in sorted(specs.items()))
        outputs = tuple(
            _from_tf(key, spec) for key, spec in sorted(function.structured_outputs.items())
        )
        return cls(
            name=name,
            inputs=inputs,
            outputs=outputs,
            examples=_examples(metadata, inputs),
            ranges=_ranges(metadata),
            gradients=bool(metadata.get("grad")),
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def batch(self, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
        """`rows` rows for every input, in its dtype: the examples cycled, else random values."""
        out: dict[str, np.ndarray] = {}
        rng = np.random.default_rng(seed)
        ranges = {n: (lo, hi) for n, lo, hi in self.ranges}
        for spec in self.inputs:
            pool = [e[spec.name] for e in self.examples if spec.name in e]
            if pool:
                stacked = np.asarray(pool, dtype=spec.numpy_dtype)
                out[spec.name] = stacked[np.arange(rows) % len(pool)]
                continue
            low, high = ranges.get(spec.name, (0.0, 1.0))
            shape = (rows, *spec.row_shape)
            if spec.numpy_dtype.kind in "iu":
                values = rng.integers(math.floor(low), max(math.floor(high), 1) + 1, size=shape)
            elif spec.numpy_dtype.kind == "b":
                values = rng.integers(0, 2, size=shape)
            else:
                values = rng.uniform(low, high, size=shape)
            out[spec.name] = values.astype(spec.numpy_dtype)
        return out


def _tensor(doc: Mapping[str, Any]) -> TensorInfo:
    shape = tuple(-1 if d is None else int(d) for d in doc.get("shape") or ())
    return TensorInfo(str(doc["name"]), str(np.dtype(doc["dtype"])), shape)


def _from_tf(name: str, spec: Any) -> TensorInfo:
    dims = spec.shape.as_list() if spec.shape.rank is not None else [None]
    shape = tuple(-1 if d is None else int(d) for d in dims)
    return TensorInfo(name, str(np.dtype(spec.dtype.as_numpy_dtype)), shape)


def _examples(document: Mapping[str, Any], inputs: Sequence[TensorInfo]) -> tuple[dict, ...]:
    """The metadata's examples whose rows fit every input's row shape (others are dropped)."""
    kept = []
    for example in document.get("examples") or []:
        given = example.get("inputs") if isinstance(example, Mapping) else None
        if given is not None and not isinstance(given, Mapping) and len(inputs) == 1:
            given = {inputs[0].name: given}  # the older one-input form: a bare row
        if not isinstance(given, Mapping):
            continue
        try:
            rows = {t.name: np.asarray(given[t.name], dtype=t.numpy_dtype) for t in inputs}
        except (KeyError, TypeError, ValueError):
            continue
        if all(_fits(rows[t.name].shape, t.shape[1:]) for t in inputs):
            kept.append({name: row.tolist() for name, row in rows.items()})
    return tuple(kept)


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(
        d < 0 or d == s for s, d in zip(shape, declared, strict=True)
    )


def _ranges(document: Mapping[str, Any]) -> tuple[tuple[str, float, float], ...]:
    out = []
    for info in document.get("inputs") or []:
        bounds = info.get("range") if isinstance(info, Mapping) else None
        if isinstance(bounds, Sequence) and len(bounds) == 2:
            out.append((str(info["name"]), float(bounds[0]), float(bounds[1])))
    return tuple(out)
