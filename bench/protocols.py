"""Request bodies and answers in the three protocols, for any model (from its `ModelSpec`).

- native (`POST /predict`, `/grad`, and the naive server): `{"inputs": <tensor>}` for a
  one-input model, `{"inputs": {"<input>": <tensor>, ...}}` otherwise; the answer's
  `outputs` is an object of named tensors.
- TF Serving v1 (`:predict`, the service's and KServe's): row form, `{"instances": rows}`
  (one object per row naming every input when there are several); one output answers
  `predictions` as rows, several as one object per row.
- Open Inference Protocol v2 (`/infer`, the service's and Triton's): one JSON tensor per
  input (`name`, `shape`, `datatype`, flat `data`); the answer's `outputs` likewise.

`answer_arrays` turns any of the answers back into output name -> NumPy array in the
output's declared dtype, so that answers from different servers compare exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.tensors import V2_DATATYPES
from bench.modelspec import ModelSpec

NATIVE, V1, V2 = "native", "v1", "v2"


def body(protocol: str, spec: ModelSpec, batch: Mapping[str, np.ndarray]) -> bytes:
    """The JSON request body for `batch` (input name -> array with a batch dimension)."""
    names = spec.input_names
    if protocol == NATIVE:
        if len(names) == 1:
            return json.dumps({"inputs": batch[names[0]].tolist()}).encode()
        return json.dumps({"inputs": {n: batch[n].tolist() for n in names}}).encode()
    if protocol == V1:
        if len(names) == 1:
            return json.dumps({"instances": batch[names[0]].tolist()}).encode()
        count = len(batch[names[0]])
        rows = [{n: batch[n][i].tolist() for n in names} for i in range(count)]
        return json.dumps({"instances": rows}).encode()
    if protocol == V2:
        tensors = [
            {
                "name": t.name,
                "shape": list(batch[t.name].shape),
                "datatype": V2_DATATYPES[t.dtype],
                "data": batch[t.name].reshape(-1).tolist(),
            }
            for t in spec.inputs
        ]
        return json.dumps({"inputs": tensors}).encode()
    raise ValueError(f"unknown protocol {protocol!r}")


def answer_arrays(protocol: str, spec: ModelSpec, document: Mapping[str, Any]) -> dict:
    """Output name -> array (declared dtype) from an answer in `protocol`."""
    dtypes = {t.name: t.numpy_dtype for t in spec.outputs}
    if protocol == NATIVE:
        given = document["outputs"]
        if not isinstance(given, Mapping):
            raise ValueError(f"native answer's outputs is not an object: {str(given)[:200]}")
        return {n: np.asarray(v, dtype=dtypes.get(n)) for n, v in given.items()}
    if protocol == V1:
        rows = document["predictions"]
        if len(spec.outputs) == 1:
            (only,) = spec.outputs
            return {only.name: np.asarray(rows, dtype=only.numpy_dtype)}
        return {n: np.asarray([row[n] for row in rows], dtype=d) for n, d in dtypes.items()}
    if protocol == V2:
        out = {}
        for tensor in document["outputs"]:
            name = tensor["name"]
            data = np.asarray(tensor["data"], dtype=dtypes.get(name))
            out[name] = data.reshape(tensor["shape"])
        return out
    raise ValueError(f"unknown protocol {protocol!r}")


def differences(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> list[str]:
    """What differs between two answers (empty when every output has the same bytes)."""
    problems = []
    for name in sorted(set(expected) | set(got)):
        if name not in got:
            problems.append(f"{name!r} missing")
        elif name not in expected:
            problems.append(f"{name!r} unexpected")
        elif expected[name].shape != got[name].shape:
            problems.append(
                f"{name!r} shape {list(got[name].shape)} != {list(expected[name].shape)}"
            )
        elif expected[name].tobytes() != got[name].astype(expected[name].dtype).tobytes():
            problems.append(f"{name!r} values differ")
    return problems
