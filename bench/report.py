"""The table of ratios against the targets, and docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NOTES_BEGIN = "<!-- notes:begin (kept by python -m bench across runs) -->"
NOTES_END = "<!-- notes:end -->"
#: The goal of a row measured for reference only (a limit, not a target).
REFERENCE = "(a limit)"
DEFAULT_MODEL = "digit-bits"
#: The service's v1 and v2 routes against its /predict: req/s at least this share.
ROUTE_SHARE = 0.8
#: 1-row /predict CPU per request against the committed run: at most this ratio (issue 11).
CPU_REGRESSION = 1.10


def find(loads: list[dict], server: str, path: str, rows: int, connections: int) -> dict | None:
    for load in loads:
        if (
            load["server"] == server
            and "/" + load["path"].lstrip("/") == path
            and load["rows"] == rows
            and load["connections"] == connections
        ):
            return load
    return None


def _target(
    name: str,
    measured: str,
    ratio: float | None,
    goal: str,
    ok: bool | None,
    miss: str = "",
    cpu: float | None = None,
) -> dict[str, Any]:
    return {
        "cpu_ratio": cpu,
        "target": name,
        "measured": measured,
        "ratio": ratio,
        "goal": goal,
        "pass": ok,
        "miss": miss,
    }


def targets(results: dict) -> list[dict[str, Any]]:
    """Each target of issue 6 as (measured, ratio, goal, pass/miss, by how much)."""
    out: list[dict[str, Any]] = []
    http = results.get("http") or {}
    loads = http.get("loads") or []
    model = _model(results)
    svc32 = find(loads, "service", "/predict", 1, 32)
    if svc32:
        asgi = find(loads, "asgi", "/predict", 1, 32)
        if asgi and asgi["rps"]:
            cpu = None
            if svc32.get("cpu_us_per_request") and asgi.get("cpu_us_per_request"):
                cpu = asgi["cpu_us_per_request"] / svc32["cpu_us_per_request"]
            out.append(
                _target(
                    "/predict 1-row, 32 conns: req/s vs raw ASGI constant (the HTTP limit)",
                    f"{svc32['rps']:,.0f} vs {asgi['rps']:,.0f} req/s",
                    svc32["rps"] / asgi["rps"],
                    REFERENCE,
                    None,
                    cpu=cpu,
                )
            )
        for other, goal, need in (
            ("floor", ">= 1.0", 1.0),
            ("naive", ">= 5.0", 5.0),
            ("peer", "> 1.0", 1.0),
            ("triton", "> 1.0", 1.0),
        ):
            ref = find(loads, other, _predict_path(other, model), 1, 32)
            if ref is None or not ref["rps"]:
                out.append(
                    _target(
                        f"/predict 1-row, 32 conns: req/s vs {_label(other)}",
                        "not measured",
                        None,
                        goal,
                        None,
                    )
                )
                continue
            ratio = svc32["rps"] / ref["rps"]
            ok = ratio > need if other in ("peer", "triton") else ratio >= need
            cpu = None
            if svc32.get("cpu_us_per_request") and ref.get("cpu_us_per_request"):
                cpu = ref["cpu_us_per_request"] / svc32["cpu_us_per_request"]
            out.append(
                _target(
                    f"/predict 1-row, 32 conns: req/s vs {_label(other)}",
                    f"{svc32['rps']:,.0f} vs {ref['rps']:,.0f} req/s",
                    ratio,
                    goal,
                    ok,
                    "" if ok else f"needs {need / ratio:.2f}x more",
                    cpu=cpu,
                )
            )
        p99 = svc32["p99_ms"]
        floor32 = find(loads, "floor", "/predict", 1, 32)
        if floor32 and floor32["p99_ms"]:
            limit_ms = floor32["p99_ms"]
            out.append(
                _target(
                    "p99 at 32 conns vs the trivial endpoint's",
                    f"{p99:.1f} vs {limit_ms:.1f} ms",
                    p99 / limit_ms,
                    "<= 1.0",
                    p99 <= limit_ms,
                    "" if p99 <= limit_ms else f"{p99 - limit_ms:.1f} ms over",
                )
            )
    svc1 = find(loads, "service", "/predict", 1, 1)
    naive1 = find(loads, "naive", "/predict", 1, 1)
    if svc1 and naive1 and naive1["p50_ms"]:
        ratio = svc1["p50_ms"] / naive1["p50_ms"]
        out.append(
            _target(
                "/predict 1-row, 1 conn: p50 vs naive",
                f"{svc1['p50_ms']:.2f} vs {naive1['p50_ms']:.2f} ms",
                ratio,
                "<= 0.5",
                ratio <= 0.5,
                "" if ratio <= 0.5 else f"{ratio / 0.5:.2f}x over",
            )
        )
    for kind, label in (("v1", "/v1 :predict"), ("v2", "/v2 infer (JSON)")):
        for conns in (1, 32):
            route = find(loads, "service", _route_path(kind, model), 1, conns)
            predict = find(loads, "service", "/predict", 1, conns)
            if not route or not predict or not predict["rps"]:
                continue
            ratio = route["rps"] / predict["rps"]
            cpu = None
            if route.get("cpu_us_per_request") and predict.get("cpu_us_per_request"):
                cpu = predict["cpu_us_per_request"] / route["cpu_us_per_request"]
            ok = ratio >= ROUTE_SHARE
            out.append(
                _target(
                    f"{label} 1-row, {conns} conn{'s' if conns > 1 else ''}: req/s vs /predict",
                    f"{route['rps']:,.0f} vs {predict['rps']:,.0f} req/s",
                    ratio,
                    f">= {ROUTE_SHARE:.2f}",
                    ok,
                    "" if ok else f"needs {ROUTE_SHARE / ratio:.2f}x more",
                    cpu=cpu,
                )
            )
    baseline = results.get("baseline") or {}
    for conns in (1, 32):
        before = baseline.get(f"cpu_us_c{conns}")
        now = find(loads, "service", "/predict", 1, conns)
        if not before or not now or not now.get("cpu_us_per_request"):
            continue
        ratio = now["cpu_us_per_request"] / before
        ok = ratio <= CPU_REGRESSION
        out.append(
            _target(
                f"/predict 1-row, {conns} conn{'s' if conns > 1 else ''}: server CPU per "
                f"request vs the committed run ({baseline.get('date')})",
                f"{now['cpu_us_per_request']:,.0f} vs {before:,.0f} us",
                ratio,
                f"<= {CPU_REGRESSION:.2f}",
                ok,
                "" if ok else f"{(ratio - 1) * 100:.0f}% more CPU",
            )
        )
    for conns in (1, 32):
        # The same comparison with each run's CPU divided by its own trivial route's: what
        # the service costs beyond the HTTP stack, steadier under other load on the machine.
        before, before_floor = (baseline.get(f"{k}_c{conns}") for k in ("cpu_us", "floor_cpu_us"))
        now = find(loads, "service", "/predict", 1, conns)
        floor = find(loads, "floor", "/predict", 1, conns)
        if not (before and before_floor and now and floor):
            continue
        if not (now.get("cpu_us_per_request") and floor.get("cpu_us_per_request")):
            continue
        share_now = now["cpu_us_per_request"] / floor["cpu_us_per_request"]
        share_before = before / before_floor
        ratio = share_now / share_before
        ok = ratio <= CPU_REGRESSION
        out.append(
            _target(
                f"/predict 1-row, {conns} conn{'s' if conns > 1 else ''}: server CPU per "
                "request in the trivial route's CPU, vs the committed run's",
                f"{share_now:.2f} vs {share_before:.2f} x the trivial route",
                ratio,
                f"<= {CPU_REGRESSION:.2f}",
                ok,
                "" if ok else f"{(ratio - 1) * 100:.0f}% more CPU",
            )
        )
    runtime = results.get("runtimes") or {}
    if runtime.get("tflite_b1_us") or runtime.get("savedmodel_b1_us"):
        served = runtime.get(f"{runtime['chosen']}_b1_us")
        prefix = "graph_" if runtime["chosen"] == "graph" else ""
        equal = runtime["chosen"] == "savedmodel" or (
            runtime.get(f"{prefix}equal_b1", False) and runtime.get(f"{prefix}equal_b64", False)
        )
        ok = served is not None and served <= 20.0 and equal
        out.append(
            _target(
                "in-process model call, 1 row (us, runtime chosen at load; identical answers)",
                f"{served:.1f} us ({runtime['chosen']}; SavedModel "
                f"{runtime['savedmodel_b1_us']:.0f} us; identical: {'yes' if equal else 'NO'})",
                served / 20.0,
                "<= 1.0",
                ok,
                "" if ok else f"{served / 20.0:.1f}x over or answers differ",
            )
        )
    limit = results.get("limit") or {}
    big = find(loads, "service", "/predict", 1024, 4)
    if big and limit.get("json_call_b1024_rows_per_s"):
        ref = limit["json_call_b1024_rows_per_s"]
        ratio = big["rps"] * 1024 / ref
        out.append(
            _target(
                "1024-row requests: rows/s vs in-process JSON decode + call",
                f"{big['rps'] * 1024:,.0f} vs {ref:,.0f} rows/s",
                ratio,
                ">= 0.50",
                ratio >= 0.5,
                "" if ratio >= 0.5 else f"needs {0.5 / ratio:.2f}x more",
            )
        )
    for server, setting in (("service", ""), ("service-tflite", ", GRAD_RUNTIME=tflite")):
        g1 = find(loads, server, "/grad", 1, 1)
        p1 = find(loads, server, "/predict", 1, 1)
        if g1 and p1:
            ratio = g1["p50_ms"] / p1["p50_ms"]
            out.append(
                _target(
                    f"/grad batch 1 latency vs /predict{setting} (p50, 1 conn)",
                    f"{g1['p50_ms']:.2f} vs {p1['p50_ms']:.2f} ms",
                    ratio,
                    "<= 2.0",
                    ratio <= 2.0,
                    "" if ratio <= 2 else f"{ratio / 2:.2f}x over",
                )
            )
    cold = results.get("cold") or {}
    if cold:
        ratio = cold["service_ready_s"] / cold["import_tf_s"]
        out.append(
            _target(
                "cold start vs `import tensorflow`",
                f"{cold['service_ready_s']:.2f} vs {cold['import_tf_s']:.2f} s",
                ratio,
                "<= 2.0",
                ratio <= 2.0,
                "" if ratio <= 2 else f"{ratio / 2:.2f}x over",
            )
        )
        rss = (http.get("servers", {}).get("service", {}) or {}).get("rss_mb_after_load")
        rss = rss or cold["service_ready_rss_mb"]
        ratio = rss / cold["import_tf_rss_mb"]
        out.append(
            _target(
                "RSS per worker (after load) vs `import tensorflow`",
                f"{rss:,.0f} vs {cold['import_tf_rss_mb']:,.0f} MiB",
                ratio,
                "<= 1.2",
                ratio <= 1.2,
                "" if ratio <= 1.2 else f"{ratio / 1.2:.2f}x over",
            )
        )
    surrogates = results.get("surrogates") or {}
    methods = surrogates.get("methods") or {}
    ste = (methods.get("ste") or {}).get("xla_ms")
    if isinstance(ste, float):
        ratios = {}
        for method, row in methods.items():
            value = row.get("xla_ms")
            ratios[method] = value / ste if isinstance(value, float) else float("inf")
        over = sorted(((r, m) for m, r in ratios.items() if r > 3.0), reverse=True)
        worst_ratio, worst = max((r, m) for m, r in ratios.items())
        measured = (
            f"{len(methods) - len(over)} of {len(methods)} within; over: "
            + ", ".join(f"`{m}` {r:.0f}x" for r, m in over)
            if over
            else f"all {len(methods)} within (worst `{worst}`)"
        )
        out.append(
            _target(
                "every surrogate fwd+bwd vs `ste`, XLA (worst)",
                measured,
                worst_ratio,
                "<= 3.0",
                not over,
                "" if not over else f"{worst_ratio / 3:.0f}x over",
            )
        )
    return out


def _predict_path(server: str, model: str = DEFAULT_MODEL) -> str:
    return {
        "peer": f"/v1/models/{model}:predict",
        "triton": f"/v2/models/{model}/infer",
    }.get(server, "/predict")


def _route_path(kind: str, model: str) -> str:
    """The service's route of `kind`: predict, v1, v2, grad."""
    return {
        "predict": "/predict",
        "v1": f"/v1/models/{model}:predict",
        "v2": f"/v2/models/{model}/infer",
        "grad": "/grad",
    }[kind]


