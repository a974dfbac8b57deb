"""HTTP measurements: every server side by side, interleaved, under the same wrk load."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import protocols, servers
from bench.common import Server, post_json, running
from bench.loadgen import Load, body_file, run_wrk
from bench.modelspec import ModelSpec

CONNECTIONS = (1, 8, 32, 128)
BIG_ROWS = 1024
BIG_CONNECTIONS = 4
GRAD_RUNS = ((1, 1), (1, 32), (64, 1))  # (rows per request, connections)
FORCED_TFLITE = "service-tflite"  # the service with GRAD_RUNTIME=tflite (/grad at 1 row)
#: The service's v1 and v2 routes run beside /predict at these connection counts.
ROUTE_CONNECTIONS = (1, 32)


def exports_gradients(model_dir: Path) -> bool:
    """Whether a version's metadata (`assets.extra/diffround.json`) maps gradients: what
    `/grad` needs. Read from disk, so that no server starts for /grad runs that cannot be."""
    try:
        metadata = json.loads((Path(model_dir) / "assets.extra" / "diffround.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and bool(metadata.get("grad"))


def _post(server: Server, path: str, body: bytes) -> dict:
    """POST once; raise unless 200; the decoded answer."""
    status, answer = post_json(server.url + path, body)
    if status != 200:
        raise RuntimeError(f"{server.name} {path} answered {status}: {answer[:300]!r}")
    return json.loads(answer)


def check_answers(
    spec: ModelSpec, answers: dict[str, tuple[str, dict]], reference: str | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Decode each (protocol, answer) and insist every one equals the first (or `reference`).

    Raises:
        RuntimeError: naming the route and the outputs that differ.
    """
    arrays = {k: protocols.answer_arrays(p, spec, doc) for k, (p, doc) in answers.items()}
    if not arrays:
        return arrays
    first = reference or next(iter(arrays))
    for key, got in arrays.items():
        problems = protocols.differences(arrays[first], got)
        if problems:
            raise RuntimeError(
                f"{key} answered differently from {first}: {'; '.join(problems)} "
                f"({ {k: v.tolist() for k, v in got.items()} } vs "
                f"{ {k: v.tolist() for k, v in arrays[first].items()} })"
            )
    return arrays


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
    model: str,
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
    spec: ModelSpec | None = None,
) -> dict:
    """Start every server pinned to the server core, then run the interleaved wrk matrix.

    The request bodies come from the model's own signature and examples: the service's
    `GET /models/{model}` (or `spec` when the service is not under test). Before any
    load, every model server's answer to the same 1-row request (and the service's on
    each of its routes) must have the same bytes in every output.

    Each repetition runs every (server, connections) cell once, in the same
    order, so drift in the machine's background load hits all servers alike;
    the service's /v1 and /v2 routes run right after its /predict at 1 and 32
    connections; the table reports medians over repetitions.

    `connections`, `big_and_grad` and `only` (server names) trim the matrix for
    smoke runs of single pieces; the full benchmark uses the defaults.
    """
    under_test = [
        servers.asgi(),
        servers.floor(),
        servers.service(models_root, model),
        servers.naive(model_dir, model),
    ]
    if with_peer:
        under_test.append(servers.peer(model_dir, model))
    if with_triton:
        under_test.append(servers.triton(model_dir, model))
    if only:
        under_test = [s for s in under_test if s.name in only]
    # /grad and /predict once more, 1 row, 1 connection, on a service with `grad` forced
    # onto TFLite (`GRAD_RUNTIME=tflite`: converted with its gradient ops rewritten); only
    # for a model whose metadata maps gradients (else /grad answers 404 anyway).
    forced = (
        [servers.service(models_root, model, grad_runtime="tflite", name=FORCED_TFLITE)]
        if big_and_grad
        and any(s.name == "service" for s in under_test)
        and exports_gradients(model_dir)
        else []
    )
    by_name = {s.name: s for s in under_test + forced}
    svc = by_name.get("service")
    runs: dict[tuple, list[Load]] = defaultdict(list)
    per_call: dict[int, list[float]] = defaultdict(list)
    result: dict = {"model": model, "servers": {}, "loads": []}
    with running(under_test + forced):
        if svc is not None:
            spec = ModelSpec.from_service(svc.url, model)
        if spec is None:
            raise RuntimeError("no model spec: run the service or pass one")
        result["spec"] = {
            "inputs": [[t.name, t.dtype, list(t.shape)] for t in spec.inputs],
            "outputs": [[t.name, t.dtype, list(t.shape)] for t in spec.outputs],
            "examples": len(spec.examples),
        }
        one, big = spec.batch(1), spec.batch(BIG_ROWS)
        # (server, path) -> (protocol, 1-row body, big body)
        cells: dict[tuple[str, str], tuple[str | None, Path, Path]] = {}
        for server in under_test:
            path, protocol = servers.predict_route(server.name, model)
            wire = protocol or protocols.NATIVE
            cells[(server.name, path)] = (
                protocol,
                body_file(f"{server.name}-1", protocols.body(wire, spec, one)),
                body_file(f"{server.name}-{BIG_ROWS}", protocols.body(wire, spec, big)),
            )
        for server in forced:  # the same bodies as the service's /predict
            cells[(server.name, "/predict")] = cells[("service", "/predict")]
        extra_routes: list[str] = []
        if svc is not None:
            for kind in servers.SERVICE_ROUTES:
                path, protocol = servers.service_route(kind, model)
                cells[("service", path)] = (
                    protocol,
                    body_file(f"service-{kind}-1", protocols.body(protocol, spec, one)),
                    body_file(f"service-{kind}-{BIG_ROWS}", protocols.body(protocol, spec, big)),
                )
                extra_routes.append(path)
        grad_bodies = {
            rows: body_file(
                f"grad-{rows}", protocols.body(protocols.NATIVE, spec, spec.batch(rows))
            )
            for rows, _ in GRAD_RUNS
        }
        grad = svc is not None and big_and_grad and spec.gradients
        forced = forced if grad else []
        answers = {}
        for (name, path), (protocol, one_body, _) in cells.items():
            document = _post(by_name[name], path, one_body.read_bytes())
            if protocol is not None:
                answers[f"{name} {path}"] = (protocol, document)
        reference = next((k for k in answers if k.startswith("service ")), None)
        arrays = check_answers(spec, answers, reference)
        result["answer"] = {k: v.tolist() for k, v in next(iter(arrays.values())).items()}
        result["checked"] = sorted(answers)
        log(f"  same answer from {len(answers)} routes: {result['answer']}")
        for server in under_test:
            result["servers"][server.name] = {"ready_after_s": round(server.ready_after_s or 0, 2)}
        if grad:
            for server in [svc, *forced]:
                _post(server, "/grad", grad_bodies[1].read_bytes())

        def run(name: str, path: str, conns: int, rows: int = 1, body: Path | None = None) -> None:
            server = by_name[name]
            if body is None:
                body = cells[(name, path)][1 if rows == 1 else 2]
            load = run_wrk(
                name,
                server.url + path,
                body,
                rows=rows,
                connections=conns,
                seconds=seconds,
                server_pid=server.process.pid,
                timeout_s=10 if rows > 1 else 5,
            )
            runs[(name, path, rows, conns)].append(load)

        log("  warm-up")
        for (name, path), (_, one_body, _) in cells.items():  # JIT paths, pools, caches
            run_wrk(name, by_name[name].url + path, one_body, rows=1, connections=32, seconds=1)
        for rep in range(reps):
            log(f"  repetition {rep + 1}/{reps}")
            for conns in connections:
                for server in under_test:
                    path, _ = servers.predict_route(server.name, model)
                    before = _batch_snapshot(svc) if server is svc else None
                    run(server.name, path, conns)
                    if before is not None:
                        after = _batch_snapshot(svc)
                        calls = after[1] - before[1]
                        if calls > 0:
                            per_call[conns].append((after[0] - before[0]) / calls)
                    if server is svc and conns in ROUTE_CONNECTIONS:
                        for extra in extra_routes:
                            run("service", extra, conns)
            if not big_and_grad:
                continue
            if grad:
                for rows, grad_conns in GRAD_RUNS:
                    run("service", "/grad", grad_conns, rows, body=grad_bodies[rows])
                for server in forced:
                    run(server.name, "/predict", 1)
                    run(server.name, "/grad", 1, 1, body=grad_bodies[1])
            for server in under_test:
                if server.name in servers.CONSTANT_SERVERS:
                    continue
                path, _ = servers.predict_route(server.name, model)
                run(server.name, path, BIG_CONNECTIONS, BIG_ROWS)
        for server in under_test:
            rss = _rss_mb(server)
            result["servers"][server.name]["rss_mb_after_load"] = rss
        if profile_seconds and svc is not None:
            from bench import profile

            log(f"  profiling the service under 32 connections ({profile_seconds:g} s, py-spy)")
            result["profile"] = profile.record(
                svc,
                svc.url + "/predict",
                cells[("service", "/predict")][1],
                seconds=profile_seconds,
            )
            if grad:
                log(f"  profiling /grad, 1 row, 1 connection ({profile_seconds:g} s, py-spy)")
                result["profile_grad"] = profile.record(
                    svc,
                    svc.url + "/grad",
                    grad_bodies[1],
                    seconds=profile_seconds,
                    connections=1,
                    name="grad",
                    gil=False,
                )
    result["loads"] = [_median_load(v).as_dict() for v in runs.values()]
    result["requests_per_model_call"] = {
        str(c): round(statistics.median(v), 2) for c, v in per_call.items()
    }
    return result


def measure_two_workers(
    models_root: Path, model: str, *, seconds: float, log: Callable[[str], None]
) -> dict:
    """Extra: WORKERS=2, server and wrk unpinned (they share both cores)."""
    server = servers.service(models_root, model, workers=2, cpus=None, name="service-2w")
    server.ready_streak = 40  # both workers answer 200
    loads = []
    with running([server]):
        spec = ModelSpec.from_service(server.url, model)
        body = body_file("service2-1", protocols.body(protocols.NATIVE, spec, spec.batch(1)))
        _post(server, "/predict", body.read_bytes())
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
