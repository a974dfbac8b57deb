"""Publishing a trained model into a models root: the next version, atomically.

The SavedModel itself (signatures and metadata, docs/contract.md section 2)
is written by :func:`diffround.export`; this module only picks the version:
the model goes into a dot-prefixed temporary sibling (ignored by the service)
and is renamed to the next free numeric version, never replacing one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras

import diffround
from diffround.export import METADATA_PATH, read_metadata
from model import repository

__all__ = ["METADATA_PATH", "read_metadata", "save", "write_metadata"]


def save(
    model: keras.Model,
    models_root: str | os.PathLike[str],
    name: str,
    **options: Any,
) -> Path:
    """Exports ``model`` as the next version of model ``name``, atomically.

    Args:
        model: The Keras model to serve (rounding layers anywhere in it).
        models_root: Repository root.
        name: Model name (the directory under ``models_root``).
        **options: Passed to :func:`diffround.export` (description, examples,
            decoding, metrics, training, extra_metadata, input_info, ...).

    Returns:
        The final version directory; its metadata's ``model_name`` and
        ``version`` name it.
    """
    model_dir = Path(models_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = repository.temporary_dir(model_dir, repository.next_version(model_dir))
    try:
        diffround.export(model, tmp_dir, **options)

        def retarget(path: Path, version: int) -> None:
            write_metadata(path, {**read_metadata(path), "model_name": name, "version": version})

        return repository.publish(tmp_dir, model_dir, retarget)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def write_metadata(version_dir: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Writes ``assets.extra/diffround.json`` (strict JSON: no NaN/Infinity).

    Args:
        version_dir: The (temporary) version directory.
        metadata: The metadata.

    Returns:
        The file's path.
    """
    path = Path(version_dir) / METADATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=1, allow_nan=False) + "\n")
    return path
