"""What every part of the benchmark shares: paths, pinned processes, readiness polling."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
CACHE_DIR = REPO_ROOT / ".cache" / "bench"
PYTHON = sys.executable

#: The load generator runs on one core, the server under test on the other.
CLIENT_CPU = "0"
SERVER_CPU = "1"


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every process the benchmark starts (TF's C++ chatter off)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    env.pop("WORKERS", None)
    env.update(extra)
    return env


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """`argv` run under `taskset -c cpus` (unpinned when cpus is None)."""
    return ["taskset", "-c", cpus, *argv] if cpus is not None else list(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """GET `url`; its status code, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def post_json(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST a JSON body; (status, response body)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """A server process started by the benchmark, pinned (or not), on 127.0.0.1:port."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    env: dict[str, str]
    cpus: str | None = SERVER_CPU
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    ready_streak: int = 1
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = CACHE_DIR / f"server-{self.name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            pinned(self.argv, self.cpus),
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(
        self, timeout_s: float = 180.0, interval_s: float = 0.01, consecutive: int = 1
    ) -> float:
        """Poll `ready_path` until 200 (`consecutive` times in a row, each on a new connection).

        Returns:
            Seconds from spawn to the first 200 of the last run of `consecutive` 200s (with
            several workers each new connection may reach another one, so a long run of 200s
            means every worker is ready).
        """
        assert self.process is not None
        deadline = time.perf_counter() + timeout_s
        streak_started: float | None = None
        streak = 0
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); {self.tail()}")
            if http_status(self.url + self.ready_path, timeout=0.5) == 200:
                if streak == 0:
                    streak_started = time.perf_counter()
                streak += 1
                if streak >= consecutive:
                    assert streak_started is not None
                    self.ready_after_s = streak_started - self.started_at
                    return self.ready_after_s
                continue
            streak = 0
            time.sleep(interval_s)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s; {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-chars:].decode(errors="replace")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


@contextlib.contextmanager
def running(servers: Sequence[Server], timeout_s: float = 240.0) -> Iterator[Sequence[Server]]:
    """Start servers (all at once), wait until each is ready, stop them all at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout_s, consecutive=server.ready_streak)
        yield servers
    finally:
        for server in servers:
            server.stop()


def run_json(argv: Sequence[str], cpus: str | None, timeout_s: float, env: dict[str, str]) -> dict:
    """Run a helper that prints one `BENCH_JSON {...}` line; return that object."""
    import json

    result = subprocess.run(
        pinned(argv, cpus),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    raise RuntimeError(
        f"{shlex.join(argv)} exited {result.returncode} without a result:\n"
        f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    )
