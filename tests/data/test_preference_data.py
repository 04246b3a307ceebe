"""Tests for preference data: every record format from .jsonl and .parquet (the hub path), UltraFeedback- and
HH-shaped datasets, splits, and bad records counted and skipped."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.data.preference_data import PairSkips, PreferencePair, load_preferences
from scratchlm.errors import ScratchError

USER = {"role": "user", "content": "What is 2+2?"}
SYSTEM = {"role": "system", "content": "Be brief."}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}
PAIR = PreferencePair([USER], [GOOD], [BAD])

# Each record format, and the pair it must become.
FORMATS = {
    "strings": ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}, PAIR),
    "strings_with_system": ({"system": "Be brief.", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
                            PreferencePair([SYSTEM, USER], [GOOD], [BAD])),
    "message_lists": ({"prompt": [SYSTEM, USER], "chosen": [GOOD], "rejected": [BAD]},
                      PreferencePair([SYSTEM, USER], [GOOD], [BAD])),
    # UltraFeedback binarized: the prompt as text, and each side the whole conversation, prompt included.
    "ultrafeedback": ({"prompt": "What is 2+2?", "chosen": [USER, GOOD], "rejected": [USER, BAD]}, PAIR),
    # No prompt: it is the beginning both sides share (TRL's implicit prompt).
    "implicit_prompt": ({"chosen": [USER, GOOD], "rejected": [USER, BAD]}, PAIR),
    "hh_transcripts": ({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4",
                        "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"}, PAIR),
    "hh_prompt": ({"prompt": "\n\nHuman: What is 2+2?\n\nAssistant:", "chosen": "4", "rejected": "5"}, PAIR),
    "margin": ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 2},
               PreferencePair([USER], [GOOD], [BAD], margin=2.0)),
}


def write_records(path, records: list[dict]) -> None:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_reads_from_jsonl_and_parquet(tmp_path, name: str, suffix: str) -> None:
    record, expected = FORMATS[name]
    path = tmp_path / f"pairs{suffix}"
    write_records(path, [record] * 3)
    found = load_preferences(str(path), "train", val_fraction=0)
    assert found == [expected] * 3
    assert found[0].margin == expected.margin


def test_multi_turn_hh_transcripts_keep_the_earlier_turns_in_the_prompt(tmp_path) -> None:
    earlier = "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant:"
    path = tmp_path / "hh.jsonl"
    write_records(path, [{"chosen": earlier + " 4", "rejected": earlier + " I don't know."}])
    (pair,) = load_preferences(str(path), "train", val_fraction=0)
    hello = {"role": "assistant", "content": "Hello! How can I help?"}
    assert pair.prompt == [{"role": "user", "content": "Hi"}, hello, USER]
    assert pair.chosen == [GOOD] and pair.rejected == [{"role": "assistant", "content": "I don't know."}]


def test_ultrafeedback_shaped_parquet_with_its_other_columns(tmp_path) -> None:
    """The columns of HuggingFaceH4/ultrafeedback_binarized's train_prefs split, streamed through `datasets`."""
    rows = [{"prompt": f"Question {i}?", "prompt_id": f"{i:064x}",
             "chosen": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Yes {i}."}],
             "rejected": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "No."}],
             "messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Yes."}],
             "score_chosen": 8.0, "score_rejected": 3.5} for i in range(6)]
    path = tmp_path / "train_prefs-00000-of-00001.parquet"
    write_records(path, rows)
    found = load_preferences(str(path), "train", val_fraction=0)
    assert [p.prompt for p in found] == [[{"role": "user", "content": f"Question {i}?"}] for i in range(6)]
    assert [p.chosen[0]["content"] for p in found] == [f"Yes {i}." for i in range(6)]
    assert all(p.rejected == [{"role": "assistant", "content": "No."}] for p in found)


def test_every_kth_record_is_held_out_for_validation(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    write_records(path, [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(20)])
    train = load_preferences(str(path), "train", val_fraction=0.25)
    val = load_preferences(str(path), "validation", val_fraction=0.25)
    assert [p.prompt[0]["content"] for p in val] == ["q3", "q7", "q11", "q15", "q19"]
    assert len(train) == 15 and not {p.prompt[0]["content"] for p in train} & {"q3", "q7", "q11", "q15", "q19"}


BAD_LINES = [
    json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}),
    json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "4"}),
    json.dumps({"prompt": "What is 2+2?", "chosen": [USER, GOOD], "rejected": [USER, GOOD]}),
    json.dumps({"prompt": "What is 2+2?", "chosen": "", "rejected": "5"}),
    json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "   "}),
    json.dumps({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4",
                "rejected": "\n\nHuman: What is 2+2?\n\nAssistant:"}),
    json.dumps({"chosen": "4", "rejected": "5"}),  # plain text, no prompt
    json.dumps({"chosen": [SYSTEM, USER, GOOD], "rejected": [SYSTEM, {"role": "user", "content": "Other?"}, BAD]}),
    json.dumps({"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "Other?"}, BAD]}),
    json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": "big"}),
    json.dumps({"prompt": [{"role": "bot", "content": "Hi"}], "chosen": "4", "rejected": "5"}),
    '{"prompt": "What is 2+2?", "chosen": "4"',  # cut short
    json.dumps({"prompt": "What is 2+2?", "chosen": "4"}),
]


def test_bad_records_are_skipped_and_counted_in_one_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    skips = PairSkips()
    assert load_preferences(str(path), "train", val_fraction=0, skips=skips) == [PAIR]
    assert skips.records == 13 and skips.skipped == 12
    assert skips.summary() == (
        "skipped 12 of 13 preference pairs: 3 empty chosen or rejected, 2 identical chosen and rejected, "
        "1 no prompt (chosen is plain text, not a Human/Assistant transcript), 1 chosen and rejected differ before "
        "the assistant's reply, 1 no prompt (chosen and rejected share no beginning), 1 margin is not a number, "
        "1 unknown role 'bot', 1 malformed JSON, 1 no chosen or rejected")


def test_strict_mode_names_the_first_bad_record(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    with pytest.raises(ScratchError, match=r"bad.jsonl, record 2: identical chosen and rejected; fix or remove"):
        load_preferences(str(path), "train", val_fraction=0, strict=True)


def test_files_that_hold_no_pairs_are_refused_in_one_line(tmp_path) -> None:
    conversations = tmp_path / "chats.jsonl"
    write_records(conversations, [{"messages": [USER, GOOD]}])
    with pytest.raises(ScratchError, match="has no chosen and rejected fields \\(its fields are messages\\)"):
        load_preferences(str(conversations), "train")
    identical = tmp_path / "same.jsonl"
    write_records(identical, [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 3)
    with pytest.raises(ScratchError, match="no usable preference pairs \\(skipped 3 of 3 preference pairs: 3 "
                                           "identical chosen and rejected\\)"):
        load_preferences(str(identical), "train", val_fraction=0)


def test_embedded_pairs_have_three_splits_and_every_kind() -> None:
    skips = PairSkips()
    train = load_preferences("embedded", "train", n_embedded=300, skips=skips)
    heldout = load_preferences("embedded", "heldout", n_embedded=300)
    assert len(train) == 300 and len(heldout) == 200 and skips.summary() is None
    assert {p.kind for p in train} == {"math_slip", "math_final", "story_character", "story_place", "story_event",
                                       "ramble"}
    assert not {json.dumps(p.prompt) for p in train} & {json.dumps(p.prompt) for p in heldout}
    with pytest.raises(ValueError, match="split must be one of"):
        load_preferences("pairs.jsonl", "heldout")
