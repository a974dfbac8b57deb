"""End to end: `python -m app` (real uvicorn on 127.0.0.1) serving the trained default model.

Answers are compared with `tf.saved_model.load` of the same version in this
process; the v2 route is driven by `tritonclient[http]` with its defaults.
"""

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from svc_helpers import digit_rows, grad_view, predicted, reference_outputs
from svc_server import Server

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    default_models_root: Path, default_model_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = Server(default_models_root, log_path)
    running.model_name = default_model_name
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def version_dir(default_models_root: Path, default_model_name: str) -> Path:
    return default_models_root / default_model_name / "1"


def _soft_round(x: np.ndarray, alpha: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    m = np.floor(x) + 0.5
    t = np.tanh(alpha * (x - m))
    scale = 2.0 * np.tanh(alpha / 2.0)
    return m + t / scale, alpha * (1.0 - t**2) / scale


def _sigmoid(x: np.ndarray, slope: float = 10.0, center: float = 0.5) -> tuple:
    s = 1.0 / (1.0 + np.exp(-slope * (x - center)))
    return s, slope * s * (1.0 - s)


def _sine(x: np.ndarray, compose: int = 1) -> tuple[np.ndarray, np.ndarray]:
    y, derivative = x, np.ones_like(x)
    for _ in range(int(compose)):  # chain rule through each composed staircase
        derivative = derivative * (1.0 - np.cos(2 * np.pi * y))
        y = y - np.sin(2 * np.pi * y) / (2 * np.pi)
    return y, derivative


#: NumPy references (value, d value / d x) of the smooth methods a default model may use.
SURROGATES = {"soft_round": _soft_round, "sigmoid": _sigmoid, "sine": _sine}


def test_predict_and_grad_match_the_savedmodel(
    server: Server, version_dir: Path, default_model_name: str
) -> None:
    rows = digit_rows(9, seed=41)
    expected = reference_outputs(version_dir, rows)
    answer = httpx.post(f"{server.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == (default_model_name, 1)
    np.testing.assert_array_equal(predicted(body).astype(np.float32), expected["outputs"])
    for i in range(3):  # single rows too
        one = httpx.post(f"{server.url}/predict", json={"inputs": rows[i : i + 1].tolist()})
        np.testing.assert_array_equal(predicted(one.json()), expected["outputs"][i : i + 1])

    response = httpx.post(f"{server.url}/grad", json={"inputs": rows.tolist()}, timeout=30)
    grad = grad_view(response.json())
    for name in ("hard", "surrogate", "pre_round", "local_grad", "input_grad"):
        np.testing.assert_allclose(grad[name], expected[name], rtol=1e-5, atol=1e-6)
    assert grad["method"] in SURROGATES, f"no NumPy reference for {grad['method']}"
    value, derivative = SURROGATES[grad["method"]](
        np.array(grad["pre_round"], np.float64), **grad["params"]
    )
    np.testing.assert_allclose(grad["surrogate"], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad["local_grad"], derivative, rtol=1e-3, atol=1e-5)


def test_grad_input_gradients_match_finite_differences_on_the_real_model(server: Server) -> None:
    """At the most sensitive blend of two held-out digits (on the digits themselves the trained
    model is so confident that gradients drown in float32 noise)."""
    examples = httpx.get(f"{server.url}/models/{server.model_name}").json()["examples"]
    digits = np.array([e["inputs"]["inputs"] for e in examples[:4]], np.float32)
    weights = np.linspace(0.0, 1.0, 21, dtype=np.float32)
    candidates = np.stack(
        [w * digits[i] + (1 - w) * digits[j] for i in range(4) for j in range(i) for w in weights]
    )
    scan = httpx.post(f"{server.url}/grad", json={"inputs": candidates.tolist()}, timeout=60)
    assert scan.status_code == 200, scan.text
    sensitivity = np.abs(np.array(grad_view(scan.json())["input_grad"])).max(axis=(1, 2))
    base = candidates[int(np.argmax(sensitivity))]

    h = 0.05
    eye = np.eye(64, dtype=np.float32) * h
    perturbed = np.concatenate([base + eye, base - eye])
    at_base = httpx.post(f"{server.url}/grad", json={"inputs": [base.tolist()]}).json()
    around = httpx.post(f"{server.url}/grad", json={"inputs": perturbed.tolist()}).json()
    at_base, around = grad_view(at_base), grad_view(around)
    surrogate = np.array(around["surrogate"], np.float64)
    finite_diff = ((surrogate[:64] - surrogate[64:]) / (2 * h)).T  # [k, input]
    analytic = np.array(at_base["input_grad"][0], np.float64)
    largest = np.abs(analytic).max()
    assert largest > 1e-3  # float32 surrogates carry ~6e-7 error here after dividing by 2h
    np.testing.assert_allclose(analytic, finite_diff, rtol=5e-2, atol=2e-2 * largest)


def test_tfserving_route_matches_the_savedmodel(server: Server, version_dir: Path) -> None:
    rows = digit_rows(4, seed=43)
    expected = reference_outputs(version_dir, rows)["outputs"]
    name = version_dir.parent.name
    response = httpx.post(
        f"{server.url}/v1/models/{name}:predict", json={"instances": rows.tolist()}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(response.json()["predictions"], expected)


def test_tritonclient_infer_and_metadata_with_default_options(
    server: Server, version_dir: Path
) -> None:
    import tritonclient.http as triton

    name = version_dir.parent.name
    rows = digit_rows(5, seed=44)
    expected = reference_outputs(version_dir, rows)
    grad_map = httpx.get(f"{server.url}/models/{name}").json()["grad"]
    ((output, keys),) = grad_map["outputs"].items()
    jacobian_key = keys["jacobians"]["inputs"]
    hard_key = next(iter(grad_map["layers"].values()))["hard"]
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name)
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        metadata = client.get_model_metadata(name)
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 64]}]

        tensor = triton.InferInput("inputs", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)  # binary by default
        result = client.infer(name, [tensor])
        np.testing.assert_array_equal(result.as_numpy(output), expected["outputs"])

        # The grad signature's outputs by their own names, beside a hard output.
        wanted = [
            triton.InferRequestedOutput(jacobian_key),
            triton.InferRequestedOutput(hard_key),
            triton.InferRequestedOutput(output),
        ]
        result = client.infer(name, [tensor], outputs=wanted, model_version="1")
        np.testing.assert_allclose(
            result.as_numpy(jacobian_key), expected["input_grad"], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(result.as_numpy(hard_key), expected["hard"])
        np.testing.assert_array_equal(result.as_numpy(output), expected["outputs"])

        with pytest.raises(triton.InferenceServerException, match="not found"):
            client.infer("no-such-model", [tensor])
    finally:
        client.close()


def test_logs_are_json_lines_with_request_ids(server: Server) -> None:
    httpx.post(f"{server.url}/predict", json={"inputs": []}, headers={"X-Request-ID": "log-1"})
    time.sleep(0.3)
    lines = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(r["message"] == "serving model version" and r["version"] == 1 for r in lines)
    assert any(r.get("request_id") == "log-1" and r.get("status") == 422 for r in lines)


def test_sigterm_lets_in_flight_requests_finish_and_exits_zero(
    default_models_root: Path, tmp_path: Path
) -> None:
    server = Server(default_models_root, tmp_path / "server.log", SHUTDOWN_GRACE_S="10")
    try:
        server.wait_ready()
        rows = digit_rows(512, seed=45).tolist()
        statuses: list[int] = []
        refused: list[str] = []

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                for _ in range(5):
                    try:
                        response = http.post(f"{server.url}/grad", json={"inputs": rows})
                    except httpx.TransportError as exc:  # after shutdown: connection refused
                        refused.append(type(exc).__name__)
                        return
                    statuses.append(response.status_code)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        while not statuses:
            time.sleep(0.01)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
        elapsed = time.monotonic() - started
        for thread in threads:
            thread.join(30)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=2)
    finally:
        server.stop()
    assert code == 0, server.log_path.read_text()[-2000:]
    assert elapsed < 10 + 2
    assert statuses and all(status == 200 for status in statuses), statuses
