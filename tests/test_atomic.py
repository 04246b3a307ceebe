import os

import pytest

from scratchlm import atomic
from scratchlm.errors import ScratchError

from conftest import record_syncs, synced_before_and_after


def test_write_text_replaces_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")
    atomic.write_text(path, "new: 2\n")
    assert path.read_text() == "new: 2\n"
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic.write_text(path, '{"new": true}')
    assert path.read_text() == "{}"
    assert os.listdir(tmp_path) == ["tokenizer.json"]


def test_write_text_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")
    events = record_syncs(monkeypatch)
    atomic.write_text(path, "new: 2\n")
    before, after = synced_before_and_after(events, f".config.yaml.tmp{os.getpid()}")
    assert path.stat().st_ino in before  # the new file's data is on disk before its name replaces the old one
    assert tmp_path.stat().st_ino in after  # and the new name is on disk after


def test_output_dir_checks(tmp_path):
    atomic.check_output_dir(tmp_path / "new" / "deeper", "--out")  # to be created: fine
    atomic.check_output_dir(tmp_path, "--out")  # an existing folder: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScratchError, match=r"--out .*file is a file, not a folder"):
        atomic.check_output_dir(tmp_path / "file", "--out")
    with pytest.raises(ScratchError, match=r"cannot be created: .*file is a file"):
        atomic.check_output_dir(tmp_path / "file" / "sub", "--out")
    with pytest.raises(ScratchError, match=r"--out .* is a folder; give a file path"):
        atomic.check_output_file(tmp_path, "--out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_output_dir_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ScratchError, match="not writable"):
        atomic.check_output_dir(locked / "out", "--out")
