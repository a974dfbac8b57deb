"""The response budget: its size bounds hold for every dtype, and it refuses with 413."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.config import Settings
from app.errors import Protocol, ResponseTooLarge
from app.limits import binary_bytes, check_response_budget, json_bytes_bound

EXTREMES = {
    np.float32: [np.finfo(np.float32).min, -np.finfo(np.float32).tiny, -1.0 / 3, -1e-45, 0.0],
    np.float64: [np.finfo(np.float64).min, -np.finfo(np.float64).tiny, -1.0 / 3, -5e-324],
    np.float16: [np.finfo(np.float16).min, -np.finfo(np.float16).tiny, -1.0 / 3],
    np.int64: [np.iinfo(np.int64).min, -1, 0],
    np.int32: [np.iinfo(np.int32).min],
    np.uint64: [np.iinfo(np.uint64).max],
    np.uint8: [255],
    np.bool_: [False, True],
}


@pytest.mark.parametrize("dtype", list(EXTREMES))
@pytest.mark.parametrize("shape", [(1,), (3, 5), (2, 3, 4), (4, 1, 1, 2)])
def test_json_bound_is_an_upper_bound_and_tight_for_worst_values(
    dtype: type, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    worst = np.array(EXTREMES[dtype], dtype=dtype)
    values = worst[rng.integers(0, len(worst), shape)]
    encoded = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    bound = json_bytes_bound(shape, dtype)
    assert len(encoded) <= bound
    # Tight within a few bytes a value, for the dtype's longest value.
    size = max(
        len(orjson.dumps(np.full(shape, value, dtype=dtype), option=orjson.OPT_SERIALIZE_NUMPY))
        for value in worst
    )
    assert bound - size <= 4 * values.size + 2


def test_binary_size_is_exact() -> None:
    array = np.zeros((3, 7, 2), np.float32)
    assert binary_bytes(array.shape, array.dtype) == len(array.astype("<f4").tobytes())


def test_budget_passes_at_the_limit_and_refuses_above_with_413() -> None:
    settings = Settings(max_response_bytes=4096)
    check_response_budget(4096, settings)
    with pytest.raises(ResponseTooLarge, match="MAX_RESPONSE_BYTES") as caught:
        check_response_budget(4097, settings)
    assert all(caught.value.status_for(protocol) == 413 for protocol in Protocol)
    assert "4097" in caught.value.message


def test_the_issue_amplification_request_is_over_the_default_budget() -> None:
    # 10000 x input_grad of 4096 rows of a 16-output, 64-input model: far over 32 MiB.
    estimate = 10000 * json_bytes_bound((4096, 16, 64), np.float32)
    with pytest.raises(ResponseTooLarge):
        check_response_budget(estimate, Settings())
