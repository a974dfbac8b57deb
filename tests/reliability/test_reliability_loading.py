"""Model loading under faults (issue 12, finding 7), against real `python -m app` processes.

- A version whose load never returns (its `saved_model.pb` is a FIFO nobody
  writes: `open()` blocks forever, as on a hung network filesystem) is refused
  after `MODEL_LOAD_TIMEOUT_S`; meanwhile another model loads, serves, and
  later swaps in a new version: the hung load holds no lock. The process
  still exits 0 on SIGTERM (the load runs in a daemon thread).
- A model directory that cannot be listed (`scandir` raises `OSError`) keeps
  its serving version: requests keep getting correct answers; once it can be
  listed again nothing changed.
- Names match in full: a version directory named "3\\n" is not version 3, a
  model directory named "other\\n" is not a model.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
import rel_support as support
from test_reliability_bad_input import check_good_request

MODEL = "digit-bits"
#: MODEL_LOAD_TIMEOUT_S for the hung-load test.
LOAD_TIMEOUT_S = 20


def _serving(client: httpx.Client, model: str = MODEL) -> int | None:
    response = client.get("/readyz")
    return response.json()["models"].get(model) if response.status_code == 200 else None


def test_a_load_that_never_returns_times_out_and_blocks_no_other_model(
    start_server, default_version_dir: Path, reference: support.Reference, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(default_version_dir, root / MODEL / "1")
    stuck = root / "stuck" / "1"
    shutil.copytree(default_version_dir, stuck)
    (stuck / "saved_model.pb").unlink()
    os.mkfifo(stuck / "saved_model.pb")
    # The bound must leave room for the good model's own load: with RUNTIME=auto it also
    # converts its inference signatures to TFLite and probes them (a few seconds on a
    # loaded machine), and a version refused for its time is not retried.
    server = start_server(root, MODEL_LOAD_TIMEOUT_S=str(LOAD_TIMEOUT_S))
    server.wait_ready(120)
    client = server.client()
    # The hung load is refused after the timeout, naming it.
    refusal = server.wait_log(
        lambda r: (
            r.get("message", "").startswith("refused model version") and r.get("model") == "stuck"
        ),
        60,
        "the stuck version refused",
    )
    assert "MODEL_LOAD_TIMEOUT_S" in refusal["message"], refusal
    status = client.get("/v1/models/stuck").json()
    assert "MODEL_LOAD_TIMEOUT_S" in str(status), status
    # The hung thread holds nothing: a new version of the other model swaps in.
    support.install_version(default_version_dir, root, MODEL, 2)
    seconds = support.wait_for(lambda: _serving(client) == 2, 60, "version 2 served", server)
    support.record("new version served while another model's load hangs (s)", round(seconds, 1))
    for seed, kind in enumerate(("predict", "grad", "v1", "v2")):
        check_good_request(client, reference, kind, seed)
    assert client.get("/v2/models/stuck/ready").status_code in (400, 404, 503)
    server.terminate()
    assert server.process.wait(30) == 0, server.log_tail()


def _unlistable_target(tmp_path: Path) -> Path:
    """A directory this process (and the server it starts) can stat but not list."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0)
        return locked
    # root lists every directory it owns; /proc/1/map_files needs CAP_SYS_ADMIN.
    return Path("/proc/1/map_files")


def test_an_unlistable_model_directory_keeps_its_serving_version(
    start_server, default_version_dir: Path, reference: support.Reference, tmp_path: Path
) -> None:
    real = tmp_path / "real-model"
    shutil.copytree(default_version_dir, real / "1")
    root = tmp_path / "models"
    root.mkdir()
    (root / MODEL).symlink_to(real, target_is_directory=True)
    unlistable = _unlistable_target(tmp_path)
    assert unlistable.is_dir()
    with pytest.raises(OSError), os.scandir(unlistable) as entries:
        list(entries)
    server = start_server(root, POLL_INTERVAL_S="0.2")
    server.wait_ready(120)
    client = server.client()
    # Point the model directory at the unlistable one (atomically: a new link, renamed).
    link = root / ".swap"
    link.symlink_to(unlistable, target_is_directory=True)
    link.rename(root / MODEL)
    server.wait_log(
        lambda r: (
            r.get("message", "").startswith("cannot list model directory")
            and r.get("model") == MODEL
        ),
        30,
        "the listing failure logged",
    )
    time.sleep(1.0)  # several more polls
    assert _serving(client) == 1
    for seed, kind in enumerate(("predict", "grad", "v1", "v2")):
        check_good_request(client, reference, kind, seed)
    link = root / ".swap"
    link.symlink_to(real, target_is_directory=True)
    link.rename(root / MODEL)
    time.sleep(1.0)
    assert _serving(client) == 1
    records = server.log_records()
    removed = [r for r in records if r.get("message", "").startswith("model directory")]
    assert not removed, removed
    loads = [r for r in records if r.get("message") == "serving model version"]
    assert len(loads) == 1, loads  # never unloaded, never reloaded


def test_names_match_in_full_not_up_to_a_trailing_newline(
    start_server, default_version_dir: Path, reference: support.Reference, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(default_version_dir, root / MODEL / "1")
    shutil.copytree(default_version_dir, root / MODEL / "3\n")
    shutil.copytree(default_version_dir, root / "other\n" / "1")
    server = start_server(root)
    server.wait_ready(120)
    client = server.client()
    time.sleep(1.5)  # polls enough to have seen (and ignored) the odd names
    assert _serving(client) == 1
    models = client.get("/models").json()
    assert [m["name"] for m in models["models"]] == [MODEL], models
    assert client.get("/v1/models/digit-bits/versions/3").status_code == 404
    check_good_request(client, reference, "v1", 3)
