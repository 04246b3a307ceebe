"""`prepare`: shards hold exactly <|bos|> doc <|eos|> per source document, the manifest agrees with
them, output does not depend on the worker count, a finished result is reused, and mistakes are
refused without leaving a half-written folder behind."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from scratchlm.config import DataConfig
from scratchlm.data import prepare as prep
from scratchlm.data import sources
from scratchlm.data.prepare import Prepared, default_dir, load_prepared, prepare, shard_dtype
from scratchlm.errors import ScratchError
from scratchlm.tokenizer import BOS, EOS, SPECIAL_TOKENS, BPETokenizer, train_tokenizer

from conftest import write_jsonl

VOCAB = 300


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = write_jsonl(tmp_path_factory.mktemp("prep-src") / "docs.jsonl", 80, seed=11)
    # Text the word list of write_jsonl lacks, so the byte fallback and odd characters go through the pipeline.
    with path.open("a") as f:
        for text in ["🦙 llama 漢字 <|user|> tab\there", "  leading and trailing spaces  ", "line\r\nbreaks\n\n"]:
            f.write(json.dumps({"text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def cfg(source, tmp_path_factory) -> DataConfig:
    return DataConfig(source=str(source), vocab_size=VOCAB, val_fraction=0.2, workers=1,
                      dir=str(tmp_path_factory.mktemp("prep-out") / "one-worker"))


@pytest.fixture(scope="module")
def prepared(cfg) -> Prepared:
    return prepare(cfg)


def shard(prepared: Prepared, split: str) -> np.ndarray:
    files = [prepared.dir / s["file"] for s in prepared.manifest["splits"][split]["shards"]]
    return np.concatenate([np.fromfile(f, dtype=prepared.manifest["dtype"]) for f in files])


def tmp_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------------------------------
# What the shards hold
# --------------------------------------------------------------------------------------------------


def test_layout(prepared, cfg):
    assert prepared.dir == Path(cfg.dir)
    names = sorted(p.name for p in prepared.dir.iterdir())
    assert names == ["manifest.json", "tokenizer.json", "train_000.bin", "validation_000.bin"]
    assert load_prepared(prepared.dir).manifest == prepared.manifest


@pytest.mark.parametrize("split", sources.SPLITS)
def test_shards_decode_to_the_source_documents(prepared, cfg, split):
    tok = prepared.tokenizer()
    docs = list(sources.documents(cfg, split))
    ids = shard(prepared, split)
    expected = [i for doc in docs for i in tok.encode(doc, bos=True, eos=True)]
    assert ids.tolist() == expected
    assert tok.decode(ids.tolist()) == "".join(BOS + doc + EOS for doc in docs)
    # Cutting at the boundaries recovers each document on its own.
    bounds = np.flatnonzero(ids == tok.eos_id)
    assert len(bounds) == len(docs)
    starts = np.concatenate([[0], bounds[:-1] + 1])
    for doc, start, end in zip(docs, starts, bounds, strict=True):
        assert ids[start] == tok.bos_id
        assert tok.decode(ids[start + 1:end].tolist()) == doc


def test_both_splits_together_are_the_whole_source(prepared, cfg, source):
    tok = prepared.tokenizer()
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    decoded = tok.decode(np.concatenate([shard(prepared, s) for s in sources.SPLITS]).tolist())
    pieces = [p.removeprefix(BOS) for p in decoded.split(EOS)[:-1]]
    assert sorted(pieces) == sorted(texts)
    assert prepared.manifest["splits"]["validation"]["docs"] > 0


def test_manifest_agrees_with_the_shards(prepared, cfg):
    m = prepared.manifest
    tok = prepared.tokenizer()
    assert m["source"] == cfg.source
    assert m["vocab_size"] == tok.vocab_size == VOCAB
    assert m["tokenizer_hash"] == tok.fingerprint()
    assert (m["bos_id"], m["eos_id"]) == (tok.bos_id, tok.eos_id) == (SPECIAL_TOKENS.index(BOS),
                                                                      SPECIAL_TOKENS.index(EOS))
    assert m["dtype"] == "uint16"
    itemsize = np.dtype(m["dtype"]).itemsize
    for split in sources.SPLITS:
        info = m["splits"][split]
        docs = list(sources.documents(cfg, split))
        assert info["docs"] == len(docs)
        assert info["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        for s in info["shards"]:
            assert (prepared.dir / s["file"]).stat().st_size == s["tokens"] * itemsize
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"]) == len(shard(prepared, split))
    val = m["splits"]["validation"]
    assert m["bytes_per_token"] == pytest.approx(val["bytes"] / (val["tokens"] - 2 * val["docs"]), rel=1e-3)
    assert m["bytes_per_token"] > 1.0


def test_two_workers_give_byte_identical_output(prepared, cfg, tmp_path):
    other = prepare(replace(cfg, workers=2, dir=str(tmp_path / "two-workers")))
    assert other.manifest == prepared.manifest
    for name in ["tokenizer.json", "manifest.json", "train_000.bin", "validation_000.bin"]:
        assert (other.dir / name).read_bytes() == (prepared.dir / name).read_bytes(), name
    assert tmp_leftovers(tmp_path) == []


def test_shards_split_at_the_shard_size(cfg, prepared, tmp_path, monkeypatch):
    """Large datasets roll over to train_001.bin ...; the concatenation is the same token stream."""
    monkeypatch.setattr(prep, "SHARD_TOKENS", 1000)
    small = prepare(replace(cfg, tokenizer=str(prepared.tokenizer_path), dir=str(tmp_path / "small-shards")))
    for split in sources.SPLITS:
        shards = small.manifest["splits"][split]["shards"]
        assert [s["file"] for s in shards] == [f"{split}_{i:03d}.bin" for i in range(len(shards))]
        assert all(s["tokens"] == 1000 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 1000
        assert np.array_equal(shard(small, split), shard(prepared, split))
    assert len(small.manifest["splits"]["train"]["shards"]) > 1


# --------------------------------------------------------------------------------------------------
# Reuse and refusal
# --------------------------------------------------------------------------------------------------


def test_second_prepare_reuses_the_result(prepared, cfg):
    before = {p.name: p.stat().st_mtime_ns for p in prepared.dir.iterdir()}
    again = prepare(replace(cfg, workers=2))  # the worker count does not change the shards
    assert again.dir == prepared.dir
    assert again.manifest == prepared.manifest
    assert {p.name: p.stat().st_mtime_ns for p in prepared.dir.iterdir()} == before


def test_given_tokenizer_with_the_same_fingerprint_is_accepted(prepared, cfg):
    before = (prepared.dir / "train_000.bin").stat().st_mtime_ns
    again = prepare(replace(cfg, tokenizer=str(prepared.tokenizer_path)))
    assert again.manifest == prepared.manifest
    assert (prepared.dir / "train_000.bin").stat().st_mtime_ns == before


def test_shards_of_another_tokenizer_are_refused(prepared, cfg, source, tmp_path):
    other = train_tokenizer(sources.documents(replace(cfg, val_fraction=0.0), "train"), VOCAB - 20)
    assert other.fingerprint() != prepared.manifest["tokenizer_hash"]
    path = tmp_path / "other.json"
    other.save(path)
    before = (prepared.dir / "train_000.bin").read_bytes()
    with pytest.raises(ScratchError, match="another tokenizer") as err:
        prepare(replace(cfg, tokenizer=str(path)))
    assert str(prepared.dir) in str(err.value)
    assert (prepared.dir / "train_000.bin").read_bytes() == before


def test_default_dir_is_keyed_by_what_changes_the_shards(cfg, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path / "cache"))
    base = replace(cfg, dir="")
    key = default_dir(base)
    assert key.parent == tmp_path / "cache" / "data"
    assert default_dir(base) == key
    assert default_dir(replace(base, workers=7)) == key
    assert default_dir(replace(base, dir="/elsewhere")) == key
    for change in [dict(vocab_size=VOCAB + 1), dict(val_fraction=0.3), dict(seed=1), dict(max_docs=5),
                   dict(source=cfg.source + "l"), dict(tokenizer=str(prepared.tokenizer_path))]:
        assert default_dir(replace(base, **change)) != key, change


def test_an_edited_source_file_is_a_new_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "d.jsonl", 20, seed=1)
    cfg = DataConfig(source=str(data), vocab_size=VOCAB, workers=1)
    before = default_dir(cfg)
    write_jsonl(data, 21, seed=2)
    assert default_dir(cfg) != before
    explicit = replace(cfg, dir=str(tmp_path / "prepared"), val_fraction=0.25)
    prepare(explicit)
    write_jsonl(data, 22, seed=3)  # the same --data.dir no longer matches its source
    with pytest.raises(ScratchError, match="other data or settings"):
        prepare(explicit)


# --------------------------------------------------------------------------------------------------
# Shard dtype
# --------------------------------------------------------------------------------------------------


def test_shard_dtype_choice():
    limit16 = np.iinfo(np.uint16).max + 1
    assert shard_dtype(VOCAB) == np.uint16
    assert shard_dtype(limit16) == np.uint16
    assert shard_dtype(limit16 + 1) == np.uint32
    assert shard_dtype(VOCAB, "uint32") == np.uint32
    assert shard_dtype(limit16, "uint16") == np.uint16


def test_uint16_for_a_large_vocab_raises_naming_uint32():
    with pytest.raises(ScratchError, match="uint32") as err:
        shard_dtype(70000, "uint16")
    assert "70000" in str(err.value)
    with pytest.raises(ScratchError, match="auto"):
        shard_dtype(VOCAB, "int8")


def test_prepare_refuses_uint16_for_a_large_tokenizer_before_any_work(source, tmp_path):
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab |= {f"t{i}": i for i in range(len(SPECIAL_TOKENS), 70000)}
    big = BPETokenizer(Tokenizer(models.BPE(vocab=vocab, merges=[])))
    assert big.vocab_size == 70000
    path = tmp_path / "big.json"
    big.save(path)
    out = tmp_path / "out" / "data"
    cfg = DataConfig(source=str(source), tokenizer=str(path), dtype="uint16", workers=1, dir=str(out))
    with pytest.raises(ScratchError, match="uint32"):
        prepare(cfg)
    assert not out.parent.exists()


# --------------------------------------------------------------------------------------------------
# No half-written folders
# --------------------------------------------------------------------------------------------------


def test_no_tmp_folder_after_success(prepared):
    assert tmp_leftovers(prepared.dir.parent) == []


def test_no_tmp_folder_after_an_empty_source(tmp_path):
    empty = tmp_path / "src" / "empty.txt"
    empty.parent.mkdir()
    empty.write_text("")
    out = tmp_path / "out" / "data"
    with pytest.raises(ScratchError):
        prepare(DataConfig(source=str(empty), vocab_size=VOCAB, workers=1, dir=str(out)))
    assert not out.exists()
    assert not out.parent.exists() or tmp_leftovers(out.parent) == []


def test_no_tmp_folder_after_a_failure_while_writing_shards(tmp_path):
    """One document: the tokenizer trains, then the validation split turns out empty mid-prepare."""
    one = tmp_path / "one.txt"
    one.write_text("a single document about a cat and a mat")
    out = tmp_path / "out" / "data"
    with pytest.raises(ScratchError, match="val_fraction"):
        prepare(DataConfig(source=str(one), vocab_size=VOCAB, val_fraction=0.5, workers=1, dir=str(out)))
    assert not out.exists()
    assert tmp_leftovers(out.parent) == []


def test_prepare_into_an_existing_folder_keeps_its_files(prepared, tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    src = write_jsonl(folder / "docs.jsonl", 10, seed=5)
    notes = folder / "notes.md"
    notes.write_text("my notes")
    try:
        prepare(DataConfig(source=str(src), tokenizer=str(prepared.tokenizer_path), val_fraction=0.5,
                           workers=1, dir=str(folder)))
    except ScratchError:
        pass  # refusing to write into a non-empty folder is also fine; deleting it is not
    assert src.is_file() and notes.read_text() == "my notes"
