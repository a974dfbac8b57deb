"""HTTP measurements: every server side by side, interleaved, under the same wrk load."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import servers
from bench.common import Server, post_json, running
from bench.loadgen import Load, body_file, run_wrk

CONNECTIONS = (1, 8, 32, 128)
BIG_ROWS = 1024
BIG_CONNECTIONS = 4
GRAD_RUNS = ((1, 1), (1, 32), (64, 1))  # (rows per request, connections)


def example_rows(model_dir: Path, count: int) -> list[list[float]]:
    """Real digit rows from the model's metadata, cycled (or random grey levels)."""
    metadata = json.loads((model_dir / "assets.extra" / "diffround.json").read_text())
    rows = [e["inputs"] for e in metadata.get("examples") or [] if len(e.get("inputs", [])) == 64]
    if not rows:
        rows = np.random.default_rng(0).integers(0, 17, size=(8, 64)).tolist()
    return [[float(v) for v in rows[i % len(rows)]] for i in range(count)]


def _check(server: Server, path: str, body: bytes) -> list | None:
    """POST once; raise unless 200; the answer's 0/1 codes (None for the constant servers)."""
    status, answer = post_json(server.url + path, body)
    if status != 200:
        raise RuntimeError(f"{server.name} {path} answered {status}: {answer[:300]!r}")
    document = json.loads(answer)
    if path == "/grad":
        return None
    return servers.answer_rows(server.name, document)


def _median_load(loads: list[Load]) -> Load:
    """One Load whose rates and percentiles are the medians over repetitions."""
    first = loads[0]
    return Load(
        server=first.server,
        path=first.path,
        rows=first.rows,
        connections=first.connections,
        seconds=round(sum(x.seconds for x in loads), 2),
        requests=sum(x.requests for x in loads),
        rps=statistics.median(x.rps for x in loads),
        p50_ms=statistics.median(x.p50_ms for x in loads),
        p90_ms=statistics.median(x.p90_ms for x in loads),
        p99_ms=statistics.median(x.p99_ms for x in loads),
        max_ms=max(x.max_ms for x in loads),
        errors=sum(x.errors for x in loads),
        cpu_us_per_request=(
            statistics.median(x.cpu_us_per_request for x in loads)
            if all(x.cpu_us_per_request is not None for x in loads)
            else None
        ),
    )


def measure(
    model_dir: Path,
    models_root: Path,
    *,
    seconds: float,
    reps: int,
    with_peer: bool,
    profile_seconds: float | None,
    log: Callable[[str], None],
    with_triton: bool = False,
    connections: tuple[int, ...] = CONNECTIONS,
    big_and_grad: bool = True,
    only: tuple[str, ...] | None = None,
) -> dict:
    """Start every server pinned to the server core, then run the interleaved wrk matrix.

    Each repetition runs every (server, connections) cell once, in the same
    order, so drift in the machine's background load hits all servers alike;
    the table reports medians over repetitions.

    `connections`, `big_and_grad` and `only` (server names) trim the matrix for
    smoke runs of single pieces; the full benchmark uses the defaults.
    """
    under_test = [
        servers.asgi(),
        servers.floor(),
        servers.service(models_root),
        servers.naive(model_dir),
    ]
    if with_peer:
        under_test.append(servers.peer(model_dir))
    if with_triton:
        under_test.append(servers.triton(model_dir))
    if only:
        under_test = [s for s in under_test if s.name in only]
    by_name = {s.name: s for s in under_test}
    one = example_rows(model_dir, 1)
    big = example_rows(model_dir, BIG_ROWS)
    bodies: dict[tuple[str, int], Path] = {}
    for name in by_name:
        bodies[(name, 1)] = body_file(f"{name}-1", servers.predict_body(name, one))
        bodies[(name, BIG_ROWS)] = body_file(f"{name}-{BIG_ROWS}", servers.predict_body(name, big))
    grad_bodies = {
        rows: body_file(f"grad-{rows}", servers.predict_body("service", big[:rows]))
        for rows, _ in GRAD_RUNS
    }
    runs: dict[tuple, list[Load]] = defaultdict(list)
    per_call: dict[int, list[float]] = defaultdict(list)
    result: dict = {"servers": {}, "loads": []}
    with running(under_test):
        answers = {}
        for server in under_test:
            path, _ = servers.PREDICT_ROUTE[server.name]
            answers[server.name] = _check(server, path, bodies[(server.name, 1)].read_bytes())
            result["servers"][server.name] = {"ready_after_s": round(server.ready_after_s or 0, 2)}
        models = [n for n, a in answers.items() if a is not None]
        for name in models:  # the same model must give the same bits everywhere
            if answers[name] != answers[models[0]]:
                raise RuntimeError(
                    f"{name} answered {answers[name]}, {models[0]} {answers[models[0]]}"
                )
        svc = by_name.get("service")
        if svc is not None and big_and_grad:
            _check(svc, "/grad", grad_bodies[1].read_bytes())
        log("  warm-up")
        for server in under_test:  # one short run each: JIT paths, connection pools, caches
            path, _ = servers.PREDICT_ROUTE[server.name]
            run_wrk(
                server.name,
                server.url + path,
                bodies[(server.name, 1)],
                rows=1,
                connections=32,
                seconds=1,
            )
        for rep in range(reps):
            log(f"  repetition {rep + 1}/{reps}")
            for conns in connections:
                for server in under_test:
                    path, _ = servers.PREDICT_ROUTE[server.name]
                    before = _batch_snapshot(svc) if server is svc else None
                    load = run_wrk(
                        server.name,
                        server.url + path,
                        bodies[(server.name, 1)],
                        rows=1,
                        connections=conns,
                        seconds=seconds,
                        server_pid=server.process.pid,
                    )
                    runs[(server.name, path, 1, conns)].append(load)
                    if before is not None:
                        after = _batch_snapshot(svc)
                        calls = after[1] - before[1]
                        if calls > 0:
                            per_call[conns].append((after[0] - before[0]) / calls)
            if not big_and_grad:
                continue
            for rows, grad_conns in GRAD_RUNS:
                load = run_wrk(
                    "service",
                    svc.url + "/grad",
                    grad_bodies[rows],
                    rows=rows,
                    connections=grad_conns,
                    seconds=seconds,
                    server_pid=svc.process.pid,
                )
                runs[("service", "/grad", rows, grad_conns)].append(load)
            for server in under_test:
                if server.name in servers.CONSTANT_SERVERS:
                    continue
                path, _ = servers.PREDICT_ROUTE[server.name]
                load = run_wrk(
                    server.name,
                    server.url + path,
                    bodies[(server.name, BIG_ROWS)],
                    rows=BIG_ROWS,
                    connections=BIG_CONNECTIONS,
                    seconds=seconds,
                    timeout_s=10,
                    server_pid=server.process.pid,
                )
                runs[(server.name, path, BIG_ROWS, BIG_CONNECTIONS)].append(load)
        for server in under_test:
            rss = _rss_mb(server)
            result["servers"][server.name]["rss_mb_after_load"] = rss
        if profile_seconds and svc is not None:
            from bench import profile

            log(f"  profiling the service under 32 connections ({profile_seconds:g} s, py-spy)")
            result["profile"] = profile.record(
                svc, svc.url + "/predict", bodies[("service", 1)], seconds=profile_seconds
            )
    result["loads"] = [_median_load(v).as_dict() for v in runs.values()]
    result["requests_per_model_call"] = {
        str(c): round(statistics.median(v), 2) for c, v in per_call.items()
    }
    return result


