"""Shared by the reliability tests: a real `python -m app` process, leak checks, figures.

Every test here talks TCP to a uvicorn process on 127.0.0.1 (never the ASGI
app in-process), and every response body it reads goes through
`check_no_leak`: no traceback, no filesystem path of this machine.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
INPUT_WIDTH = 64
#: The shared server's limits (small, so over-limit cases are cheap to send).
LIVE_MAX_BATCH_ROWS = 256
LIVE_MAX_BODY_BYTES = 1024 * 1024

#: Figures the tests measured, printed at the end of the session and written to docs/reliability.md.
FIGURES: dict[str, Any] = {}
#: Every response body the tests read, counted by where it came from.
CHECKED = Counter()
_CHECK_LOCK = threading.Lock()


def record(name: str, value: Any) -> None:
    """Store one measured figure (the latest value wins)."""
    FIGURES[name] = value


# -- leak checks ---------------------------------------------------------------

_LEAK_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    "site-packages",
    "dist-packages",
    str(REPO),
    str(Path(sys.executable).parent),
    # pytest's temporary directories (models roots, logs) live here.
    os.path.join(tempfile.gettempdir(), "pytest-of-"),
)
_extra_markers: set[str] = set()


def forbid_in_responses(text: str) -> None:
    """Add a string (e.g. a models root) that no response may contain."""
    if len(text) >= 4:
        _extra_markers.add(text)


def check_no_leak(body: bytes | str, where: str) -> None:
    """Fail when a response body holds a traceback or a filesystem path of this machine.

    Args:
        body: The response body.
        where: What answered (method and path), for the message and the count.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for marker in (*_LEAK_MARKERS, *_extra_markers):
        assert marker not in text, f"{where}: response leaks {marker!r}: {text[:500]}"
    with _CHECK_LOCK:
        CHECKED["responses"] += 1


def _check_response(response: httpx.Response) -> None:
    response.read()
    check_no_leak(response.content, f"{response.request.method} {response.request.url.path}")


async def _check_response_async(response: httpx.Response) -> None:
    await response.aread()
    check_no_leak(response.content, f"{response.request.method} {response.request.url.path}")


# -- the server process ----------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m app` on a free 127.0.0.1 port, with its log captured in a file.

    Args:
        models_root: `MODELS_ROOT`.
        log_path: Where stdout and stderr go (JSON log lines).
        **env: Further environment variables (`API_KEY`, `MAX_BODY_BYTES`, ...).
    """

    def __init__(self, models_root: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models_root = models_root
        self.log_path = log_path
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MODELS_ROOT": str(models_root),
            "POLL_INTERVAL_S": "0.5",
            "API_KEY": "",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        forbid_in_responses(str(models_root))
        self._log = log_path.open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._clients: list[httpx.Client] = []

    # lifecycle

    def _wait_for(self, path: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return time.monotonic() - self.started_at
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered 200 in {timeout_s} s:\n{self.log_tail()}")

    def wait_live(self, timeout_s: float = 180.0) -> float:
        """Wait for `/healthz` 200; returns seconds since start."""
        return self._wait_for("/healthz", timeout_s)

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Wait for `/readyz` 200; returns seconds since start."""
        return self._wait_for("/readyz", timeout_s)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it lingers; returns the exit code."""
        for client in self._clients:
            client.close()
        try:
            if self.process.poll() is None:
                self.terminate()
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None
        finally:
            self._log.close()

    # clients

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client whose every response is checked for leaks."""
        kwargs.setdefault("timeout", 30.0)
        client = httpx.Client(
            base_url=self.url, event_hooks={"response": [_check_response]}, **kwargs
        )
        self._clients.append(client)
        return client

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An async httpx client whose every response is checked for leaks (caller closes it)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(
            base_url=self.url, event_hooks={"response": [_check_response_async]}, **kwargs
        )

    # introspection

    def rss_bytes(self) -> int:
        """Resident memory of the server process (and any children: uvicorn workers)."""
        process = psutil.Process(self.process.pid)
        return process.memory_info().rss + sum(
            child.memory_info().rss for child in process.children(recursive=True)
        )

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the process wrote so far."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def wait_log(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Wait for a JSON log record matching `predicate`; returns it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for entry in self.log_records():
                if predicate(entry):
                    return entry
            time.sleep(0.2)
        raise AssertionError(f"no log record for {what} in {timeout_s} s:\n{self.log_tail()}")


# -- raw HTTP (what httpx will not send) ---------------------------------------------


