"""The servers under test: the service, the HTTP floor, the naive baseline and the peer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import BENCH_DIR, PYTHON, REPO_ROOT, SERVER_CPU, Server, base_env, free_port

PEER_VENV = REPO_ROOT / ".venv-bench-peer"
PEER_REQUIREMENTS = BENCH_DIR / "requirements-peer.txt"
PEER_PYTHON = PEER_VENV / "bin" / "python"


def service(
    models_root: Path, *, workers: int = 1, cpus: str | None = SERVER_CPU, name: str = "service"
) -> Server:
    """`python -m app` exactly as users run it, one worker unless told otherwise."""
    port = free_port()
    env = base_env(
        MODELS_ROOT=str(models_root),
        PORT=str(port),
        HOST="127.0.0.1",
        WORKERS=str(workers),
        DEFAULT_MODEL="digit-bits",
    )
    for key in ("API_KEY", "BATCH_MAX_SIZE", "BATCH_MAX_WAIT_MS", "ENABLE_GRAD", "LOG_LEVEL"):
        env.pop(key, None)
    return Server(name, [PYTHON, "-m", "app"], port, "/readyz", env, cpus)


def floor() -> Server:
    """The trivial JSON endpoint on the service's uvicorn options."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.serve_asgi", "bench.floor_app:app", "--port", str(port)]
    return Server("floor", argv, port, "/readyz", base_env())


def naive(model_dir: Path) -> Server:
    """The simplest FastAPI model endpoint (pydantic lists, one call per request)."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.serve_asgi", "bench.naive_server:app", "--port", str(port)]
    return Server("naive", argv, port, "/readyz", base_env(NAIVE_MODEL_DIR=str(model_dir)))


def ensure_peer_venv(log: Path) -> bool:
    """Create `.venv-bench-peer/` from PyPI when absent or stale; whether the peer can run."""
    marker = PEER_VENV / ".installed"
    wanted = PEER_REQUIREMENTS.read_bytes()
    if marker.exists() and marker.read_bytes() == wanted and PEER_PYTHON.exists():
        return True
    print(f"bench: installing the peer (KServe) into {PEER_VENV.name}/ ...", flush=True)
    # The venv is made from the interpreter the main venv was made from (not nested in it).
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    steps = [
        [str(base), "-m", "venv", str(PEER_VENV)],
        [str(PEER_PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(PEER_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(PEER_REQUIREMENTS)],
    ]
    with open(log, "wb") as out:
        for argv in steps:
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return False
    marker.write_bytes(wanted)
    return True


def peer(model_dir: Path) -> Server:
    """KServe's Python model server with the same SavedModel, v1 protocol."""
    port = free_port()
    argv = [str(PEER_PYTHON), str(BENCH_DIR / "peer_kserve.py"), "--http_port", str(port)]
    env = base_env(PEER_MODEL_DIR=str(model_dir), PEER_MODEL_NAME="digit-bits")
    env.pop("PYTHONPATH", None)
    return Server("peer", argv, port, "/v1/models/digit-bits", env)


#: Where each server takes a 1-row predict request, and the name of its rows field.
PREDICT_ROUTE = {
    "floor": ("/predict", "inputs"),
    "service": ("/predict", "inputs"),
    "naive": ("/predict", "inputs"),
    "peer": ("/v1/models/digit-bits:predict", "instances"),
}
