"""Where text comes from: local .jsonl/.parquet/.txt files, directories and globs, the embedded corpus and
the hub, a deterministic train/validation split, and one clear ScratchError for each user mistake."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.config import DataConfig
from scratchlm.data import corpus, sources
from scratchlm.data.sources import documents
from scratchlm.errors import ScratchError

from conftest import write_jsonl


def read_jsonl(path, field="text") -> list[str]:
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


def all_docs(source: str, **kw) -> list[str]:
    """Every document of a source, with nothing held out for validation."""
    return list(documents(DataConfig(source=str(source), val_fraction=0.0, **kw), "train"))


def unique_texts(n: int, prefix: str) -> list[str]:
    rng = random.Random(prefix)
    return [f"{prefix} {i}: " + " ".join(rng.choice(["ab", "cd", "ef", "🦙", "漢"]) for _ in range(rng.randint(1, 9)))
            for i in range(n)]


def write_parquet(path, texts, **extra_columns) -> None:
    pq.write_table(pa.table({"text": texts, **extra_columns}), path)


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def test_jsonl_documents(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", 30, seed=3)
    assert all_docs(path) == read_jsonl(path)


def test_jsonl_with_another_text_field(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", 12, seed=4, field="content")
    assert all_docs(path, text_field="content") == read_jsonl(path, "content")


def test_jsonl_skips_blank_and_non_string_texts(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"text": "first"}, {"text": ""}, {"text": None}, {"text": "second 🦙"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert all_docs(path) == ["first", "second 🦙"]


def test_parquet_documents(tmp_path):
    texts = unique_texts(25, "parquet")
    path = tmp_path / "docs.parquet"
    write_parquet(path, texts, id=list(range(len(texts))))
    assert all_docs(path) == texts


def test_txt_is_one_document_per_file(tmp_path):
    text = "Title\n\nFirst paragraph with 🦙 and 漢字.\n\nSecond paragraph.\n"
    path = tmp_path / "story.txt"
    path.write_text(text, encoding="utf-8")
    assert all_docs(path) == [text]


def test_large_txt_is_cut_at_blank_lines_and_rejoins(tmp_path):
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "llama", "漢字", "7"]
    paragraphs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 400))) for _ in range(1500)]
    text = "\n\n".join(paragraphs) + "\n"
    assert len(text) > sources.TXT_PIECE_CHARS + 100_000
    path = tmp_path / "book.txt"
    path.write_text(text, encoding="utf-8")
    pieces = all_docs(path)
    assert len(pieces) >= 2
    assert "\n\n".join(pieces) == text
    longest_paragraph = max(len(p) for p in paragraphs) + 2
    for piece in pieces:
        assert 0 < len(piece) <= sources.TXT_PIECE_CHARS + longest_paragraph
        assert not piece.startswith("\n") and not piece.endswith("\n\n")  # cut exactly at a blank line


def test_directory_gives_all_supported_files_in_sorted_order(tmp_path):
    root = tmp_path / "data"
    (root / "b_sub").mkdir(parents=True)
    a = write_jsonl(root / "a.jsonl", 5, seed=1)
    sub_texts = unique_texts(4, "sub")
    write_parquet(root / "b_sub" / "part.parquet", sub_texts)
    (root / "c.txt").write_text("a text file\n")
    z = write_jsonl(root / "z.json", 3, seed=2)  # .json is read as JSON lines too
    (root / "README.md").write_text("not data")  # ignored inside a directory
    (root / "notes").write_text("no suffix")
    expected = read_jsonl(a) + sub_texts + ["a text file\n"] + read_jsonl(z)
    assert all_docs(root) == expected
    assert all_docs(root) == expected  # and again: deterministic


def test_glob_gives_matching_files_in_sorted_order(tmp_path):
    paths = [write_jsonl(tmp_path / f"part-{i}.jsonl", 4, seed=i) for i in (2, 0, 1)]
    write_jsonl(tmp_path / "other.jsonl", 4, seed=9)
    expected = [t for p in sorted(paths) for t in read_jsonl(p)]
    assert all_docs(tmp_path / "part-*.jsonl") == expected
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    (nested / "x.txt").write_text("deep text")
    assert all_docs(tmp_path / "**" / "*.txt") == ["deep text"]


def test_max_docs_stops_early(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", 20, seed=5)
    assert all_docs(path, max_docs=7) == read_jsonl(path)[:7]


# --------------------------------------------------------------------------------------------------
# The train/validation split
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_split_is_disjoint_covering_and_deterministic(tmp_path, val_fraction):
    texts = unique_texts(53, "split")
    path = tmp_path / "docs.parquet"
    write_parquet(path, texts)
    cfg = DataConfig(source=str(path), val_fraction=val_fraction)
    train, val = list(documents(cfg, "train")), list(documents(cfg, "validation"))
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(texts)
    assert len(val) == pytest.approx(val_fraction * len(texts), abs=1 + 0.05 * len(texts))
    # Both splits keep the source's order, and asking again gives the same split.
    assert train == [t for t in texts if t in set(train)]
    assert val == [t for t in texts if t in set(val)]
    assert list(documents(cfg, "train")) == train and list(documents(cfg, "validation")) == val


def test_split_of_a_document_does_not_depend_on_later_documents(tmp_path):
    texts = unique_texts(40, "prefix")
    short, long = tmp_path / "short.jsonl", tmp_path / "long.jsonl"
    short.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:20]))
    long.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for split in sources.SPLITS:
        a = list(documents(DataConfig(source=str(short), val_fraction=0.2), split))
        b = list(documents(DataConfig(source=str(long), val_fraction=0.2), split))
        assert b[:len(a)] == a


def test_too_few_documents_for_validation(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("only one document")
    cfg = DataConfig(source=str(path), val_fraction=0.01)
    assert list(documents(cfg, "train")) == ["only one document"]
    with pytest.raises(ScratchError, match="val_fraction"):
        list(documents(cfg, "validation"))


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        list(documents(DataConfig(), "test"))


# --------------------------------------------------------------------------------------------------
# The embedded corpus and the hub
# --------------------------------------------------------------------------------------------------


def test_embedded_source_yields_corpus_documents():
    cfg = DataConfig(source="embedded", embedded_docs=12, seed=3)
    train = list(documents(cfg, "train"))
    assert train == list(corpus.documents("train", 12, seed=3))
    val = list(documents(cfg, "validation"))
    assert len(val) >= 200
    assert val == list(corpus.documents("validation", len(val), seed=3))
    assert not set(train) & set(val)
    assert list(documents(replace(cfg, seed=4), "train")) != train
    assert sources.describe(cfg) == "the embedded corpus"


def test_hub_source_offline_raises_naming_the_source(monkeypatch, tmp_path):
    """No network: offline mode makes `datasets` fail at once; the error names the source."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # Both libraries read the variable once at import; an earlier test may have imported them already.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    source = "hf:scratchlm-tests/no-such-dataset-xyz:some_config"
    with pytest.raises(ScratchError) as err:
        list(documents(DataConfig(source=source), "train"))
    message = str(err.value)
    assert source in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.jsonl", "missing_dir", "missing-*.parquet"])
