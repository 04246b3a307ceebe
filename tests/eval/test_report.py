"""`scratchlm report`: a report card over a run's lineage, built from what the runs hold."""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest
import yaml
from trained_run import trained_run

from scratchlm.cli import main
from scratchlm.eval.evaluate import evaluate
from scratchlm.eval.task import EvalOptions


@pytest.fixture(scope="module")
def lineage_runs(tmp_path_factory):
    """A pretrained base (gsm8k and bpb evaluated) and an 'sft' child of it (story_questions evaluated)."""
    trained = trained_run(tmp_path_factory.getbasetemp() / "eval-trained")
    root = tmp_path_factory.mktemp("report")
    base, child = root / "base", root / "sft"
    for run in (base, child):
        shutil.copytree(trained.run, run, ignore=shutil.ignore_patterns("eval", "report*"))
    config = yaml.safe_load((child / "config.yaml").read_text())
    (child / "config.yaml").write_text(yaml.safe_dump({**config, "stage": "sft", "parent": "base"}))
    evaluate(base, ["gsm8k", "bpb"], EvalOptions(limit=3, fewshot=1, max_new_tokens=24))
    evaluate(child, ["story_questions"], EvalOptions(limit=4, chat=False))
    return base, child


def test_report_card_of_a_lineage(lineage_runs, capsys):
    base, child = lineage_runs
    main(["report", str(child)])
    assert capsys.readouterr().out.strip() == f"report card: {child / 'report.md'} and {child / 'report.html'}"
    md = (child / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    header, pretrain, sft = ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    assert (pretrain[0], pretrain[1], sft[0], sft[1]) == ("pretrain", "base", "sft", "sft")
    gsm8k = json.loads((base / "eval" / "gsm8k.json").read_text())["metrics"]
    strict = pretrain[header.index("gsm8k strict")]
    assert strict.startswith(f"{gsm8k['strict_match']:.3f} ± {gsm8k['strict_match_stderr']:.3f} (1-shot, n=3)")
    assert sft[header.index("gsm8k strict")] == "–"  # not evaluated: nothing is computed here
    story = json.loads((child / "eval" / "story_questions.json").read_text())["metrics"]
    assert sft[header.index("story_questions acc")] == f"{story['acc']:.3f} ± {story['acc_stderr']:.3f}"
    metrics = [json.loads(line) for line in (base / "metrics.jsonl").open()]
    assert pretrain[header.index("tokens trained")] == f"{metrics[-1]['tokens']:,}"
    assert pretrain[header.index("validation loss")] == f"{metrics[-1]['val_loss']:.3f}"
    assert "## Sample gsm8k answers" in md and "**base**:" in md
    assert (child / "plots" / "lineage_loss.png").read_bytes().startswith(b"\x89PNG")


def test_the_html_page_is_self_contained(lineage_runs):
    _, child = lineage_runs
    main(["report", str(child)])
    page = (child / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing to fetch from elsewhere
    assert "<td>sft</td>" in page


def test_report_of_a_missing_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
