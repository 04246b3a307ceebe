"""Tests for SFT data: every record format from .jsonl and .parquet, hub-shaped datasets, splits, bad records."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.data import chat_data, corpus
from scratchlm.data.chat_data import Skips, load_conversations
from scratchlm.errors import ScratchError

HELLO = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi there."}]
WITH_SYSTEM = [{"role": "system", "content": "Be brief."}, *HELLO]

# Each record format, and the conversation it must become.
FORMATS = {
    "messages": ({"messages": WITH_SYSTEM}, WITH_SYSTEM),
    "sharegpt": ({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hello?"},
                                    {"from": "gpt", "value": "Hi there."}]}, WITH_SYSTEM),
    "prompt_response": ({"prompt": "Hello?", "response": "Hi there."}, HELLO),
    "prompt_completion": ({"prompt": "Hello?", "completion": "Hi there."}, HELLO),
    "prompt_response_system": ({"system": "Be brief.", "prompt": "Hello?", "response": "Hi there."}, WITH_SYSTEM),
    # TRL's conversational prompt-completion: both sides are lists of messages.
    "conversational_prompt_completion": (
        {"prompt": WITH_SYSTEM[:2], "completion": WITH_SYSTEM[2:]}, WITH_SYSTEM),
}


def write_records(path, records: list[dict]) -> None:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def numbered(conversation: list[dict[str, str]], i: int) -> list[dict[str, str]]:
    """The conversation with the record number in every message, so that records can be told apart."""
    return [{**message, "content": f"{message['content']} #{i}"} for message in conversation]


def numbered_record(record: dict, i: int) -> dict:
    def mark(value):
        if isinstance(value, str):
            return f"{value} #{i}"
        if isinstance(value, list):
            return [{key: mark(v) if key in ("content", "value") else v for key, v in m.items()} for m in value]
        return value

    return {key: mark(value) for key, value in record.items()}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_reads_from_jsonl_and_parquet(tmp_path, name: str, suffix: str) -> None:
    record, expected = FORMATS[name]
    path = tmp_path / f"data{suffix}"
    write_records(path, [numbered_record(record, i) for i in range(5)])
    assert load_conversations(str(path), "train", val_fraction=0) == [numbered(expected, i) for i in range(5)]


def test_smoltalk_shaped_dataset(tmp_path) -> None:
    # smoltalk: a messages column (system prompts in some rows) and the subset it came from.
    rows = [
        {"messages": numbered(HELLO, 0), "source": "everyday-conversations"},
        {"messages": numbered(WITH_SYSTEM, 1) + numbered(HELLO, 2), "source": "smol-rewrite"},
        {"messages": [{"role": "system", "content": ""}, *numbered(HELLO, 3)], "source": "smol-summarize"},
    ]
    path = tmp_path / "smoltalk" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    write_records(path, rows)
    skips = Skips()
    found = load_conversations(str(path.parent), "train", val_fraction=0, skips=skips)
    # An empty system message says nothing: it is dropped, the conversation kept.
    assert found == [numbered(HELLO, 0), numbered(WITH_SYSTEM, 1) + numbered(HELLO, 2), numbered(HELLO, 3)]
    assert skips.summary() is None and skips.records == 3


def test_ultrachat_shaped_dataset(tmp_path) -> None:
    # ultrachat_200k: prompt, prompt_id and messages, where messages already starts with the prompt.
    rows = [{"prompt": f"Hello? #{i}", "prompt_id": f"{i:064x}", "messages": numbered(HELLO, i) * 2}
            for i in range(4)]
    path = tmp_path / "train_sft-00000-of-00003.parquet"
    write_records(path, rows)
    assert load_conversations(str(path), "train", val_fraction=0) == [numbered(HELLO, i) * 2 for i in range(4)]


def test_parquet_rows_gain_keys_that_are_ignored(tmp_path) -> None:
    # Arrow gives every message of a column the union of the keys (here "name", None where absent).
    rows = [{"messages": [{"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Yo"}]}]
    path = tmp_path / "names.parquet"
    write_records(path, rows)
    assert load_conversations(str(path), "train", val_fraction=0) == [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]


def test_directory_and_glob(tmp_path) -> None:
    write_records(tmp_path / "a.jsonl", [{"messages": numbered(HELLO, i)} for i in range(3)])
    write_records(tmp_path / "b.parquet", [{"prompt": f"Hello? #{i}", "response": f"Hi there. #{i}"}
                                           for i in range(3, 5)])
    (tmp_path / "notes.txt").write_text("not a conversation")
    expected = [numbered(HELLO, i) for i in range(5)]
    assert load_conversations(str(tmp_path), "train", val_fraction=0) == expected
    assert load_conversations(str(tmp_path / "*.jsonl"), "train", val_fraction=0) == expected[:3]
    assert load_conversations(str(tmp_path / "?.*"), "train", val_fraction=0) == expected


def test_json_array_file(tmp_path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"messages": numbered(HELLO, i)} for i in range(3)]))
    assert load_conversations(str(path), "train", val_fraction=0) == [numbered(HELLO, i) for i in range(3)]


BAD_LINES = [
    json.dumps({"messages": HELLO}),
    '{"messages": [{"role": "user", "content": "Hi"',  # cut short
    json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]}),
    json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}),
    json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 7}]}),
    json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),
    json.dumps({"messages": [{"role": "bot", "content": "Yo"}, {"role": "assistant", "content": "Yo"}]}),
    "",  # a blank line is no record
    json.dumps({"messages": [*HELLO, {"role": "user", "content": "Thanks!"}]}),  # a trailing user turn
    json.dumps({"prompt": "Hi"}),
    json.dumps(["not", "an", "object"]),
]


def test_bad_records_are_skipped_and_counted_in_one_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    skips = Skips()
    found = load_conversations(str(path), "train", val_fraction=0, skips=skips)
    assert found == [HELLO, HELLO]  # the trailing user turn is dropped, its conversation kept
    assert skips.records == 10 and skips.skipped == 8
    assert skips.summary() == ("skipped 8 of 10 conversations: 2 unknown role 'bot', 1 malformed JSON, "
                               "1 empty content, 1 content is not text, 1 no assistant turn, "
                               "1 no response or completion, 1 not a JSON object")
    # The SFT stage adds what it drops at tokenization to the same summary.
    skips.add("longer than the context", 2, "the SFT data")
    assert skips.summary(total=10).startswith("skipped 9 of 10 conversations: 2 unknown role 'bot', ")
    assert skips.summary().endswith(", 1 longer than the context")


def test_strict_mode_names_the_first_bad_record(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    with pytest.raises(ScratchError, match=rf"^{path}, record 2: malformed JSON; fix or remove the record"):
        load_conversations(str(path), "train", val_fraction=0, strict=True)
    with pytest.raises(ScratchError, match="record 1: longer than the context"):
        Skips(strict=True).add("longer than the context", 1, "the SFT data")


def test_strict_mode_counts_parquet_rows(tmp_path) -> None:
    path = tmp_path / "bad.parquet"
    roles = ["assistant", "assistant", "tool", "assistant"]
    write_records(path, [{"messages": [{"role": "user", "content": "Hi"}, {"role": role, "content": "Yo"}]}
                         for role in roles])
    with pytest.raises(ScratchError, match=r"bad.parquet, record 3: unknown role 'tool'"):
        load_conversations(str(path), "train", val_fraction=0, strict=True)


@pytest.mark.parametrize("val_fraction", [0.5, 0.2, 0.01])
def test_validation_holds_out_every_kth_record(tmp_path, val_fraction: float) -> None:
    path = tmp_path / "data.jsonl"
    write_records(path, [{"messages": numbered(HELLO, i)} for i in range(200)])
    train = load_conversations(str(path), "train", val_fraction=val_fraction)
    validation = load_conversations(str(path), "validation", val_fraction=val_fraction)
    every = round(1 / val_fraction)
    assert validation == [numbered(HELLO, i) for i in range(every - 1, 200, every)]
    assert not {json.dumps(c) for c in train} & {json.dumps(c) for c in validation}
    assert sorted(map(json.dumps, train + validation)) == sorted(json.dumps(numbered(HELLO, i)) for i in range(200))


def test_split_does_not_move_when_records_are_bad(tmp_path) -> None:
    # Bad records keep their place in the count, so fixing one never reshuffles train and validation.
    records = [{"messages": numbered(HELLO, i)} for i in range(10)]
    records[3] = {"messages": [{"role": "bot", "content": "x"}]}
    path = tmp_path / "data.jsonl"
    write_records(path, records)
    validation = load_conversations(str(path), "validation", val_fraction=0.5)
    assert validation == [numbered(HELLO, i) for i in (1, 5, 7, 9)]


def test_max_records(tmp_path) -> None:
    path = tmp_path / "data.parquet"
    write_records(path, [{"messages": numbered(HELLO, i)} for i in range(50)])
    assert load_conversations(str(path), "train", val_fraction=0, max_records=7) == [
        numbered(HELLO, i) for i in range(7)]


def test_embedded_source_is_the_corpus_conversations() -> None:
    skips = Skips()
    train = load_conversations("embedded", "train", n_embedded=60, seed=4, skips=skips)
    assert train == list(corpus.conversations("train", 60, seed=4))
    assert skips.records == 60 and skips.summary() is None
    assert load_conversations("embedded", "validation", n_embedded=60, seed=4) == list(
        corpus.conversations("validation", 200, seed=4))


def test_embedded_conversations_pass_the_record_checks(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    corpus.write_jsonl(path, "train", 300, seed=1, kind="conversations")
    skips = Skips(strict=True)
    assert load_conversations(str(path), "train", val_fraction=0, skips=skips) == list(
        corpus.conversations("train", 300, seed=1))


def test_no_usable_conversation_is_an_error(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES[1:7]) + "\n")
    with pytest.raises(ScratchError, match=r"has no usable conversations \(skipped 6 of 6 conversations: "):
        load_conversations(str(path), "train", val_fraction=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ScratchError, match="empty.jsonl has no usable conversations; see"):
        load_conversations(str(empty), "train")
    empty_parquet = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"messages": pa.array([], pa.list_(pa.struct([("role", pa.string()),
                                                                           ("content", pa.string())])))}),
                   empty_parquet)
    with pytest.raises(ScratchError, match="has no usable conversations"):
        load_conversations(str(empty_parquet), "train")
    one = tmp_path / "one.jsonl"
    write_records(one, [{"messages": HELLO}])
    with pytest.raises(ScratchError, match="leaves no conversations for validation .* --data.val_fraction"):
        load_conversations(str(one), "validation")


def test_wrong_kind_of_file_is_an_error_naming_its_fields(tmp_path) -> None:
    for suffix in (".jsonl", ".parquet"):
        path = tmp_path / f"text{suffix}"
        write_records(path, [{"text": "Once upon a time", "id": 1}])
        with pytest.raises(ScratchError, match=r"has none of the fields messages, conversations or prompt \(its "
                                               r"fields are text, id\)"):
            load_conversations(str(path), "train")
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    (text_dir / "story.txt").write_text("Once upon a time")
    with pytest.raises(ScratchError, match=r"holds no \.jsonl, \.json, \.parquet files"):
        load_conversations(str(text_dir), "train")
    with pytest.raises(ScratchError, match="does not exist"):
        load_conversations(str(tmp_path / "missing.jsonl"), "train")
    with pytest.raises(ValueError, match="split"):
        load_conversations("embedded", "heldout")


def test_hub_datasets_stream_through_datasets(monkeypatch, tmp_path) -> None:
    # The hub path is the one local parquet files take; here it is pointed at a local file to see the
    # name, config and split it asks `datasets` for, without a network.
    path = tmp_path / "train_sft.parquet"
    write_records(path, [{"prompt": f"Hello? #{i}", "prompt_id": str(i), "messages": numbered(HELLO, i)}
                         for i in range(6)])
    real_load = datasets.load_dataset
    calls = []

    def load_dataset(builder, **kwargs):
        calls.append((builder, kwargs))
        return real_load("parquet", data_files=str(path), split="train", streaming=kwargs["streaming"])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    found = load_conversations("hf:HuggingFaceH4/ultrachat_200k", "train", hub_split="train_sft", val_fraction=0.5)
    assert found == [numbered(HELLO, i) for i in (0, 2, 4)]
    assert calls == [("HuggingFaceH4/ultrachat_200k", {"streaming": True, "name": None, "split": "train_sft"})]
    load_conversations("hf:HuggingFaceTB/smoltalk:all", "validation", val_fraction=0.5)
    assert calls[-1] == ("HuggingFaceTB/smoltalk", {"streaming": True, "name": "all", "split": "train"})


def test_hub_failures_are_one_line(monkeypatch) -> None:
    def unreachable(builder, **kwargs):
        raise ConnectionError(f"Couldn't reach '{builder}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(ScratchError, match=r"^could not read hf:someone/chats: Couldn't reach 'someone/chats' on "
                                           r"the Hub \(LocalEntryNotFoundError\)$"):
        load_conversations("hf:someone/chats", "train")


def test_to_conversation_reasons() -> None:
    assert chat_data.to_conversation({"messages": HELLO}) == HELLO
    for record, reason in [
        ({"messages": "Hello"}, "messages are not a list"),
        ({"messages": ["Hello"]}, "a message is not an object"),
        ({"conversations": [{"from": "narrator", "value": "x"}]}, "unknown role 'narrator'"),
        ({"prompt": 3, "response": "x"}, "prompt is neither text nor a list of messages"),
        ({"prompt": "x", "completion": {"role": "assistant"}}, "completion is neither text nor a list of messages"),
    ]:
        with pytest.raises(chat_data.BadRecord, match=f"^{reason}$"):
            chat_data.to_conversation(record)
