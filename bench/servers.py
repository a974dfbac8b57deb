"""The servers under test: the service, the HTTP limit and floor, the naive baseline, the peers.

Each server takes a predict request on its own route and in its own protocol
(`PREDICT_ROUTE`; bodies and answers in `bench.protocols`, built from the model's
signature), so the benchmark can check that every model server gives the same
bytes for every output before it measures anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from bench import protocols
from bench.common import BENCH_DIR, PYTHON, REPO_ROOT, SERVER_CPU, Server, base_env, free_port

PEER_VENV = REPO_ROOT / ".venv-bench-peer"
PEER_REQUIREMENTS = BENCH_DIR / "requirements-peer.txt"
PEER_PYTHON = PEER_VENV / "bin" / "python"
TRITON_VENV = REPO_ROOT / ".venv-bench-triton"
TRITON_REQUIREMENTS = BENCH_DIR / "requirements-triton.txt"
TRITON_PYTHON = TRITON_VENV / "bin" / "python"
#: Where Debian's own libpython lives (Triton's backend helper finds it there by itself).
SYSTEM_LIBDIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/lib")


def service(
    models_root: Path,
    model: str,
    *,
    workers: int = 1,
    cpus: str | None = SERVER_CPU,
    name: str = "service",
    grad_runtime: str | None = None,
) -> Server:
    """`python -m app` exactly as users run it, one worker and the default runtimes
    (`RUNTIME=auto`, `GRAD_RUNTIME=graph`) unless told otherwise."""
    port = free_port()
    env = base_env(
        MODELS_ROOT=str(models_root),
        PORT=str(port),
        HOST="127.0.0.1",
        WORKERS=str(workers),
        DEFAULT_MODEL=model,
    )
    for key in ("API_KEY", "BATCH_MAX_SIZE", "BATCH_MAX_WAIT_MS", "ENABLE_GRAD", "LOG_LEVEL"):
        env.pop(key, None)
    env.pop("RUNTIME", None)
    env.pop("GRAD_RUNTIME", None)
    if grad_runtime is not None:
        env["GRAD_RUNTIME"] = grad_runtime
    return Server(name, [PYTHON, "-m", "app"], port, "/readyz", env, cpus)


def asgi() -> Server:
    """The HTTP limit: a plain ASGI callable returning a constant, same uvicorn options."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.serve_asgi", "bench.raw_asgi_app:app", "--port", str(port)]
    return Server("asgi", argv, port, "/readyz", base_env())


def floor() -> Server:
    """The trivial JSON endpoint on the service's uvicorn options."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.serve_asgi", "bench.floor_app:app", "--port", str(port)]
    return Server("floor", argv, port, "/readyz", base_env())


def naive(model_dir: Path, model: str) -> Server:
    """The simplest FastAPI model endpoint (pydantic lists, one call per request)."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.serve_asgi", "bench.naive_server:app", "--port", str(port)]
    return Server(
        "naive",
        argv,
        port,
        "/readyz",
        base_env(NAIVE_MODEL_DIR=str(model_dir), NAIVE_MODEL_NAME=model),
    )


def ensure_venv(venv: Path, requirements: Path, log: Path, label: str) -> bool:
    """Create `venv` from PyPI (`requirements`) when absent or stale; whether it is usable.

    The venv is made from the interpreter the main venv was made from (not nested in it);
    pip's output goes to `log`.
    """
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = requirements.read_bytes()
    if marker.exists() and marker.read_bytes() == wanted and python.exists():
        return True
    print(f"bench: installing {label} into {venv.name}/ ...", flush=True)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    steps = [
        [str(base), "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
    ]
    with open(log, "wb") as out:
        for argv in steps:
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return False
    marker.write_bytes(wanted)
    return True


def ensure_peer_venv(log: Path) -> bool:
    """`.venv-bench-peer/` (KServe) from PyPI when absent or stale; whether the peer can run."""
    return ensure_venv(PEER_VENV, PEER_REQUIREMENTS, log, "the peer (KServe)")


def ensure_triton_venv(log: Path) -> bool:
    """`.venv-bench-triton/` (PyTriton) from PyPI when absent or stale; whether it can run."""
    return ensure_venv(TRITON_VENV, TRITON_REQUIREMENTS, log, "the Triton peer (PyTriton)")


def peer(model_dir: Path, model: str) -> Server:
    """KServe's Python model server with the same SavedModel, v1 protocol."""
    port = free_port()
    argv = [str(PEER_PYTHON), str(BENCH_DIR / "peer_kserve.py"), "--http_port", str(port)]
    env = base_env(PEER_MODEL_DIR=str(model_dir), PEER_MODEL_NAME=model)
    env.pop("PYTHONPATH", None)
    return Server("peer", argv, port, f"/v1/models/{model}", env)


def python_libdir_env() -> dict[str, str]:
    """`LD_LIBRARY_PATH` with this interpreter's libpython directory first, when that is not a
    system directory (a pyenv or uv interpreter); empty when nothing needs to change."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or libdir in SYSTEM_LIBDIRS or not sysconfig.get_config_var("LDLIBRARY"):
        return {}
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": f"{libdir}:{current}" if current else libdir}


def triton(model_dir: Path, model: str) -> Server:
    """Triton Inference Server through PyTriton (Python backend, dynamic batching), v2 HTTP."""
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = base_env(
        PEER_MODEL_DIR=str(model_dir),
        PEER_MODEL_NAME=model,
        TRITON_HTTP_PORT=str(port),
        TRITON_GRPC_PORT=str(grpc_port),
        TRITON_METRICS_PORT=str(metrics_port),
        **python_libdir_env(),
    )
    env.pop("PYTHONPATH", None)
    argv = [str(TRITON_PYTHON), str(BENCH_DIR / "peer_triton.py")]
    return Server("triton", argv, port, f"/v2/models/{model}/ready", env)


#: Where each server takes a 1-row predict request, and in which protocol (None: a constant
#: answer, no model). `{model}` is the model's name.
PREDICT_ROUTE = {
    "asgi": ("/predict", None),
    "floor": ("/predict", None),
    "service": ("/predict", protocols.NATIVE),
    "naive": ("/predict", protocols.NATIVE),
    "peer": ("/v1/models/{model}:predict", protocols.V1),
    "triton": ("/v2/models/{model}/infer", protocols.V2),
}
#: The service's other inference routes, measured beside its /predict.
SERVICE_ROUTES = {
    "v1": ("/v1/models/{model}:predict", protocols.V1),
    "v2": ("/v2/models/{model}/infer", protocols.V2),
}
#: Servers that answer a constant (no model): the HTTP limit and floor.
CONSTANT_SERVERS = frozenset({"asgi", "floor"})


def predict_route(name: str, model: str) -> tuple[str, str | None]:
    """(path, protocol) of server `name`'s predict route for `model`."""
    path, protocol = PREDICT_ROUTE[name]
    return path.format(model=model), protocol


def service_route(kind: str, model: str) -> tuple[str, str]:
    """(path, protocol) of the service's `kind` route ("predict", "v1", "v2", "grad")."""
    if kind == "predict":
        return "/predict", protocols.NATIVE
    if kind == "grad":
        return "/grad", protocols.NATIVE
    path, protocol = SERVICE_ROUTES[kind]
    return path.format(model=model), protocol
