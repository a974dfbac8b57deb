"""TF Serving's repository layout: numeric versions, atomic publish, no overwrite."""

from pathlib import Path

import pytest

from model import repository


def _make_tmp(model_dir: Path, content: str) -> Path:
    tmp = repository.temporary_dir(model_dir, repository.next_version(model_dir))
    tmp.mkdir(parents=True)
    (tmp / "payload.txt").write_text(content)
    return tmp


def _retarget(path: Path, version: int) -> None:
    (path / "version.txt").write_text(str(version))


def test_versions_ignore_temporaries_and_non_numeric_names(tmp_path):
    for name in ("1", "3", ".4.tmp-abc", "latest", "0", "10"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert repository.list_versions(tmp_path) == [1, 3, 10]
    assert repository.next_version(tmp_path) == 11
    assert repository.next_version(tmp_path / "missing") == 1


def test_temporary_dir_is_a_hidden_sibling(tmp_path):
    tmp = repository.temporary_dir(tmp_path, 5)
    assert tmp.parent == tmp_path and tmp.name.startswith(".5.tmp-") and not tmp.exists()


def test_publish_numbers_versions_and_never_overwrites(tmp_path):
    first = repository.publish(_make_tmp(tmp_path, "a"), tmp_path, _retarget)
    second = repository.publish(_make_tmp(tmp_path, "b"), tmp_path, _retarget)
    assert (first.name, second.name) == ("1", "2")
    assert (first / "payload.txt").read_text() == "a"
    assert (second / "payload.txt").read_text() == "b"
    assert (second / "version.txt").read_text() == "2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_publish_skips_a_version_taken_meanwhile(tmp_path):
    tmp = _make_tmp(tmp_path, "late")
    # Another writer publishes version 1 after this one chose its temporary name.
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "payload.txt").write_text("early")
    final = repository.publish(tmp, tmp_path, _retarget)
    assert final.name == "2" and (final / "version.txt").read_text() == "2"
    assert (tmp_path / "1" / "payload.txt").read_text() == "early"


def test_publish_gives_up_when_every_version_is_taken(tmp_path, monkeypatch):
    tmp = _make_tmp(tmp_path, "x")
    (tmp_path / "1").mkdir()
    monkeypatch.setattr(repository, "next_version", lambda _: 1)
    with pytest.raises(FileExistsError):
        repository.publish(tmp, tmp_path, _retarget, max_attempts=3)
