"""World.main_first fails on every rank together: two gloo CPU processes, started as a job spread over
nodes starts them (no torchrun agent that would stop the other ranks), try each way a rank can fail.
A rank left waiting would fail with gloo's timeout instead of the message checked here."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, start_ranks, write_jsonl

SCENARIOS = ["main_raises_oserror", "other_raises_runtime_error", "main_raises_scratch_error", "same_data",
             "different_tokenizers", "from_main", "from_main_raises"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, list[dict]]:
    out, data = tmp_path_factory.mktemp("outcomes"), tmp_path_factory.mktemp("data")
    write_jsonl(data / "same.jsonl", 40, seed=1)
    script = ROOT / "tests" / "parallel" / "main_first_ranks.py"
    procs = start_ranks([sys.executable, str(script), str(out), str(data), *SCENARIOS], 2)
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    return {name: [json.loads((out / f"{name}.{rank}.json").read_text()) for rank in range(2)] for name in SCENARIOS}


def test_an_error_on_rank_0_stops_the_other_rank_with_its_message(outcomes):
    main, other = outcomes["main_raises_oserror"]
    assert main == {"error": "OSError", "message": "disk full while writing the cache"}
    assert other["error"] == "ScratchError"
    assert "rank 0" in other["message"] and "OSError: disk full while writing the cache" in other["message"]


def test_an_error_on_another_rank_stops_rank_0(outcomes):
    main, other = outcomes["other_raises_runtime_error"]
    assert other == {"error": "RuntimeError", "message": "worker pool crashed"}
    assert main["error"] == "ScratchError"
    assert "rank 1" in main["message"] and "worker pool crashed" in main["message"]


def test_a_users_mistake_is_the_same_line_on_every_rank(outcomes):
    assert outcomes["main_raises_scratch_error"] == [{"error": "ScratchError",
                                                      "message": "data path x.jsonl does not exist"}] * 2


def test_ranks_that_prepared_the_same_data_go_on(outcomes):
    assert outcomes["same_data"] == [{"error": None, "message": ""}] * 2


def test_ranks_with_different_tokenizers_all_refuse(outcomes):
    for outcome in outcomes["different_tokenizers"]:
        assert outcome["error"] == "ScratchError"
        assert "disagree on the tokenizer" in outcome["message"] and "tokenizer-of-rank-1" in outcome["message"]
    assert outcomes["different_tokenizers"][0] == outcomes["different_tokenizers"][1]


def test_from_main_gives_every_rank_rank_0s_result(outcomes):
    assert outcomes["from_main"] == [{"error": None, "message": "100"}] * 2


def test_from_main_fails_on_every_rank_when_rank_0_fails(outcomes):
    assert outcomes["from_main_raises"] == [{"error": "ScratchError",
                                             "message": "the peak could not be measured"}] * 2