def measure_two_workers(
    models_root: Path, model_dir: Path, *, seconds: float, log: Callable[[str], None]
) -> dict:
    """Extra: WORKERS=2, server and wrk unpinned (they share both cores)."""
    server = servers.service(models_root, workers=2, cpus=None, name="service-2w")
    server.ready_streak = 40  # both workers answer 200
    body = body_file("service2-1", servers.predict_body("service", example_rows(model_dir, 1)))
    loads = []
    with running([server]):
        _check(server, "/predict", body.read_bytes())
        run_wrk(
            server.name, server.url + "/predict", body, rows=1, connections=32, seconds=1, cpus=None
        )
        for connections in (32, 128):
            loads.append(
                run_wrk(
                    server.name,
                    server.url + "/predict",
                    body,
                    rows=1,
                    connections=connections,
                    seconds=seconds,
                    cpus=None,
                ).as_dict()
            )
        memory = _worker_memory(server)
    summary = ", ".join(f"{x['rps']:.0f} req/s at {x['connections']}" for x in loads)
    log(f"  WORKERS=2: {summary}")
    return {"ready_after_s": round(server.ready_after_s or 0, 2), "loads": loads, "memory": memory}


def _rss_mb(server: Server) -> float | None:
    import psutil

    try:
        return round(psutil.Process(server.process.pid).memory_info().rss / 2**20, 1)
    except (psutil.Error, AttributeError):
        return None


def _worker_memory(server: Server) -> list[dict]:
    """RSS, PSS and USS of each worker process of a multi-worker uvicorn."""
    import psutil

    out = []
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        if info.rss < 200 * 2**20:  # uvicorn's supervisor and multiprocessing helpers
            continue
        out.append(
            {
                "rss_mb": round(info.rss / 2**20, 1),
                "pss_mb": round(info.pss / 2**20, 1),
                "uss_mb": round(info.uss / 2**20, 1),
            }
        )
    return out


def _batch_snapshot(server: Server) -> tuple[float, float]:
    """(requests coalesced, model calls) so far for serving_default, from /metrics."""
    import urllib.request

    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    total = calls = 0.0
    for line in text.splitlines():
        if 'signature="serving_default"' not in line:
            continue
        if line.startswith("diffround_batch_requests_sum"):
            total += float(line.rpartition(" ")[2])
        elif line.startswith("diffround_batch_requests_count"):
            calls += float(line.rpartition(" ")[2])
    return total, calls
