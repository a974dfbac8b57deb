"""Per-request response budget: refuse an answer that would be too large before building it.

The codecs estimate what they are about to encode (`json_bytes_bound`,
`binary_bytes`) and call `check_response_budget` first, so one small request
(a 222 KB body asking for one output 10000 times, say) cannot make the
service build and buffer a response of hundreds of megabytes.
"""

import functools
import math
from contextvars import ContextVar

import numpy as np

from app.config import Settings
from app.errors import ResponseTooLarge

#: The current request's response budget in bytes (set per request by
#: `ResponseBudgetMiddleware`; None outside a request): `NumpyJSONResponse`
#: checks every answer against it before encoding, a backstop behind the codecs'
#: own earlier `check_response_budget` calls.
RESPONSE_BUDGET: ContextVar[int | None] = ContextVar("response_budget", default=None)

#: Most characters orjson writes for one float or bool, with its separator: float32
#: `-1.1754944e-38,` (15; float16 is written through float32), float64
#: `-2.2250738585072014e-308,` (25), bool `false,` (6). Integers: their widest value.
_JSON_CHARS = {("f", 2): 15, ("f", 4): 15, ("f", 8): 25, ("b", 1): 6}


@functools.lru_cache(maxsize=64)
def _chars_per_value(dtype: np.dtype) -> int:
    known = _JSON_CHARS.get((dtype.kind, dtype.itemsize))
    if known is not None:
        return known
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return max(len(str(info.min)), len(str(info.max))) + 1
    return 25  # anything else a codec might write: as wide as a double


def json_bytes_bound(shape: tuple[int, ...] | list[int], dtype: np.dtype | type) -> int:
    """An upper bound on the JSON bytes of a numeric tensor (values, separators, brackets).

    Args:
        shape: The tensor's shape (every dimension known).
        dtype: Its NumPy dtype.

    Returns:
        At most this many bytes: `n * chars(dtype) + 3 * (number of lists)`.
    """
    dtype = np.dtype(dtype)
    count = math.prod(int(size) for size in shape)
    per_value = _chars_per_value(dtype)
    # Lists: 1 + s0 + s0*s1 + ... (every level but the last), each two brackets and a comma.
    lists, width = 1, 1
    for size in shape[:-1]:
        width *= int(size)
        lists += width
    return count * per_value + 3 * lists


@functools.lru_cache(maxsize=1024)
def array_json_bound(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """`json_bytes_bound` of an array's shape and dtype, cached (answers repeat their shapes)."""
    return json_bytes_bound(shape, dtype)


def binary_bytes(shape: tuple[int, ...] | list[int], dtype: np.dtype | type) -> int:
    """The exact size of a tensor in the v2 binary extension (raw little-endian values)."""
    count = math.prod(int(size) for size in shape)
    return count * np.dtype(dtype).itemsize


def check_response_budget(n_bytes_estimate: int, settings: Settings) -> None:
    """Refuse, before encoding, an answer estimated to be over `MAX_RESPONSE_BYTES`.

    Args:
        n_bytes_estimate: What the codec is about to write: the sum of
            `json_bytes_bound` (JSON) or `binary_bytes` (binary) over the outputs.
        settings: The service settings (`max_response_bytes`).

    Raises:
        ResponseTooLarge: 413 on every protocol, naming the estimate and the setting.
    """
    check_response_bytes(n_bytes_estimate, settings.max_response_bytes)


def check_response_bytes(n_bytes_estimate: int, limit: int | None) -> None:
    """`check_response_budget` with the limit itself (None: no limit).

    Raises:
        ResponseTooLarge: `n_bytes_estimate` is over `limit`.
    """
    if limit is not None and n_bytes_estimate > limit:
        raise ResponseTooLarge(
            f"The response would be about {n_bytes_estimate} bytes, over the limit of "
            f"{limit} bytes (MAX_RESPONSE_BYTES): ask for fewer outputs or rows per request."
        )