def _model(results: dict) -> str:
    return (results.get("http") or {}).get("model") or DEFAULT_MODEL


def baseline_from(text: str | None) -> dict | None:
    """The committed run's 1-row CPU per request (us) at 1 and 32 connections.

    Read from a previous docs/benchmarks.md: its "HTTP: 1-row requests" table
    (cells `req/s (p50 / p99 ms; CPU us/req)`, one column per server, found by its
    header: `service`, and `trivial endpoint` when present) and the date of its
    "Generated by" line. None when the text has no such table.

    Returns:
        `{"cpu_us_c1", "cpu_us_c32"}` for the service, `{"floor_cpu_us_c1", ...}` for
        the trivial route, and `"date"`.
    """
    if not text or "## HTTP: 1-row requests" not in text:
        return None
    section = text.split("## HTTP: 1-row requests", 1)[1].split("\n## ", 1)[0]
    out: dict[str, Any] = {}
    # Each table's own header says which column is which; a table whose header names
    # neither server (the service's routes side by side) is skipped, not read with the
    # columns of the table before it. No header at all: the service is column 1.
    columns: dict[str, int] | None = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "connections":
            columns = {}
            for i, head in enumerate(cells):
                for prefix, key in (("service:", "cpu_us"), ("trivial endpoint:", "floor_cpu_us")):
                    if head.startswith(prefix):
                        columns[key] = i
            continue
        if len(cells) < 2 or cells[0] not in ("1", "32"):
            continue
        for key, index in ({"cpu_us": 1} if columns is None else columns).items():
            found = re.search(r";\s*([\d,.]+)\)", cells[index]) if index < len(cells) else None
            if found:
                out[f"{key}_c{cells[0]}"] = float(found.group(1).replace(",", ""))
    if not out:
        return None
    date = re.search(r"\) on ([^;]+?); `make bench`", text)
    out["date"] = date.group(1) if date else "unknown date"
    return out


