"""Fixtures for the reliability suite: real `python -m app` processes, references, figures.

`--soak-seconds` sets the soak's length (default: the short form that runs in
`make test`; `make soak` passes 60). The figures every test records are
printed at the end of the session; with `UPDATE_RELIABILITY_DOC=1` they are
written into docs/reliability.md (otherwise into a copy under the session's
temporary directory, whose path is printed).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rel_support as support

SHORT_SOAK_SECONDS = 12.0
DOC = support.REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"

MAX_BATCH_ROWS = support.LIVE_MAX_BATCH_ROWS
MAX_BODY_BYTES = support.LIVE_MAX_BODY_BYTES


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=None,
        help=f"length of the reliability soak (default {SHORT_SOAK_SECONDS} s; make soak: 60)",
    )


@pytest.fixture(scope="session")
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """The soak's length: `--soak-seconds`, else `SOAK_SECONDS`, else the short form."""
    value = request.config.getoption("--soak-seconds", default=None)
    if value is None:
        value = float(os.environ.get("SOAK_SECONDS", SHORT_SOAK_SECONDS))
    return float(value)


@pytest.fixture(scope="session")
def reliability_models_root(
    default_models_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A private copy of the trained default model's models root (the faults change theirs)."""
    root = tmp_path_factory.mktemp("reliability-models") / "models"
    shutil.copytree(default_models_root, root)
    return root


@pytest.fixture(scope="session")
def default_version_dir(reliability_models_root: Path, default_model_name: str) -> Path:
    return reliability_models_root / default_model_name / "1"


@pytest.fixture(scope="session")
def reference(default_version_dir: Path) -> support.Reference:
    """The default model loaded in this process with `tf.saved_model.load`."""
    return support.Reference(default_version_dir)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., support.ServerProcess]]:
    """Start `python -m app` processes for one test; every one is stopped afterwards."""
    servers: list[support.ServerProcess] = []

    def start(models_root: Path, **env: str) -> support.ServerProcess:
        log_path = tmp_path / f"server-{len(servers)}.log"
        server = support.ServerProcess(models_root, log_path, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def live(
    reliability_models_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.ServerProcess]:
    """One server shared by the catalogue, the fuzzer and the soak (the default model, v1)."""
    log_path = tmp_path_factory.mktemp("live-server") / "server.log"
    server = support.ServerProcess(
        reliability_models_root,
        log_path,
        MAX_BATCH_ROWS=str(MAX_BATCH_ROWS),
        MAX_BODY_BYTES=str(MAX_BODY_BYTES),
    )
    try:
        support.record("server start to ready (s)", round(server.wait_ready(), 1))
        yield server
    finally:
        exit_code = server.stop()
        assert exit_code == 0, f"the shared server exited {exit_code}:\n{server.log_tail()}"
        unhandled = [r for r in server.log_records() if r.get("message") == "unhandled error"]
        assert not unhandled, f"the shared server logged unhandled errors: {unhandled[:3]}"


# -- figures ---------------------------------------------------------------------


def _figures_block(config: pytest.Config) -> str:
    command = "pytest " + shlex.join(config.invocation_params.args)
    env = " ".join(
        f"{k}={os.environ[k]}"
        for k in ("UPDATE_RELIABILITY_DOC", "SOAK_SECONDS")
        if k in os.environ
    )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "",
        f"Measured {when} on {os.cpu_count()} CPU cores ({platform.machine()}, "
        f"Python {platform.python_version()}) by `{(env + ' ' if env else '') + command}`.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    figures = {
        **support.FIGURES,
        "responses checked for tracebacks and paths": support.CHECKED["responses"],
    }
    for name, value in figures.items():
        lines.append(f"| {name} | {value} |")
    lines += ["", END]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the figures; write them into docs/reliability.md when asked to."""
    if not support.FIGURES:
        return
    block = _figures_block(config)
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write_line(block)
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    if os.environ.get("UPDATE_RELIABILITY_DOC") == "1" and exitstatus == 0:
        target = DOC
    else:
        target = Path(tempfile.gettempdir()) / "reliability.md"
    target.write_text(text)
    terminalreporter.write_line(f"figures written to {target}")