def test_missing_path_raises(tmp_path, name):
    source = str(tmp_path / name)
    with pytest.raises(ScratchError, match="does not exist") as err:
        list(documents(DataConfig(source=source), "train"))
    assert source in str(err.value)


def test_empty_directory_raises(tmp_path):
    (tmp_path / "README.md").write_text("no data here")
    with pytest.raises(ScratchError, match="holds no") as err:
        list(documents(DataConfig(source=str(tmp_path)), "train"))
    assert ".jsonl" in str(err.value)


@pytest.mark.parametrize("name", ["docs.txt", "docs.jsonl", "docs.parquet"])
def test_empty_file_raises_a_helpful_error(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, pa.array([], pa.string()))
    else:
        path.write_text("")
    with pytest.raises(ScratchError) as err:
        list(documents(DataConfig(source=str(path)), "train"))
    message = str(err.value)
    assert str(path) in message
    advice = message.replace(str(path), "")
    assert "empty" in advice or "no documents" in advice, message


def test_blank_jsonl_raises_no_documents(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": ""}\n{"text": ""}\n')
    with pytest.raises(ScratchError, match="no documents") as err:
        list(documents(DataConfig(source=str(path)), "train"))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["data.csv", "data.txt.gz", "data"])
def test_unsupported_suffix_raises(tmp_path, name):
    path = tmp_path / name
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ScratchError, match="not a supported data file") as err:
        list(documents(DataConfig(source=str(path)), "train"))
    message = str(err.value)
    assert str(path) in message
    assert all(suffix in message for suffix in (".txt", ".jsonl", ".parquet"))


