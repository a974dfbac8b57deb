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

The model is the default one (trained as `make default-model` when absent) or any
SavedModel given with --model-dir: every request body and answer check comes from its
signature and metadata examples, and every model server must answer it identically
before anything is measured.

Writes docs/benchmarks.md (the targets table, details and the machine) unless --no-write,
and the raw results to .cache/bench/results.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
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


def served_root(
    model_dir: Path, name: str | None = None, root: Path | None = None
) -> tuple[Path, str]:
    """A private models root holding only the model under test; (root, model name).

    `model_dir` is a SavedModel directory: a TF Serving version directory
    (`<root>/<name>/<digits>`, the name taken from its parent) or any other
    SavedModel (the name taken from the directory, served as version 1). The root is
    `.cache/bench/models/` with one symlink `<name>/<version>` -> `model_dir`, so the
    service loads that model alone and answers it as its default model.
    """
    model_dir = model_dir.resolve()
    if not (model_dir / "saved_model.pb").exists():
        raise SystemExit(f"bench: {model_dir} is not a SavedModel directory (no saved_model.pb)")
    numbered = model_dir.name.isdigit() and int(model_dir.name) > 0
    name = name or (model_dir.parent.name if numbered else model_dir.name)
    version = model_dir.name if numbered else "1"
    root = root or CACHE_DIR / "models"
    if root.exists():
        shutil.rmtree(root)
    (root / name).mkdir(parents=True)
    (root / name / version).symlink_to(model_dir, target_is_directory=True)
    return root, name


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
        help="where the default model is (or is trained): $MODELS_ROOT or models/",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="benchmark this SavedModel instead of the default model: a version directory "
        "(<root>/<name>/<n>) or any SavedModel directory; requests come from its signature "
        "and metadata examples",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="the name to serve --model-dir under (default: from its path)",
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
        "uptime_at_start": _uptime(),
    }
    if args.output.exists():  # the committed run, for the CPU-per-request regression rows
        results["baseline"] = report.baseline_from(args.output.read_text())
    model_dir = (args.model_dir or default_model_dir(models_root)).resolve()
    models_root, model = served_root(model_dir, args.model_name)
    results["model"] = {"name": model, "dir": _shown(model_dir)}
    _log(f"bench: model {model} ({model_dir}); parts {', '.join(sorted(parts))}")

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
            model,
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
            models_root, model, seconds=seconds, log=_log
        )
    if "cold" in parts:
        _log("bench: cold start and RSS")
        results["cold"] = coldstart.measure(
            models_root, model, reps=2 if args.quick else 3, log=_log
        )
    if "surrogates" in parts:
        _log("bench: surrogates, forward+backward on 1M elements")
        results["surrogates"] = run_json(
            [PYTHON, "-m", "bench.surrogates", "--seconds", "0.5" if args.quick else "1.5"],
            SERVER_CPU,
            900,
            base_env(),
        )
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["uptime_at_end"] = _uptime()
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
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


def _uptime() -> str:
    """`uptime`'s line (load averages over 1, 5 and 15 minutes), or '' without it."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it (no user paths in the doc)."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name


if __name__ == "__main__":
    sys.exit(main())
