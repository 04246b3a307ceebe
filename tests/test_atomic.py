import os

import pytest

from scratchlm import atomic


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
