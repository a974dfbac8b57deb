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
    """A version directory loaded with `tf.saved_model.load` in the test process.

    Every name comes from the SavedModel itself: the inputs and outputs of
    `serving_default`, the keys of `grad`, and the `grad` map of
    `assets.extra/diffround.json` (which grad keys belong to which output and
    rounding layer), so the suite holds for any model `diffround.export` writes.
    """

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        self._model = _loaded(str(version_dir))
        path = version_dir / "assets.extra" / "diffround.json"
        self.metadata: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        serving = self._model.signatures["serving_default"]
        _, specs = serving.structured_input_signature
        self.input_specs = dict(specs)
        self.outputs: tuple[str, ...] = tuple(sorted(serving.structured_outputs))
        grad = self._model.signatures.get("grad")
        self.grad_keys: tuple[str, ...] = tuple(sorted(grad.structured_outputs)) if grad else ()
        self.grad_map: dict[str, Any] = self.metadata.get("grad") or {}

    @property
    def input_name(self) -> str:
        """The one input's name (the suite's requests are for one-input models)."""
        (name,) = self.input_specs
        return name

    @property
    def input_width(self) -> int:
        """The one input's row width (a `[-1, width]` input)."""
        shape = self.input_specs[self.input_name].shape
        assert shape.rank == 2, shape
        return int(shape[1])

    @property
    def exact_grad_keys(self) -> set[str]:
        """Grad keys that hold exact roundings (each rounding layer's `hard`): compared exactly."""
        return {keys["hard"] for keys in self.grad_map.get("layers", {}).values() if "hard" in keys}

    def _call(self, signature: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        spec = self.input_specs[self.input_name]
        x = tf.constant(np.asarray(rows, spec.dtype.as_numpy_dtype))
        outputs = self._model.signatures[signature](**{self.input_name: x})
        return {k: v.numpy() for k, v in outputs.items()}

    def predict(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`serving_default`: every output by name."""
        return self._call("serving_default", rows)

    def grad(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`grad`: every grad key (`<output>__relaxed`, `<layer>__pre_round`, ...)."""
        return self._call("grad", rows)

    def native_grad_tensors(self, body: dict[str, Any]) -> dict[str, np.ndarray]:
        """A `/grad` answer as tensors keyed like the SavedModel's signatures.

        Each output's `hard` under the output's name (as `serving_default` names it),
        its `relaxed` and `jacobians` and each rounding layer's parts under their grad
        keys, through the metadata's `grad` map. Fails when a part the map names is
        missing or the answer has outputs or layers the map does not.
        """
        got: dict[str, np.ndarray] = {}
        assert set(body["outputs"]) == set(self.grad_map["outputs"]), body["outputs"].keys()
        assert set(body["rounding_layers"]) == set(self.grad_map["layers"]), body.keys()
        for name, entry in self.grad_map["outputs"].items():
            answered = body["outputs"][name]
            if name in self.outputs:
                got[name] = np.asarray(answered["hard"], np.float32)
            got[entry["relaxed"]] = np.asarray(answered["relaxed"], np.float32)
            jacobians = entry.get("jacobians") or {}
            assert set(answered["jacobians"]) == set(jacobians), answered["jacobians"].keys()
            for input_name, key in jacobians.items():
                got[key] = np.asarray(answered["jacobians"][input_name], np.float32)
        for layer, keys in self.grad_map["layers"].items():
            answered = body["rounding_layers"][layer]
            described = {d["name"]: d for d in self.metadata.get("rounding_layers", [])}
            assert answered["method"] == described[layer]["method"], answered["method"]
            assert answered["grid"] == described[layer]["grid"], answered["grid"]
            for part, key in keys.items():
                got[key] = np.asarray(answered[part], np.float32)
        assert body["omitted_jacobians"] == self.grad_map.get("omitted_jacobians", [])
        return got

    def grad_expected(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """What a `/grad` answer holds, keyed as `native_grad_tensors` keys it."""
        return {**self.predict(rows), **self.grad(rows)}

    def v1_arrays(self, predictions: Any) -> dict[str, np.ndarray]:
        """TF Serving row-form `predictions` as `{output: array}` (one output answers unnamed)."""
        if len(self.outputs) == 1:
            return {self.outputs[0]: np.asarray(predictions, np.float32)}
        return {
            name: np.asarray([row[name] for row in predictions], np.float32)
            for name in self.outputs
        }


def as_arrays(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """`{name: nested lists}` as `{name: float32 array}`."""
    return {name: np.asarray(value, np.float32) for name, value in outputs.items()}


def v2_tensors(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """A v2 infer answer's outputs as `{name: float32 array of its shape}`."""
    return {
        t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in body["outputs"]
    }


def assert_outputs_equal(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], where: str
) -> None:
    """The same output names, each exactly equal (hard answers do not depend on the runtime)."""
    assert set(got) == set(expected), f"{where}: outputs {sorted(got)} != {sorted(expected)}"
    for name, value in expected.items():
        np.testing.assert_array_equal(
            np.asarray(got[name], np.float32), value, err_msg=f"{where}: {name}"
        )


def assert_grad_close(
    got: dict[str, Any], expected: dict[str, np.ndarray], exact: set[str], where: str
) -> None:
    """Every expected tensor is answered: names in `exact` equal, the rest to 1e-5.

    Args:
        got: Answered tensors by name (grad keys, and output names for hard values).
        expected: The reference's tensors by the same names.
        exact: Names compared exactly (hard outputs, each layer's `hard`).
        where: For the message.
    """
    assert set(got) == set(expected), f"{where}: {sorted(got)} != {sorted(expected)}"
    for name, value in expected.items():
        answered = np.asarray(got[name], np.float32)
        if name in exact:
            np.testing.assert_array_equal(answered, value, err_msg=f"{where}: {name}")
        else:
            np.testing.assert_allclose(
                answered, value, rtol=1e-5, atol=1e-6, err_msg=f"{where}: {name}"
            )


def digit_rows(n: int, seed: int, width: int = INPUT_WIDTH) -> np.ndarray:
    """`n` rows of `width` grey levels 0..16 (float32), some integer, some fractional."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 17, (n, width)).astype(np.float32)
    rows[::2] += rng.random((len(rows[::2]), width)).astype(np.float32)
    return np.minimum(rows, 16.0)


def v2_infer_body(
    rows: np.ndarray, outputs: Sequence[str] = (), input_name: str = "inputs"
) -> dict[str, Any]:
    """An Open Inference Protocol v2 JSON infer request for `rows` (FP32, row-major data).

    Args:
        rows: A `[batch, width]` array.
        outputs: Output names to ask for; empty leaves the choice to the server.
        input_name: The model's input name (`Reference.input_name`).
    """
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": input_name,
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
        first = next(iter(references.values()))
        self.input_name = first.input_name
        self.pool = [digit_rows(1 + i % 3, 1000 + i, first.input_width) for i in range(16)]
        self._expected: dict[tuple[int, int, str], Any] = {}
        for version, reference in references.items():
            for i, rows in enumerate(self.pool):
                self._expected[(version, i, "predict")] = reference.predict(rows)
                self._expected[(version, i, "grad")] = reference.grad_expected(rows)
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
        """Send one request; returns (version or None, the answer's body or tensors)."""
        if kind in ("predict", "grad"):
            response = client.post(f"/{kind}", json={"inputs": rows.tolist()})
            assert response.status_code == 200, f"{kind}: {response.status_code} {response.text}"
            body = response.json()
            return body["version"], body if kind == "grad" else as_arrays(body["outputs"])
        if kind == "v1":
            response = client.post(
                f"/v1/models/{self.model}:predict", json={"instances": rows.tolist()}
            )
            assert response.status_code == 200, f"v1: {response.status_code} {response.text}"
            return None, response.json()["predictions"]
        body = v2_infer_body(rows, input_name=self.input_name)
        response = client.post(f"/v2/models/{self.model}/infer", json=body)
        assert response.status_code == 200, f"v2: {response.status_code} {response.text}"
        answer = response.json()
        return int(answer["model_version"]), v2_tensors(answer)

    def _check(self, version: int | None, kind: str, index: int, answer: Any) -> int:
        candidates = [version] if version is not None else list(self.references)
        for candidate in candidates:
            if candidate not in self.references:
                continue
            reference = self.references[candidate]
            try:
                if kind == "grad":
                    assert_grad_close(
                        reference.native_grad_tensors(answer),
                        self._expected[(candidate, index, "grad")],
                        {*reference.outputs, *reference.exact_grad_keys},
                        kind,
                    )
                else:
                    got = reference.v1_arrays(answer) if kind == "v1" else answer
                    assert_outputs_equal(got, self._expected[(candidate, index, "predict")], kind)
            except (AssertionError, KeyError, TypeError, ValueError):
                continue
            return candidate
        raise AssertionError(f"{kind}: wrong answer (version {version}): {str(answer)[:500]}")

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


def wait_for(predicate, timeout_s: float, what: str, server: ServerProcess) -> float:
    """Poll `predicate` every 0.1 s until true; the seconds it took.

    Raises:
        AssertionError: The server exited, or `timeout_s` passed (with the log's tail).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert server.process.poll() is None, f"server exited while waiting for {what}"
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen in {timeout_s} s:\n{server.log_tail()}")
