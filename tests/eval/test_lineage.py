"""A run's lineage through config.yaml's parent, and whether it holds an SFT stage."""

from __future__ import annotations

from scratchlm.config import Config
from scratchlm.eval.lineage import has_sft, lineage


def make_run(path, stage: str, parent: str = ""):
    path.mkdir(parents=True)
    Config(stage=stage, parent=parent).save(path / "config.yaml")
    return path


def test_lineage_follows_parents_newest_first(tmp_path):
    base = make_run(tmp_path / "base", "pretrain")
    sft = make_run(tmp_path / "sft", "sft", parent=str(base))
    rl = make_run(tmp_path / "rl", "rl", parent="sft")  # a relative parent: beside the child
    assert [path.name for path, _ in lineage(rl)] == ["rl", "sft", "base"]
    assert has_sft(rl) and has_sft(sft) and not has_sft(base)


def test_a_missing_parent_or_a_cycle_ends_the_lineage(tmp_path):
    orphan = make_run(tmp_path / "orphan", "sft", parent=str(tmp_path / "deleted"))
    assert [p.name for p, _ in lineage(orphan)] == ["orphan"]
    a = make_run(tmp_path / "a", "pretrain", parent="b")
    make_run(tmp_path / "b", "pretrain", parent="a")
    assert [p.name for p, _ in lineage(a)] == ["a", "b"]
    assert not has_sft(a)