def test_glob_matching_an_unsupported_file_raises(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", 3)
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(ScratchError, match="b.csv"):
        list(documents(DataConfig(source=str(tmp_path / "*")), "train"))


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_missing_text_field_names_the_available_fields(tmp_path, suffix):
    path = tmp_path / f"docs.{suffix}"
    if suffix == "parquet":
        pq.write_table(pa.table({"body": ["a", "b"], "doc_id": [1, 2]}), path)
    else:
        path.write_text('{"body": "a", "doc_id": 1}\n{"body": "b", "doc_id": 2}\n')
    with pytest.raises(ScratchError) as err:
        list(documents(DataConfig(source=str(path)), "train"))
    message = str(err.value)
    assert "'text'" in message and "body" in message and "doc_id" in message
    assert "text_field" in message
    assert str(path) in message


def test_a_parquet_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "docs.parquet"
    path.write_text('{"text": "this is JSON lines, named .parquet"}\n')
    with pytest.raises(ScratchError, match="is not a Parquet file") as err:
        list(documents(DataConfig(source=str(path)), "train"))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_txt_file_that_is_binary(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00 a zip archive named .txt")
    with pytest.raises(ScratchError, match="is not a text file") as err:
        list(documents(DataConfig(source=str(path)), "train"))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("setting,message", [(dict(val_fraction=0.0), "between 0 and 0.5"),
                                             (dict(val_fraction=0.9), "between 0 and 0.5"),
                                             (dict(max_docs=-1), "data.max_docs")])
def test_check_refuses_settings_that_cannot_split_the_source(tmp_path, setting, message):
    path = write_jsonl(tmp_path / "docs.jsonl", 5)
    with pytest.raises(ScratchError, match=message):
        sources.check(DataConfig(source=str(path), **setting))


# --------------------------------------------------------------------------------------------------
# Prepared folders: a source of their own, and not text inside a directory of text
# --------------------------------------------------------------------------------------------------


def fake_prepared(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"format": 1}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "train_000.bin").write_bytes(b"\x00\x01")
    return folder


def test_a_prepared_folder_is_recognised_and_has_no_documents(tmp_path):
    folder = fake_prepared(tmp_path / "prepared")
    assert sources.prepared_dir(str(folder)) == folder
    assert sources.prepared_dir(str(tmp_path)) is None and sources.prepared_dir("embedded") is None
    cfg = DataConfig(source=str(folder))
    sources.check(cfg)  # a valid source
    assert sources.describe(cfg) == f"the prepared dataset {folder}"
    with pytest.raises(ScratchError, match=f"--data {folder}"):
        list(documents(cfg, "train"))


@pytest.mark.parametrize("pattern", ["{root}", "{root}/**/*"])
def test_directories_and_globs_skip_the_prepared_folders_inside(tmp_path, pattern):
    root = tmp_path / "data"
    root.mkdir()
    text = write_jsonl(root / "docs.jsonl", 6, seed=2)
    fake_prepared(root / "prepared")
    fake_prepared(root / "nested" / "more")
    docs = all_docs(pattern.format(root=root))
    assert docs == read_jsonl(text)
