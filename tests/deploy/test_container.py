"""End to end: the repository's Dockerfile and docker-compose.yml on a real engine.

A private dockerd (docker/dockerd.sh: its own data root, exec root, socket and
pidfile under a temporary directory) builds the image offline from a local
Debian bookworm base (docker/base-image.sh, standing in for python:3.11-slim,
which Docker Hub would serve) and the pinned wheelhouse (docker/wheels.sh).
Compose brings up the stack from docker-compose.yml plus docker/compose.test.yml
(host networking: all traffic stays on 127.0.0.1). The test checks /predict and
/grad against the SavedModel copied out of the container, that the service runs
as a non-root user on a read-only models mount, that `--profile train run train`
adds a version the running service then serves, and that stopping the engine
leaves no process, bridge or iptables chain behind.

Needs root (CI runs as root) and the Debian packages `make system-deps`
installs. Without root it fails; set DIFFROUND_SKIP_DOCKER=1 to skip it on
purpose (for example on a laptop without sudo).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_ENV = "DIFFROUND_SKIP_DOCKER"
BASE_IMAGE = "diffround-base:bookworm"
MODEL = "digit-bits"
ENGINE_PROCESSES = {"dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"}
LOCK_FILE = Path(tempfile.gettempdir()) / "diffround-dockerd.lock"

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]


def run(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs a command; on failure, fails the test with the command's output."""
    try:
        result = subprocess.run(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} timed out after {timeout} s\n{exc.stdout}\n{exc.stderr}")
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def require_environment() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the container test was skipped on purpose")
    if os.geteuid() != 0:
        pytest.fail(
            "the container test starts its own dockerd and needs root "
            f"(CI runs as root); set {SKIP_ENV}=1 to skip it deliberately"
        )
    missing = [
        tool
        for tool in ("dockerd", "docker", "debootstrap", "iptables", "iptables-save", "ip")
        if shutil.which(tool) is None
    ]
    if not (shutil.which("docker-compose") or compose_v2_available()):
        missing.append("docker-compose")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make system-deps`")


def compose_v2_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def compose_command() -> list[str]:
    """Debian's docker-compose v1.29 when installed, else the Compose v2 plugin."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def make_variable(name: str) -> str:
    return run(
        ["make", "--no-print-directory", "-s", "--eval", f"print-var: ; @echo $({name})",
         "print-var"]
    ).stdout.strip()  # fmt: skip


# ------------------------------------------------------------- host snapshot


def engine_pids() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ENGINE_PROCESSES:
            pids.add(proc.pid)
    return pids


def bridges() -> set[str]:
    out = run(["ip", "-o", "link", "show", "type", "bridge"]).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def docker_chains() -> set[str]:
    chains = set()
    for table in ("filter", "nat"):
        for line in run(["iptables-save", "-t", table]).stdout.splitlines():
            if line.startswith(":DOCKER"):
                chains.add(f"{table}:{line[1:].split()[0]}")
    return chains


@dataclass
class HostState:
    engine_pids: set[int]
    bridges: set[str]
    docker_chains: set[str]

    @classmethod
    def now(cls) -> HostState:
        return cls(engine_pids(), bridges(), docker_chains())


# -------------------------------------------------------------------- engine


@dataclass
class Engine:
    state_dir: Path
    env: dict[str, str]
    before: HostState
    timings: dict[str, float] = field(default_factory=dict)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run(["docker", *args], env=self.env, timeout=timeout, check=check).stdout.strip()


@contextlib.contextmanager
def exclusive_engine_lock(timeout_s: float = 600) -> Iterator[None]:
    """One private dockerd at a time on this machine: two would fight over docker0
    and the DOCKER iptables chains."""
    with LOCK_FILE.open("w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another container test held {LOCK_FILE} for {timeout_s} s")
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


STATE_PREFIX = "diffround-drd."


def reap_stale_engines() -> None:
    """Stops engines of earlier runs that were killed before their teardown (we hold
    the lock, so no live run owns one), with their own before-snapshots."""
    for stale in Path("/tmp").glob(f"{STATE_PREFIX}*"):
        if (stale / "iptables.before").exists():
            run(["docker/dockerd.sh", "stop", str(stale)], timeout=180, check=False)
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def private_engine() -> Iterator[Engine]:
    with exclusive_engine_lock():
        reap_stale_engines()
        before = HostState.now()
        # Short path: unix sockets under it must stay below 108 bytes.
        state_dir = Path(tempfile.mkdtemp(prefix=STATE_PREFIX, dir="/tmp"))
        started = time.monotonic()
        try:
            host = run(["docker/dockerd.sh", "start", str(state_dir)], timeout=120).stdout.strip()
            engine = Engine(
                state_dir,
                # Legacy builder: BuildKit is not part of Debian's docker.io.
                {"DOCKER_HOST": host, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"},
                before,
            )
            engine.timings["dockerd_start_s"] = time.monotonic() - started
            yield engine
        finally:
            stopped = run(["docker/dockerd.sh", "stop", str(state_dir)], timeout=180, check=False)
            shutil.rmtree(state_dir, ignore_errors=True)
            if stopped.returncode != 0:
                pytest.fail(f"stopping the private dockerd failed:\n{stopped.stderr}")


def assert_host_left_clean(engine: Engine) -> None:
    after = HostState.now()
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(str(engine.state_dir) in part for part in (p.info["cmdline"] or []))
    ]
    assert not leftovers, f"processes of the private engine left running: {leftovers}"
    new_engine_processes = after.engine_pids - engine.before.engine_pids
    assert not new_engine_processes, f"dockerd/containerd left running: {new_engine_processes}"
    assert after.bridges == engine.before.bridges, (
        f"bridges left behind: {after.bridges - engine.before.bridges}"
    )
    assert after.docker_chains == engine.before.docker_chains, (
        f"iptables chains left behind: {after.docker_chains - engine.before.docker_chains}"
    )
    assert not engine.state_dir.exists()


# ---------------------------------------------------------------- the stack


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    engine: Engine
    env: dict[str, str]
    port: int

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        files = ["-f", "docker-compose.yml", "-f", "docker/compose.test.yml"]
        return run(
            [*compose_command(), *files, *args], env=self.env, timeout=timeout, check=check
        ).stdout.strip()

    def service_container(self) -> str:
        container = self.compose("ps", "-q", "diffround")
        assert container, "compose reports no diffround container"
        return container.splitlines()[0]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", "diffround", check=False)


def wait_healthy(stack: Stack, container: str, timeout_s: float = 240) -> float:
    """Compose v1 has no `up --wait`: poll Docker's health status."""
    started = time.monotonic()
    status = ""
    while time.monotonic() - started < timeout_s:
        status = stack.engine.docker(
            "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container
        )
        if status == "running healthy":
            return time.monotonic() - started
        if status.startswith(("exited", "dead")) or status.endswith("unhealthy"):
            break
        time.sleep(1)
    pytest.fail(f"service not healthy ({status!r}) after {timeout_s} s\n{stack.logs()}")


def copy_models_out(stack: Stack, container: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    stack.engine.docker("cp", f"{container}:/models", str(dest))
    return dest / "models" / MODEL


def newest_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    assert versions, f"no version in {model_dir}"
    return max(versions)


def saved_model_answers(version_dir: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every serving_default output and every grad key of the version, computed here."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    batch = tf.constant(inputs, tf.float32)
    answers = {k: v.numpy() for k, v in loaded.signatures["serving_default"](inputs=batch).items()}
    answers.update({k: v.numpy() for k, v in loaded.signatures["grad"](inputs=batch).items()})
    return answers


def request_rows(version_dir: Path) -> np.ndarray:
    """The held-out examples the model ships with, plus random grey-level images."""
    metadata = json.loads((version_dir / "assets.extra" / "diffround.json").read_text())
    examples = np.array([e["inputs"]["inputs"] for e in metadata["examples"]], dtype=np.float32)
    noise = np.random.default_rng(0).integers(0, 17, size=(6, 64)).astype(np.float32)
    return np.concatenate([examples, noise])


def check_answers(client: httpx.Client, version_dir: Path, version: int) -> None:
    inputs = request_rows(version_dir)
    expected = saved_model_answers(version_dir, inputs)
    grad_map = json.loads((version_dir / "assets.extra" / "diffround.json").read_text())["grad"]
    body = {"inputs": inputs.tolist()}

    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model"], answer["version"]) == (MODEL, version)
    ((name, values),) = answer["outputs"].items()
    outputs = np.array(values, dtype=np.float32)
    np.testing.assert_array_equal(outputs, expected[name])
    weights = 2 ** np.arange(outputs.shape[1] - 1, -1, -1)
    assert answer["decoded"] == (outputs @ weights).astype(int).tolist()

    response = client.post("/grad", json=body)
    assert response.status_code == 200, response.text
    grad = response.json()
    assert (grad["model"], grad["version"]) == (MODEL, version)
    for output, keys in grad_map["outputs"].items():
        got = grad["outputs"][output]
        np.testing.assert_array_equal(np.array(got["hard"], np.float32), expected[output])
        np.testing.assert_allclose(got["relaxed"], expected[keys["relaxed"]], rtol=1e-5, atol=1e-6)
        for input_name, key in keys["jacobians"].items():
            np.testing.assert_allclose(
                got["jacobians"][input_name], expected[key], rtol=1e-5, atol=1e-6, err_msg=key
            )
    for layer, keys in grad_map["layers"].items():
        for role, key in keys.items():
            np.testing.assert_allclose(
                np.array(grad["rounding_layers"][layer][role], np.float32),
                expected[key],
                rtol=1e-5,
                atol=1e-6,
                err_msg=key,
            )


def check_security(stack: Stack, container: str) -> None:
    engine = stack.engine
    assert engine.docker("inspect", "-f", "{{.Config.User}}", container) == "10001:10001"
    # The service process itself (PID 1 in the container) runs as that user.
    status = engine.docker("exec", container, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids and all(uid == "10001" for uid in uids), uids

    mounts = json.loads(engine.docker("inspect", "-f", "{{json .Mounts}}", container))
    (models,) = [m for m in mounts if m["Destination"] == "/models"]
    assert models["Type"] == "volume" and models["RW"] is False, models
    write = run(
        ["docker", "exec", container, "touch", "/models/intruder"], env=engine.env, check=False
    )
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    assert engine.docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", container) == "true"


def test_compose_stack_serves_the_bundled_model_and_hot_reloads_a_trained_one(
    tmp_path: Path, record_property: Any
) -> None:
    require_environment()
    cache = Path(os.environ.get("DIFFROUND_CACHE", ROOT / ".cache" / "docker"))
    with private_engine() as engine:
        started = time.monotonic()
        run(
            ["docker/base-image.sh", BASE_IMAGE],
            env={**engine.env, "DIFFROUND_CACHE": str(cache)},
            timeout=600,
        )
        engine.timings["base_image_s"] = time.monotonic() - started

        started = time.monotonic()
        run(["docker/wheels.sh"], timeout=900)
        engine.timings["wheelhouse_s"] = time.monotonic() - started

        image = f"diffround:e2e-{os.getpid()}"
        started = time.monotonic()
        run(
            ["docker", "build", "--network", "none", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
             "--tag", image, "."],
            env=engine.env,
            timeout=900,
        )  # fmt: skip
        engine.timings["image_build_s"] = time.monotonic() - started
        size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", image))
        engine.timings["image_size_mb"] = size / 1e6

        port = free_port()
        stack = Stack(
            engine,
            {
                **engine.env,
                "COMPOSE_PROJECT_NAME": f"diffround-e2e-{os.getpid()}",
                "DIFFROUND_IMAGE": image,
                "DIFFROUND_PORT": str(port),
            },
            port,
        )
        try:
            stack.compose("up", "-d", "--no-build", "diffround")
            container = stack.service_container()
            engine.timings["healthy_after_s"] = wait_healthy(stack, container)

            check_security(stack, container)
            # The bundled model was trained with the Makefile's TRAIN_ARGS (`make train`).
            train_args = engine.docker("exec", container, "cat", "/opt/diffround/train-args")
            assert train_args == make_variable("TRAIN_ARGS")

            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                assert client.get("/readyz").status_code == 200
                model_dir = copy_models_out(stack, container, tmp_path / "bundled")
                bundled = newest_version(model_dir)
                check_answers(client, model_dir / str(bundled), bundled)

                # The trainer writes version bundled+1 into the shared volume ...
                started = time.monotonic()
                stack.compose("--profile", "train", "run", "--rm", "-T", "train", timeout=900)
                engine.timings["train_profile_s"] = time.monotonic() - started
                # ... and the running service picks it up without a restart.
                deadline = time.monotonic() + 60
                served = bundled
                while served != bundled + 1 and time.monotonic() < deadline:
                    time.sleep(1)
                    response = client.post("/predict", json={"inputs": [[0.0] * 64]})
                    assert response.status_code == 200, response.text
                    served = response.json()["version"]
                assert served == bundled + 1, f"still serving {served}\n{stack.logs()}"
                model_dir = copy_models_out(stack, container, tmp_path / "trained")
                assert newest_version(model_dir) == bundled + 1
                check_answers(client, model_dir / str(bundled + 1), bundled + 1)
                assert stack.service_container() == container, "the service was restarted"
        finally:
            stack.compose("--profile", "train", "down", "--volumes", "--timeout", "20",
                          check=False, timeout=180)  # fmt: skip
    assert_host_left_clean(engine)

    for key, value in engine.timings.items():
        record_property(key, round(value, 1))
    print(
        "container test timings:", json.dumps({k: round(v, 1) for k, v in engine.timings.items()})
    )
