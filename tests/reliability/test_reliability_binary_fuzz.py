"""Fuzzing the v2 binary tensor extension over TCP: random headers and bytes, never a 5xx.

Hypothesis draws, for every v2 datatype (and some that are not), a JSON
header (`name`, `shape`, `datatype`, `parameters.binary_data_size`, output
requests with `binary_data`), the raw bytes after it (the right length, a few
bytes short or long, random or NaN/Infinity patterns) and the
`Inference-Header-Content-Length` value (exact, off by some, negative, not a
number, thousands of digits, missing). Every answer must be a 2xx or a 4xx
with the protocol's error body, never a 5xx; a well-formed FP32 request with
finite values must answer exactly what the SavedModel answers in this
process. These are HTTP-level claims: they hold for any data plane behind
the v2 route.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import rel_support as support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "digit-bits"
V2 = f"/v2/models/{MODEL}/infer"
EXAMPLES = 400
WIDTH = support.INPUT_WIDTH
#: Every datatype of the v2 protocol with its item size (BYTES: length-prefixed, no fixed size).
DATATYPES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
    "BYTES": 1,
}
#: The default model's input and output names (Makefile TRAIN_ARGS); the test checks them
#: against the SavedModel, and asks for every grad key the SavedModel has besides.
INPUT, OUTPUT = "inputs", "bits"
OUTPUT_NAMES = [OUTPUT, "outputs", "hard", "surrogate"]
SPECIAL_FLOATS = np.array([np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1e-45], np.float32)


@st.composite
def well_formed_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A correct binary FP32 request of 1-4 digit rows (its answer is compared)."""
    rows = support.digit_rows(draw(st.integers(1, 4)), draw(st.integers(0, 99)))
    tail = rows.astype("<f4").tobytes()
    tensor = {
        "name": INPUT,
        "shape": list(rows.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(tail)},
    }
    document: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        document["outputs"] = [{"name": OUTPUT}]
    header = json.dumps(document).encode()
    return {
        "body": header + tail,
        "length": str(len(header)),
        "content_type": draw(st.sampled_from(["application/octet-stream", "application/json"])),
        "well_formed": True,
        "rows": rows,
    }


@st.composite
def fuzzed_requests(draw: st.DrawFn) -> dict[str, Any]:
    """One binary v2 request: JSON header, binary tail, header-length value, well-formed flag."""
    datatype = draw(st.sampled_from([*DATATYPES, "FP8", "fp32", "", "STRING"]))
    rows = draw(st.integers(1, 4))
    width = draw(st.sampled_from([WIDTH, WIDTH, WIDTH - 1, 1, 0]))
    shape: Any = draw(
        st.sampled_from([[rows, width], [rows, width], [rows * width], [rows, width, 1], []])
        | st.lists(st.integers(-3, 2**40), max_size=3)
        | st.sampled_from(["1,64", None, [[rows], [width]], [1.0, 64.0], [True, 64]])
    )
    size = rows * width * DATATYPES.get(datatype, 4)
    declared: Any = draw(
        st.sampled_from([size, size, size - 1, size + 4, 0, -size])
        | st.sampled_from([None, "256", 2**64, 1.5, True, [size]])
    )
    tail_length = max(0, size + draw(st.sampled_from([0, 0, 0, -1, 3, -size])))
    pattern = draw(st.sampled_from(["digits", "random", "special"]))
    if pattern == "digits" and datatype == "FP32":
        tail = support.digit_rows(rows, draw(st.integers(0, 99))).reshape(-1)
        tail = np.resize(tail.astype("<f4"), tail_length // 4).tobytes()
    elif pattern == "special":
        tail = np.resize(SPECIAL_FLOATS, max(1, tail_length // 4)).astype("<f4").tobytes()
    else:
        tail = draw(st.binary(min_size=tail_length, max_size=tail_length))
    tail = tail[:tail_length]
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from([INPUT, INPUT, "x", ""])),
        "shape": shape,
        "datatype": datatype,
    }
    parameters = draw(st.sampled_from(["declared", "declared", "none", "data too"]))
    if parameters != "none":
        tensor["parameters"] = {} if declared is None else {"binary_data_size": declared}
    if parameters == "data too":
        tensor["data"] = [0.0] * (rows * width)
    outputs = draw(
        st.none()
        | st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(OUTPUT_NAMES)},
                optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})},
            ),
            max_size=3,
        )
    )
    document: dict[str, Any] = {"inputs": [tensor]}
    if outputs is not None:
        document["outputs"] = outputs
    if draw(st.booleans()):
        document["parameters"] = {"binary_data_output": draw(st.booleans())}
    header = json.dumps(document).encode()
    length = draw(
        st.sampled_from(["exact"] * 4 + ["short", "long", "negative", "text", "huge", "missing"])
    )
    length_value = {
        "exact": str(len(header)),
        "short": str(max(0, len(header) - 3)),
        "long": str(len(header) + len(tail) + 1),
        "negative": f"-{len(header)}",
        "text": f"{len(header)} bytes",
        "huge": "9" * 5000,
        "missing": None,
    }[length]
    well_formed = (
        datatype == "FP32"
        and pattern == "digits"
        and tensor["name"] == INPUT
        and shape == [rows, width]
        and width == WIDTH
        and parameters == "declared"
        and declared == size
        and tail_length == size
        and length == "exact"
        and (outputs is None or all(o["name"] == OUTPUT for o in outputs))
        and "parameters" not in document
    )
    return {
        "body": header + tail,
        "length": length_value,
        "content_type": draw(st.sampled_from(["application/octet-stream", "application/json"])),
        "well_formed": well_formed,
        "rows": np.frombuffer(tail, "<f4").reshape(rows, width) if well_formed else None,
    }


def test_binary_extension_fuzzing_gives_no_5xx_and_exact_answers(
    live: support.ServerProcess, reference: support.Reference
) -> None:
    client = live.client()
    assert (reference.input_name, reference.outputs) == (INPUT, (OUTPUT,))
    OUTPUT_NAMES[:] = [OUTPUT, *reference.grad_keys, "outputs", "hard"]  # drawn from each time
    statuses: Counter[int] = Counter()
    checked = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=st.one_of(fuzzed_requests(), fuzzed_requests(), well_formed_requests()))
    def run(request: dict[str, Any]) -> None:
        nonlocal checked
        headers = {"content-type": request["content_type"]}
        if request["length"] is not None:
            headers["inference-header-content-length"] = request["length"]
        response = client.post(V2, content=request["body"], headers=headers)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert isinstance(response.json().get("error"), str), response.text[:300]
        if request["well_formed"]:
            assert response.status_code == 200, response.text[:300]
            got = support.v2_tensors(response.json())
            support.assert_outputs_equal(got, reference.predict(request["rows"]), "binary")
            checked += 1

    run()
    support.record("binary extension fuzz requests", sum(statuses.values()))
    support.record(
        "binary extension fuzz status codes",
        ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())),
    )
    assert sum(statuses.values()) >= EXAMPLES
    assert checked >= 5, (checked, statuses)  # the well-formed share was compared
    assert client.get("/readyz").status_code == 200
