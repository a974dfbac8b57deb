"""`python -m bench`: the service beside its limits, the HTTP floor, a naive baseline and peers.

Parts (all by default; pick with --only / --skip):
  limit       the SavedModel in-process: batch 1 / 64 / 1024, and JSON decode + call
  runtimes    the model runtime in-process: SavedModel vs TFLite runner at 1 / 64 rows
              (app.runtimes.choose_runner's pick and reason; answers checked equal)
  http        wrk against the service, the raw ASGI constant endpoint (the HTTP limit), the
              trivial FastAPI endpoint, the naive server and the peers (1-row /predict at
              1/8/32/128 connections, 1024-row requests, /grad 1 and 64), plus a py-spy
              profile of the service at 32 connections
  peer        include the peers in `http`: KServe and Triton through PyTriton (create
              .venv-bench-peer/ and .venv-bench-triton/ from PyPI on first use)
  workers2    extra: WORKERS=2 unpinned
  cold        cold start and RSS vs `python -c "import tensorflow"`
  surrogates  every surrogate's forward+backward on 1M elements vs `ste`, graph and XLA

Writes docs/benchmarks.md (the targets table, details and the machine) unless --no-write,
and the raw results to .cache/bench/results.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench import coldstart, http_load, machine, report, servers
from bench.common import CACHE_DIR, PYTHON, REPO_ROOT, SERVER_CPU, base_env, run_json

PARTS = ("limit", "runtimes", "http", "peer", "workers2", "cold", "surrogates")
TRAIN_COMMAND = "make default-model"


def _log(message: str) -> None:
    print(message, flush=True)


def default_model_dir(models_root: Path, name: str = "digit-bits") -> Path:
    """The newest version of the default model; trains it (as `make default-model`) if absent."""

    def newest() -> Path | None:
        versions = [p for p in (models_root / name).glob("[0-9]*") if p.name.isdigit()]
        return max(versions, key=lambda p: int(p.name)) if versions else None

    found = newest()
    if found is None:
        _log(f"bench: no {name} model in {models_root}; training it ({TRAIN_COMMAND})")
        env = base_env(MODELS_ROOT=str(models_root))
        subprocess.run(
            ["make", "--no-print-directory", "default-model"], cwd=REPO_ROOT, env=env, check=True
        )
        found = newest()
        if found is None:
            raise SystemExit(f"bench: training left no model in {models_root / name}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs (2 s per cell, one repetition): a smoke run, ~3 min",
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="skip these parts")
    parser.add_argument("--seconds", type=float, help="seconds per wrk cell (default 4; quick 2)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=("asgi", "floor", "service", "naive", "peer", "triton"),
        help="http: only these servers (a smoke run of some; the targets need them all)",
    )
    parser.add_argument(
        "--connections",
        nargs="+",
        type=int,
        help="http: only these connection counts (default 1 8 32 128)",
    )
    parser.add_argument(
        "--no-big",
        action="store_true",
        help="http: skip the 1024-row and /grad runs and the profile",
    )
    parser.add_argument(
        "--models-root",
        type=Path,
        default=None,
        help="models root (default: $MODELS_ROOT or models/)",
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only; keep the doc as is")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the doc from the last run's .cache/bench/results.json",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads((CACHE_DIR / "results.json").read_text())
        report.write(args.output, results, results.get("command", "python -m bench"))
        print(report.targets_table(report.targets(results)))
        print(f"bench: wrote {args.output}")
        return 0

    parts = set(args.only or PARTS) - set(args.skip)
    if args.only and "http" in args.only and "peer" not in args.skip:
        parts.add("peer")
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    reps = args.reps or (1 if args.quick else 3)
    models_root = (args.models_root or Path(os.environ.get("MODELS_ROOT", "models"))).resolve()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "bench", *given])
    results: dict = {
        "command": command,
        "machine": machine.describe(),
        "mode": "quick" if args.quick else "full",
        "seconds": seconds,
        "reps": reps,
        "parts": sorted(parts),
    }
    model_dir = default_model_dir(models_root)
    _log(f"bench: model {model_dir}; parts {', '.join(sorted(parts))}")

    if "limit" in parts:
        _log("bench: the limit (in-process, pinned to the server core)")
        results["limit"] = run_json(
            [PYTHON, "-m", "bench.inprocess", str(model_dir), "--seconds", str(seconds / 2 + 0.5)],
            SERVER_CPU,
            600,
            base_env(),
        )
    if "runtimes" in parts:
        _log("bench: the model runtime, SavedModel vs TFLite (in-process, server core)")
        results["runtimes"] = run_json(
            [PYTHON, "-m", "bench.runtimes", str(model_dir), "--seconds", str(seconds / 2 + 0.5)],
            SERVER_CPU,
            600,
            base_env(),
        )
    if "http" in parts:
        wanted = set(args.servers or ("peer", "triton"))
        with_peer = with_triton = False
        if "peer" in parts and "peer" in wanted:
            with_peer = servers.ensure_peer_venv(CACHE_DIR / "peer-venv.log")
            if not with_peer:
                _log(f"bench: KServe could not be installed (see {CACHE_DIR / 'peer-venv.log'})")
            else:
                results["peer_version"] = "0.21.0"
        if "peer" in parts and "triton" in wanted:
            with_triton = servers.ensure_triton_venv(CACHE_DIR / "triton-venv.log")
            if not with_triton:
                _log(
                    f"bench: PyTriton could not be installed (see {CACHE_DIR / 'triton-venv.log'})"
                )
            else:
                results["triton_version"] = "PyTriton 0.7.0"
        _log(f"bench: HTTP ({reps} x {seconds:g} s per cell; servers on core {SERVER_CPU})")
        results["http"] = http_load.measure(
            model_dir,
            models_root,
            seconds=seconds,
            reps=reps,
            with_peer=with_peer,
            with_triton=with_triton,
            profile_seconds=None if args.no_big else max(4.0, seconds * 2),
            log=_log,
            connections=tuple(args.connections or http_load.CONNECTIONS),
            big_and_grad=not args.no_big,
            only=tuple(args.servers) if args.servers else None,
        )
    if "workers2" in parts:
        _log("bench: extra, WORKERS=2 unpinned")
        results["workers2"] = http_load.measure_two_workers(
            models_root, model_dir, seconds=seconds, log=_log
        )
    if "cold" in parts:
        _log("bench: cold start and RSS")
        results["cold"] = coldstart.measure(models_root, reps=2 if args.quick else 3, log=_log)
    if "surrogates" in parts:
        _log("bench: surrogates, forward+backward on 1M elements")
        results["surrogates"] = run_json(
            [PYTHON, "-m", "bench.surrogates", "--seconds", "0.5" if args.quick else "1.5"],
            SERVER_CPU,
            900,
            base_env(),
        )
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    (CACHE_DIR / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(report.targets_table(report.targets(results)))
    print(
        f"\nbench: done in {results['elapsed_s']:.0f} s; raw results in "
        f"{(CACHE_DIR / 'results.json').relative_to(REPO_ROOT)}"
    )
    if not args.no_write:
        report.write(args.output, results, command)
        print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
