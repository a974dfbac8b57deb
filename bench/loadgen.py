"""The load generator: `wrk` (one thread, pinned to its own core) with bench/post.lua."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import BENCH_DIR, CACHE_DIR, CLIENT_CPU, base_env, pinned

LUA = BENCH_DIR / "post.lua"


@dataclass
class Load:
    """One wrk run's outcome."""

    server: str
    path: str
    rows: int
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    #: The server's CPU time (user + system, its process and children) per request: a cost
    #: that other work on the machine inflates much less than it deflates req/s.
    cpu_us_per_request: float | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: run `make system-deps` (Debian package wrk)")
    return path


def body_file(name: str, body: bytes) -> Path:
    """Store a request body where post.lua reads it."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"body-{name}.json"
    path.write_bytes(body)
    return path


def run_wrk(
    server: str,
    url: str,
    body: Path,
    *,
    rows: int,
    connections: int,
    seconds: float,
    cpus: str | None = CLIENT_CPU,
    timeout_s: float = 5.0,
    server_pid: int | None = None,
) -> Load:
    """Drive `url` with `connections` keep-alive connections for `seconds` (bounded)."""
    argv = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA),
        url,
    ]
    cpu_before = _cpu_seconds(server_pid)
    result = subprocess.run(
        pinned(argv, cpus),
        env=base_env(WRK_BODY_FILE=str(body)),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
    data = json.loads(line[len("BENCH_JSON ") :])
    cpu_used = _cpu_seconds(server_pid) - cpu_before
    duration = data["duration_us"] / 1e6
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    return Load(
        server=server,
        path=url.split("/", 3)[-1],
        rows=rows,
        connections=connections,
        seconds=round(duration, 2),
        requests=data["requests"],
        rps=data["requests"] / duration if duration > 0 else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors,
        cpu_us_per_request=(
            round(cpu_used / data["requests"] * 1e6, 1)
            if server_pid is not None and data["requests"]
            else None
        ),
    )


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children (0 when pid is None)."""
    if pid is None:
        return 0.0
    import psutil

    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.Error:
        return 0.0
