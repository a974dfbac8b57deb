"""Where the service's time goes: py-spy sampling the worker under 32-connection 1-row load."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench.common import CACHE_DIR, CLIENT_CPU, Server
from bench.loadgen import run_wrk

#: (bucket, test on a frame's text), checked from the innermost frame outwards:
#: a sample goes to the first bucket any of its frames matches.
BUCKETS = (
    ("model call (TensorFlow, TFLite)", ("tensorflow/", "app/predictor.py", "app/runtimes.py")),
    (
        "request parsing + validation (orjson, NumPy)",
        ("app/validation.py", "app/tensors.py", "app/dataplane.py", "_parse (app/codecs/"),
    ),
    (
        "answer building + JSON encoding",
        ("app/codecs/", "app/encoding.py", "app/interpret.py", "app/limits.py", "orjson"),
    ),
    ("fast lane (plain ASGI dispatch)", ("app/fastlane.py", "app/main.py")),
    (
        "service middleware (request id, metrics, logs, limits)",
        ("prometheus_client", "app/middleware.py", "logging/"),
    ),
    ("FastAPI/Starlette routing, dependencies", ("fastapi/", "starlette/")),
    ("uvicorn protocol (httptools)", ("uvicorn/",)),
    ("batcher + event loop", ("app/batching.py", "app/served.py", "asyncio/", "uvloop")),
)


def py_spy() -> str | None:
    """The py-spy executable next to this Python (the `bench` extra), if installed."""
    for candidate in (str(Path(sys.executable).parent / "py-spy"), shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def summarize(raw: Path, top: int = 15) -> dict:
    """Self time per function and inclusive time per bucket from py-spy's collapsed stacks."""
    self_time: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        for frame in reversed(frames):
            bucket = next((b for b, keys in BUCKETS if any(k in frame for k in keys)), None)
            if bucket is not None:
                buckets[bucket] += count
                break
        else:
            buckets["other"] += count
    return {
        "samples": total,
        "buckets": [(name, round(100 * n / total, 1)) for name, n in buckets.most_common()],
        "self_top": [(frame, round(100 * n / total, 1)) for frame, n in self_time.most_common(top)],
    }


def record(
    server: Server,
    url: str,
    body: Path,
    *,
    seconds: float,
    connections: int = 32,
    name: str = "service",
    gil: bool = True,
) -> dict:
    """Sample the server's process (py-spy, on the client's core) while wrk drives it.

    With `gil` only samples where a thread holds the GIL count (idle time left out);
    without it, every thread's Python stack while it is not idle (so work in
    threads off the event loop and TensorFlow's calls count too).
    """
    executable = py_spy()
    if executable is None:
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    raw = CACHE_DIR / f"profile-{name}.txt"
    argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        executable,
        "record",
        "--pid",
        str(server.process.pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        "200",
        "--nonblocking",
        *(["--gil"] if gil else []),
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    err = b""
    for _ in range(2):  # py-spy sometimes fails to attach at once (retry_new): one more try
        raw.unlink(missing_ok=True)
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        loader = threading.Thread(
            target=run_wrk,
            args=(server.name, url, body),
            kwargs={"rows": 1, "connections": connections, "seconds": seconds + 1},
        )
        loader.start()
        _, err = spy.communicate(timeout=seconds + 60)
        loader.join()
        if spy.returncode == 0 and raw.exists():
            break
    else:
        text = err.decode(errors="replace")
        return {"skipped": f"py-spy failed: {text[:300]} ... {text[-200:]}"}
    return {**summarize(raw), "connections": connections, "gil": gil, "path": url.split("/", 3)[-1]}
