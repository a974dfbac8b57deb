"""TF Serving's model repository layout: ``<root>/<name>/<version>/``.

Versions are positive integers. A version is written to a temporary sibling
whose name starts with a dot (ignored by the service and by
:func:`list_versions`) and renamed into place only once complete, so a poller
never sees half a model, and an existing version is never overwritten.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def list_versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """Numeric versions present under a model directory, ascending.

    Args:
        model_dir: ``<root>/<name>``; may not exist yet.

    Returns:
        The versions (names made only of digits, value >= 1); dot-prefixed
        temporaries and anything else are ignored.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return []
    versions = [
        int(entry.name)
        for entry in path.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) >= 1
    ]
    return sorted(versions)


def next_version(model_dir: str | os.PathLike[str]) -> int:
    """The version a new model gets: one more than the largest present (1 if none)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def temporary_dir(model_dir: str | os.PathLike[str], version: int) -> Path:
    """A fresh, not yet existing ``.<version>.tmp-<random>`` sibling path."""
    return Path(model_dir) / f".{version}.tmp-{secrets.token_hex(4)}"


def publish(
    tmp_dir: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    retarget: Callable[[Path, int], None],
    max_attempts: int = 100,
) -> Path:
    """Renames a complete temporary version into the next free version.

    If another writer took the version meanwhile, ``retarget`` rewrites what
    depends on the number (the metadata's ``version``) and the next number is
    tried; an existing version directory is never replaced.

    Args:
        tmp_dir: The complete temporary version (a sibling inside ``model_dir``).
        model_dir: ``<root>/<name>``.
        retarget: Called as ``retarget(tmp_dir, version)`` before each rename.
        max_attempts: Give up after this many taken versions (default 100).

    Returns:
        The final version directory.

    Raises:
        FileExistsError: When no free version was found in ``max_attempts``.
    """
    tmp_path, model_path = Path(tmp_dir), Path(model_dir)
    for _ in range(max_attempts):
        version = next_version(model_path)
        final = model_path / str(version)
        if final.exists():
            continue
        retarget(tmp_path, version)
        try:
            # os.rename refuses a non-empty target directory, so a version that
            # appeared between the check and here is not overwritten.
            os.rename(tmp_path, final)
        except OSError:
            if final.exists():
                continue
            raise
        return final
    raise FileExistsError(f"No free version found under {model_path}.")