def _label(server: str) -> str:
    return {
        "asgi": "raw ASGI",
        "floor": "trivial endpoint",
        "naive": "naive",
        "peer": "KServe",
        "triton": "Triton (PyTriton)",
        "service-tflite": "service, GRAD_RUNTIME=tflite",
    }.get(server, server)


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | measured | ratio | goal | result | same ratio from CPU per request |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        cpu = "" if row.get("cpu_ratio") is None else f"{row['cpu_ratio']:.2f}"
        result = (
            "reference"
            if row["goal"] == REFERENCE
            else "not measured"
            if row["pass"] is None
            else "pass"
            if row["pass"]
            else f"**miss** ({row['miss']})"
        )
        lines.append(
            f"| {row['target']} | {row['measured']} | {ratio} | {row['goal']} | {result} | {cpu} |"
        )
    return "\n".join(lines)


def _http_table(loads: list[dict], model: str = DEFAULT_MODEL) -> str:
    names = [
        n
        for n in ("service", "asgi", "floor", "naive", "peer", "triton")
        if any(x["server"] == n for x in loads)
    ]
    head = (
        "| connections | "
        + " | ".join(
            f"{_label(n) if n != 'service' else 'service'}: req/s (p50 / p99 ms; CPU us/req)"
            for n in names
        )
        + " |"
    )
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for c in (1, 8, 32, 128):
        cells = []
        for n in names:
            load = find(loads, n, _predict_path(n, model), 1, c)
            cells.append(
                "-"
                if load is None
                else f"{load['rps']:,.0f} ({load['p50_ms']:.1f} / {load['p99_ms']:.1f}; "
                f"{load.get('cpu_us_per_request') or 0:,.0f})"
                + (f" [{load['errors']} errors]" if load["errors"] else "")
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spec_text(spec: dict | None) -> str:
    if not spec:
        return "(not read)"

    def side(items: list) -> str:
        return ", ".join(f"`{n}` {d} {shape}" for n, d, shape in items)

    return (
        f"{side(spec['inputs'])} -> {side(spec['outputs'])}; {spec.get('examples', 0)} "
        "metadata examples"
    )


def _routes_table(loads: list[dict], model: str) -> str:
    lines = [
        "| connections | /predict | /v1 :predict | /v2 infer | /grad |",
        "|---|---|---|---|---|",
    ]
    for c in (1, 32):
        cells = []
        for kind in ("predict", "v1", "v2", "grad"):
            load = find(loads, "service", _route_path(kind, model), 1, c)
            cells.append(
                "-"
                if load is None
                else f"{load['rps']:,.0f} ({load['p50_ms']:.2f} / {load['p99_ms']:.1f}; "
                f"{load.get('cpu_us_per_request') or 0:,.0f})"
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nCells: req/s (p50 / p99 ms; server CPU us per request)."


def render(results: dict, command: str, previous: str | None) -> str:
    """docs/benchmarks.md: command, machine, targets, details, profile, kept notes."""
    meta = results["machine"]
    rows = targets(results)
    http = results.get("http") or {}
    loads = http.get("loads") or []
    limit = results.get("limit") or {}
    model = _model(results)
    out = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` ({results['mode']} run, {results.get('elapsed_s', 0) / 60:.0f} "
        f"minutes) on {meta['date']}; `make bench` runs the full one.",
        "",
        "Absolute numbers on this shared 2-core VM move by +-20% or more from run to run "
        "(other work ran on the machine at the same time: load average "
        f"{meta['load_average_at_start']} at the start"
        + (
            f", {results['load_average_at_end']} at the end"
            if results.get("load_average_at_end")
            else ""
        )
        + "), so every target is a ratio of two "
        "numbers measured side by side in this run, interleaved repetition by repetition.",
        "",
        f"- `uptime` before: `{results.get('uptime_at_start', '?')}`",
        f"- `uptime` after: `{results.get('uptime_at_end', '?')}`",
        f"- Model: `{model}` ({(results.get('model') or {}).get('dir', '?')}); signature "
        f"`serving_default` {_spec_text(http.get('spec'))}.",
        "",
        "## Machine",
        "",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB; {meta['os']}",
        f"- Python {meta['python']}, TensorFlow {meta['tensorflow']}, FastAPI {meta['fastapi']}, "
        f"uvicorn {meta['uvicorn']} (uvloop {meta['uvloop']}, httptools {meta['httptools']}), "
        f"orjson {meta['orjson']}; {meta['wrk']}",
        "- Load: `wrk -t1` pinned to core 0 (`taskset -c 0`) with `bench/post.lua`; each server "
        "pinned to core 1 with one worker (WORKERS=1); TensorFlow at 1 intra-op / 1 inter-op "
        "thread in the service, the in-process limit and the peers; all traffic on 127.0.0.1.",
        f"- Each HTTP cell: median of {results['reps']} interleaved runs of "
        f"{results['seconds']:g} s.",
        "",
        "## Targets",
        "",
        targets_table(rows),
        "",
    ]
    if limit:
        out += [
            "## The limit: the SavedModel in-process (one core, 1/1 threads)",
            "",
            "| what | calls/s | rows/s |",
            "|---|---|---|",
        ]
        for key, label in (
            ("call_b1", "`serving_default`, batch 1"),
            ("call_b64", "`serving_default`, batch 64"),
            ("call_b1024", "`serving_default`, batch 1024"),
            ("json_call_b1", "orjson decode + NumPy + call, 1 row"),
            ("json_call_b1024", "orjson decode + NumPy + call, 1024 rows"),
        ):
            if f"{key}_calls_per_s" in limit:
                out.append(
                    f"| {label} | {limit[f'{key}_calls_per_s']:,.0f} | "
                    f"{limit[f'{key}_rows_per_s']:,.0f} |"
                )
        for key, label in (("grad_b1", "`grad`, batch 1"), ("grad_b64", "`grad`, batch 64")):
            if f"{key}_calls_per_s" in limit:
                calls = limit[f"{key}_calls_per_s"]
                rows_n = 1 if key == "grad_b1" else 64
                out.append(f"| {label} | {calls:,.0f} | {calls * rows_n:,.0f} |")
        out.append("")
    runtime = results.get("runtimes") or {}
    if runtime:
        out += _runtime_section(runtime)
    if loads:
        per_call = http.get("requests_per_model_call") or {}
        out += [
            "## HTTP: 1-row requests",
            "",
            "Service = `python -m app`; raw ASGI = `bench/raw_asgi_app.py` (a plain ASGI "
            "callable returning a constant: the Python HTTP limit, same uvicorn options); "
            "trivial endpoint = `bench/floor_app.py` (a FastAPI route "
            "returning a constant dict, same uvicorn options); naive = `bench/naive_server.py` "
            "(pydantic nested lists typed from the signature, e.g. `list[list[float]]`, one "
            "`serving_default` call per request); "
            "KServe = `bench/peer_kserve.py` (KServe "
            f"{results.get('peer_version', '0.21')} Python model server, v1 protocol, same "
            "SavedModel, gRPC, latency log and access log off); Triton = `bench/peer_triton.py` "
            f"(Triton Inference Server through {results.get('triton_version', 'PyTriton 0.7.0')}: "
            "Python backend calling the same SavedModel, dynamic batching with no queue delay, "
            f"v2 JSON `/v2/models/{model}/infer`). Every request body comes from the "
            "model's signature and metadata examples; before the load, every server's answer "
            f"to the same 1-row request was checked to have the same bytes in every output "
            f"({', '.join('`' + c + '`' for c in http.get('checked') or [])}: "
            f"`{http.get('answer')}`).",
            "",
            _http_table(loads, model),
            "",
            "The service's inference routes side by side (same model, same rows; v1 row "
            "form, v2 JSON):",
            "",
            _routes_table(loads, model),
            "",
        ]
        if per_call:
            out += [
                "Requests per model call in the service (dynamic batching, from its "
                "`/metrics`): " + ", ".join(f"{v} at {c}" for c, v in per_call.items()) + ".",
                "",
            ]
        out += [
            "## Large requests and /grad",
            "",
            "| server | request | connections | req/s | rows/s | p50 ms | p99 ms | CPU us/req |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for load in loads:
            forced = load["server"] == "service-tflite"
            if load["rows"] == 1 and "grad" not in load["path"] and not forced:
                continue
            out.append(
                f"| {_label(load['server']) if load['server'] != 'service' else 'service'} "
                f"| {'/' + load['path'].lstrip('/')} x {load['rows']} rows "
                f"| {load['connections']} | {load['rps']:,.1f} | "
                f"{load['rps'] * load['rows']:,.0f} | {load['p50_ms']:.1f} | "
                f"{load['p99_ms']:.1f} | {load.get('cpu_us_per_request') or 0:,.0f} |"
            )
        out.append("")
    cold = results.get("cold")
    if cold:
        servers = http.get("servers") or {}
        out += [
            "## Cold start and memory",
            "",
            "| what | time to ready (s) | RSS (MiB) |",
            "|---|---|---|",
            f'| `python -c "import tensorflow"` (spawn to import done) | '
            f"{cold['import_tf_s']:.2f} | {cold['import_tf_rss_mb']:,.0f} |",
            f"| service, 1 worker (spawn to first 200 on `/readyz`) | "
            f"{cold['service_ready_s']:.2f} | {cold['service_ready_rss_mb']:,.0f} |",
        ]
        for name in ("service", "naive", "peer", "triton", "floor", "asgi"):
            rss = (servers.get(name) or {}).get("rss_mb_after_load")
            if rss:
                out.append(
                    f"| {_label(name) if name != 'service' else 'service'}, after the "
                    f"load runs | - | {rss:,.0f} |"
                )
        out += [
            "",
            f"Samples (s): import {cold['samples']['import_tf_s']}, "
            f"service {cold['samples']['service_ready_s']}.",
            "",
        ]
    two = results.get("workers2")
    if two:
        out += ["## Extra: WORKERS=2, unpinned (server and wrk share both cores)", ""]
        out.append(
            f"Ready after {two['ready_after_s']:.2f} s. "
            + "; ".join(
                f"{x['connections']} connections: {x['rps']:,.0f} req/s, p50 {x['p50_ms']:.1f} ms, "
                f"p99 {x['p99_ms']:.1f} ms"
                for x in two["loads"]
            )
            + "."
        )
        if two.get("memory"):
            out.append(
                "Per worker: "
                + "; ".join(
                    f"RSS {m['rss_mb']:,.0f} MiB (PSS {m['pss_mb']:,.0f}, USS {m['uss_mb']:,.0f})"
                    for m in two["memory"]
                )
                + "."
            )
        out.append("")
    surrogates = results.get("surrogates")
    if surrogates and surrogates.get("methods"):
        methods = surrogates["methods"]
        ste = methods.get("ste", {})
        out += [
            f"## Surrogates: forward + backward on {surrogates['elements']:,} float32 "
            "elements (one core)",
            "",
            "`tf.function` computing `tape.gradient(reduce_sum(surrogate(x)), x)`, default "
            "parameters; ms per call (fastest of repeated calls, one core); ratio to `ste` "
            "in the same "
            "mode.",
            "",
            "| method | graph ms | / ste | XLA ms | / ste (XLA) |",
            "|---|---|---|---|---|",
        ]
        for method, row in methods.items():
            cells = []
            for key in ("graph_ms", "xla_ms"):
                value, ref = row.get(key), ste.get(key)
                if isinstance(value, float) and isinstance(ref, float):
                    cells += [f"{value:.2f}", f"{value / ref:.2f}"]
                else:
                    cells += [str(value), "-"]
            out.append(f"| `{method}` | " + " | ".join(cells) + " |")
        out.append("")
    for key, title in (
        ("profile", "the service's /predict under 32 connections"),
        ("profile_grad", "the service's /grad, 1 row, 1 connection"),
    ):
        prof = http.get(key) or {}
        if prof:
            out += _profile_section(prof, title)
    out += ["## Notes", "", NOTES_BEGIN, _kept_notes(previous), NOTES_END, ""]
    return "\n".join(out)


def _profile_section(prof: dict, title: str) -> list[str]:
    out = [f"## Profile: {title} (py-spy, 200 Hz)", ""]
    if "skipped" in prof:
        return [*out, f"Skipped: {prof['skipped']}", ""]
    if prof.get("gil", True):
        how = (
            "`py-spy record --gil`: only while the worker holds the GIL, so idle time is left "
            "out, and so is TensorFlow's kernel time, which runs without the GIL: the model row "
            "is the Python side of the call"
        )
    else:
        how = (
            "`py-spy record` without `--gil`: every thread's stack while not idle, so the "
            "model's kernels count in the model row; uvloop's own C work shows as "
            "`Runner.run`"
        )
    out += [
        f"{prof['samples']} samples ({how}). Share by component (a sample goes to the "
        "innermost frame that matches):",
        "",
        "| component | share |",
        "|---|---|",
    ]
    out += [f"| {name} | {share}% |" for name, share in prof["buckets"]]
    out += ["", "Top functions by self time:", "", "| function | self |", "|---|---|"]
    out += [f"| `{frame[:110]}` | {share}% |" for frame, share in prof["self_top"]]
    out.append("")
    return out


def _kept_notes(previous: str | None) -> str:
    if previous and NOTES_BEGIN in previous and NOTES_END in previous:
        return previous.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    return "(Hand-written analysis goes here; python -m bench keeps it across runs.)"


def write(path: Path, results: dict, command: str) -> None:
    previous = path.read_text() if path.exists() else None
    path.write_text(render(results, command, previous))


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _runtime_section(runtime: dict) -> list[str]:
    """The in-process runtimes: `serving_default` and `grad` on each runtime, and the choice."""
    out = [
        "## The model runtimes in-process (one core, 1/1 threads)",
        "",
        "One runner call (`app/runtimes.py`: NumPy in, NumPy out, input checks included), "
        "the same rows through each runtime: the SavedModel's concrete function, TFLite "
        "(forced), and the graph runtime (`app/graph_runner.py`: the frozen graph run by "
        "a Session in the caller's thread, where proven bit-identical).",
        "",
        "| signature | rows | SavedModel us/call | TFLite us/call | graph us/call | "
        "TFLite same bytes | graph same bytes |",
        "|---|---|---|---|---|---|---|",
    ]

    def same(key: str) -> str:
        value = runtime.get(key)
        return "-" if value is None else "yes" if value else "**no**"

    for batch in (1, 64):
        out.append(
            f"| `serving_default` | {batch} | {_us(runtime.get(f'savedmodel_b{batch}_us'))} | "
            f"{_us(runtime.get(f'tflite_b{batch}_us'))} | "
            f"{_us(runtime.get(f'graph_b{batch}_us'))} | {same(f'equal_b{batch}')} | "
            f"{same(f'graph_equal_b{batch}')} |"
        )
    if runtime.get("grad_savedmodel_b1_us"):
        difference = runtime.get("grad_largest_difference_b1")
        tflite_same = "-" if difference is None else "yes" if difference == 0 else (
            f"**no** (up to {difference:.3g})"
        )  # fmt: skip
        out.append(
            f"| `grad` | 1 | {_us(runtime.get('grad_savedmodel_b1_us'))} | "
            f"{_us(runtime.get('grad_tflite_b1_us'))} | {_us(runtime.get('grad_graph_b1_us'))} | "
            f"{tflite_same} | {same('grad_graph_equal_b1')} |"
        )
    out += [
        "",
        f"`serving_default`, chosen at load (`RUNTIME=auto`): **{runtime.get('chosen')}** in "
        f"{runtime.get('choose_s')} s: {runtime.get('reason')}.",
        "",
    ]
    if runtime.get("grad_graph_reason"):
        out += [f"`grad`, `GRAD_RUNTIME=graph` (the default): {runtime['grad_graph_reason']}.", ""]
    if runtime.get("grad_reason"):
        out += [f"`grad`, `GRAD_RUNTIME=tflite`: {runtime['grad_reason']}.", ""]
    return out
