"""Large answers are encoded in pieces to exactly orjson's bytes, and over budget refused."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from app.api.common import NumpyJSONResponse
from app.encoding import CHUNK_VALUES, OFFLOAD_VALUES, array_footprint, encode_in_pieces
from app.errors import ResponseTooLarge
from app.limits import RESPONSE_BUDGET


def orjson_reference(content: object) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize(
    "shape", [(1,), (CHUNK_VALUES + 7,), (3000, 64), (1000, 4, 64), (5, CHUNK_VALUES * 2), (0, 3)]
)
def test_pieces_equal_one_orjson_call(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    array = rng.standard_normal(shape).astype(np.float32)
    content = {
        "model": "m",
        "version": 3,
        "outputs": [{"name": "a", "data": array, "shape": list(shape)}, {"name": "b", "x": None}],
        "hard": (array > 0).astype(np.float32),
        "tuple": (1, array[:2]),
        "numbers": [1.5, 2, 3],
    }
    assert encode_in_pieces(content) == orjson_reference(content)


def test_footprint_counts_repeated_arrays_and_bounds_their_bytes() -> None:
    array = np.full((10, 4), -1.1754944e-38, np.float32)
    content = {"outputs": [{"data": array}] * 3, "other": [1.0, 2.0]}
    values, bound = array_footprint(content)
    assert values == 3 * array.size + 2
    # Every array's JSON (three times) and the numbers' fit in the bound, with little slack.
    written = 3 * len(orjson_reference(array)) + len(b"1.0,2.0")
    assert written <= bound <= written + 3 * array.size + 64


def _send_and_collect(response: NumpyJSONResponse) -> tuple[dict, bytes]:
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(response({"type": "http"}, receive, send))
    headers = dict(messages[0]["headers"])
    return headers, b"".join(m.get("body", b"") for m in messages[1:])


def test_a_large_answer_is_deferred_and_sent_whole_with_its_length() -> None:
    array = np.random.default_rng(0).random((OFFLOAD_VALUES // 64 + 1, 64)).astype(np.float32)
    content = {"outputs": array}
    response = NumpyJSONResponse(content)
    assert response.body == b""  # not encoded on the loop, in the route
    headers, body = _send_and_collect(response)
    assert body == orjson_reference(content)
    assert int(headers[b"content-length"]) == len(body)


def test_a_small_answer_is_encoded_at_once() -> None:
    content = {"outputs": np.ones((2, 4), np.float32)}
    assert NumpyJSONResponse(content).body == orjson_reference(content)


def test_an_answer_over_the_request_budget_is_refused_before_encoding() -> None:
    array = np.zeros((1000, 64), np.float32)
    token = RESPONSE_BUDGET.set(100_000)
    try:
        NumpyJSONResponse({"a": array[:10]})
        with pytest.raises(ResponseTooLarge, match="MAX_RESPONSE_BYTES"):
            NumpyJSONResponse({"outputs": [{"data": array}] * 10})
    finally:
        RESPONSE_BUDGET.reset(token)
