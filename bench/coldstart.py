"""Cold start (process spawn to first 200 on /readyz) and RSS, against `import tensorflow` alone."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench import servers
from bench.common import PYTHON, REPO_ROOT, SERVER_CPU, base_env, pinned

_IMPORT_TF = "import sys, tensorflow; print('ready', flush=True); sys.stdin.read()"


def import_tensorflow() -> tuple[float, float]:
    """(seconds from spawn to `import tensorflow` done, RSS in MiB then), on the server core."""
    start = time.perf_counter()
    process = subprocess.Popen(
        pinned([PYTHON, "-c", _IMPORT_TF], SERVER_CPU),
        cwd=REPO_ROOT,
        env=base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = process.stdout.readline()
        elapsed = time.perf_counter() - start
        if line.strip() != b"ready":
            raise RuntimeError("python -c 'import tensorflow' failed")
        rss = psutil.Process(process.pid).memory_info().rss / 2**20
    finally:
        process.stdin.close()
        process.wait(30)
    return elapsed, rss


def service_start(models_root: Path, model: str) -> tuple[float, float]:
    """(seconds from spawn to the first 200 on /readyz, RSS in MiB then), one worker, pinned."""
    server = servers.service(models_root, model, name="service-cold").start()
    try:
        elapsed = server.wait_ready()
        rss = psutil.Process(server.process.pid).memory_info().rss / 2**20
    finally:
        server.stop()
    return elapsed, rss


def measure(models_root: Path, model: str, *, reps: int, log: Callable[[str], None]) -> dict:
    """Interleaved repetitions of both; medians."""
    tf_times, tf_rss, svc_times, svc_rss = [], [], [], []
    for rep in range(reps):
        t, r = import_tensorflow()
        tf_times.append(t)
        tf_rss.append(r)
        t, r = service_start(models_root, model)
        svc_times.append(t)
        svc_rss.append(r)
        log(
            f"  repetition {rep + 1}/{reps}: import tensorflow {tf_times[-1]:.2f} s, "
            f"service ready {svc_times[-1]:.2f} s"
        )
    return {
        "import_tf_s": statistics.median(tf_times),
        "import_tf_rss_mb": statistics.median(tf_rss),
        "service_ready_s": statistics.median(svc_times),
        "service_ready_rss_mb": statistics.median(svc_rss),
        "samples": {
            "import_tf_s": [round(x, 3) for x in tf_times],
            "service_ready_s": [round(x, 3) for x in svc_times],
        },
    }