def raw_request(
    port: int, data: bytes, timeout_s: float = 20.0
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection, read one HTTP/1.1 response (Connection: close).

    Returns:
        Status code, lower-cased headers, body.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (with Content-Length, or until close) from a socket."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), f"not an HTTP response: {buffer[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        body += chunk
    check_no_leak(body, f"raw response {status}")
    return status, headers, body[: length if length >= 0 else None]


# -- the model, in this process -------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _loaded(path: str) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(path)


class Reference:
    """A version directory loaded with `tf.saved_model.load` in the test process."""

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        self._model = _loaded(str(version_dir))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        x = tf.constant(np.asarray(rows, np.float32))
        return self._model.signatures["serving_default"](inputs=x)["outputs"].numpy()

    def grad(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        x = tf.constant(np.asarray(rows, np.float32))
        return {k: v.numpy() for k, v in self._model.signatures["grad"](inputs=x).items()}


def digit_rows(n: int, seed: int) -> np.ndarray:
    """`n` rows of 64 grey levels 0..16 (float32), some integer, some fractional."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 17, (n, INPUT_WIDTH)).astype(np.float32)
    rows[::2] += rng.random((len(rows[::2]), INPUT_WIDTH)).astype(np.float32)
    return np.minimum(rows, 16.0)


def assert_grad_close(got: dict[str, Any], expected: dict[str, np.ndarray], where: str) -> None:
    """The grad outputs of a response equal the reference (hard exactly, the rest to 1e-5)."""
    np.testing.assert_array_equal(
        np.asarray(got["hard"], np.float32), expected["hard"], err_msg=where
    )
    for name in ("surrogate", "pre_round", "local_grad", "input_grad"):
        np.testing.assert_allclose(
            np.asarray(got[name], np.float32),
            expected[name],
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{where}: {name}",
        )


def v2_infer_body(rows: np.ndarray, outputs: Sequence[str] = ()) -> dict[str, Any]:
    """An Open Inference Protocol v2 JSON infer request for `rows` (FP32, row-major data).

    Args:
        rows: A `[batch, 64]` array.
        outputs: Output names to ask for; empty leaves the choice to the server.
    """
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "inputs",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


# -- test model versions ----------------------------------------------------------------


def svc_models() -> Any:
    """tests/app/svc_models.py (tiny plain-TensorFlow SavedModels and broken ones), by path."""
    if "svc_models" in sys.modules:
        return sys.modules["svc_models"]
    path = REPO / "tests" / "app" / "svc_models.py"
    spec = importlib.util.spec_from_file_location("svc_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["svc_models"] = module
    spec.loader.exec_module(module)
    return module


def install_version(source: Path, models_root: Path, name: str, version: int) -> Path:
    """Copy a version directory into a models root atomically (svc_models.install)."""
    return svc_models().install(source, models_root, name, version)


# -- background load -------------------------------------------------------------------

LOAD_KINDS = ("predict", "grad", "v1", "v2")


class Load:
    """Client threads sending good requests until stopped, checking every answer.

    Each answer must be 200 and equal the in-process reference of the version
    that answered (`version` / `model_version` in the body; TF Serving's
    predict names none, so any known version's answer is accepted there).

    Args:
        url: The server.
        references: `{version: Reference}` of every version that may answer.
        threads: Client threads.
        new_connection_each_time: No keep-alive (each request opens a connection).
        model: The model name.
    """

    def __init__(
        self,
        url: str,
        references: dict[int, Reference],
        threads: int = 6,
        new_connection_each_time: bool = False,
        model: str = "digit-bits",
    ) -> None:
        self.url = url
        self.references = references
        self.model = model
        self.reuse = not new_connection_each_time
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = Counter()  # by version answering
        self.failures: list[str] = []
        self.refused = 0  # connection refused (only expected after SIGTERM)
        #: (when the request started, what happened): the connection broke before any answer.
        self.dropped: list[tuple[float, str]] = []
        self.pool = [digit_rows(1 + i % 3, 1000 + i) for i in range(16)]
        self._expected: dict[tuple[int, int, str], Any] = {}
        for version, reference in references.items():
            for i, rows in enumerate(self.pool):
                self._expected[(version, i, "predict")] = reference.predict(rows)
                self._expected[(version, i, "grad")] = reference.grad(rows)
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout_s)

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + len(self.failures)

    def _request(self, client: httpx.Client, kind: str, rows: np.ndarray) -> tuple[int | None, Any]:
        """Send one request; returns (version or None, the answer's arrays)."""
        if kind in ("predict", "grad"):
            response = client.post(f"/{kind}", json={"inputs": rows.tolist()})
            assert response.status_code == 200, f"{kind}: {response.status_code} {response.text}"
            body = response.json()
            return body["version"], body if kind == "grad" else body["outputs"]
        if kind == "v1":
            response = client.post(
                f"/v1/models/{self.model}:predict", json={"instances": rows.tolist()}
            )
            assert response.status_code == 200, f"v1: {response.status_code} {response.text}"
            return None, response.json()["predictions"]
        response = client.post(f"/v2/models/{self.model}/infer", json=v2_infer_body(rows))
        assert response.status_code == 200, f"v2: {response.status_code} {response.text}"
        body = response.json()
        output = body["outputs"][0]
        return int(body["model_version"]), np.reshape(output["data"], output["shape"])

    def _check(self, version: int | None, kind: str, index: int, answer: Any) -> int:
        candidates = [version] if version is not None else list(self.references)
        for candidate in candidates:
            if candidate not in self.references:
                continue
            if kind == "grad":
                try:
                    assert_grad_close(answer, self._expected[(candidate, index, "grad")], kind)
                except AssertionError:
                    continue
                return candidate
            expected = self._expected[(candidate, index, "predict")]
            if np.array_equal(np.asarray(answer, np.float32), expected):
                return candidate
        raise AssertionError(f"{kind}: wrong answer (version {version}): {answer}")

    def _run(self, n: int) -> None:
        rng = np.random.default_rng(n)
        # keepalive_expiry below uvicorn's 5 s timeout: never reuse a connection it is closing.
        limits = httpx.Limits(
            max_keepalive_connections=1 if self.reuse else 0, keepalive_expiry=2.0
        )
        with httpx.Client(
            base_url=self.url,
            timeout=30,
            limits=limits,
            event_hooks={"response": [_check_response]},
        ) as client:
            while not self.stop_event.is_set():
                kind = LOAD_KINDS[int(rng.integers(len(LOAD_KINDS)))]
                index = int(rng.integers(len(self.pool)))
                started = time.monotonic()
                try:
                    version, answer = self._request(client, kind, self.pool[index])
                    answered = self._check(version, kind, index, answer)
                except httpx.ConnectError:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.01)
                    continue
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    with self.lock:
                        self.dropped.append((started, f"{type(exc).__name__}: {exc}"))
                    continue
                except Exception as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    continue
                with self.lock:
                    self.ok[answered] += 1
