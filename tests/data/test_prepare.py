"""`prepare`: shards hold exactly <|bos|> doc <|eos|> per source document, the manifest agrees with
them, output does not depend on the worker count, a finished result is reused, and mistakes are
refused without leaving a half-written folder behind."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from scratchlm.cli import main
from scratchlm.config import DataConfig, load_config
from scratchlm.data import prepare as prep
from scratchlm.data import sources
from scratchlm.data.prepare import Prepared, default_dir, load_prepared, prepare, same_tokenizer, shard_dtype
from scratchlm.errors import ScratchError
from scratchlm.tokenizer import BOS, EOS, SPECIAL_TOKENS, BPETokenizer, train_tokenizer

from conftest import FAST, write_jsonl

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


def test_prepare_into_a_folder_of_other_files_is_refused_and_keeps_them(prepared, tmp_path):
    """Writing shards among a user's files would mix the two, and replacing the folder would delete them:
    the folder is refused, named, and left exactly as it was."""
    folder = tmp_path / "mydata"
    folder.mkdir()
    src = write_jsonl(folder / "docs.jsonl", 10, seed=5)
    notes = folder / "notes.md"
    notes.write_text("my notes")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ScratchError, match="is not a prepared dataset") as err:
        prepare(DataConfig(source=str(src), tokenizer=str(prepared.tokenizer_path), val_fraction=0.5,
                           workers=1, dir=str(folder)))
    assert str(folder) in str(err.value) and "--data.dir" in str(err.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert tmp_leftovers(tmp_path) == []


@pytest.mark.parametrize("out", ["file", "file/sub"])
def test_an_output_path_that_cannot_be_a_folder_is_refused_before_any_work(cfg, tmp_path, out):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ScratchError, match="is a file"):
        prepare(cfg, tmp_path / out)
    assert (tmp_path / "file").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --------------------------------------------------------------------------------------------------
# A prepared folder is a data source of its own
# --------------------------------------------------------------------------------------------------


def test_a_prepared_folder_is_used_as_it_is(prepared, cfg):
    """None of the settings that made it are repeated: the folder's shards and tokenizer are the data."""
    before = {p.name: p.stat().st_mtime_ns for p in prepared.dir.iterdir()}
    again = prepare(DataConfig(source=str(prepared.dir)))  # default vocab_size, val_fraction, text_field ...
    assert again.dir == prepared.dir and again.manifest == prepared.manifest
    assert again.tokenizer().fingerprint() == prepared.manifest["tokenizer_hash"]
    assert prepare(DataConfig(source=str(prepared.dir), tokenizer=str(prepared.tokenizer_path))).dir == prepared.dir
    assert {p.name: p.stat().st_mtime_ns for p in prepared.dir.iterdir()} == before


def test_a_prepared_folder_refuses_what_would_change_it(prepared, cfg, tmp_path):
    source = DataConfig(source=str(prepared.dir))
    with pytest.raises(ScratchError, match=f"train on it with --data {prepared.dir}"):
        prepare(source, tmp_path / "copy")
    with pytest.raises(ScratchError, match="--force rebuilds a dataset from its text"):
        prepare(source, force=True)
    other = train_tokenizer(sources.documents(replace(cfg, val_fraction=0.5), "train"), VOCAB - 20)
    other.save(tmp_path / "other.json")
    with pytest.raises(ScratchError, match="another tokenizer than --data.tokenizer"):
        prepare(replace(source, tokenizer=str(tmp_path / "other.json")))
    assert not (tmp_path / "copy").exists()


def test_a_data_dir_of_other_settings_points_to_the_folder_as_a_source(prepared, cfg):
    with pytest.raises(ScratchError, match=f"pass --data {prepared.dir}"):
        prepare(replace(cfg, val_fraction=0.3))


def test_prepare_into_a_folder_inside_the_source_directory(tmp_path):
    """The shards' own folder is not read as text, neither while it is written nor the next time."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_jsonl(data / f"part{i}.jsonl", 20, seed=i)
    cfg = DataConfig(source=str(data), vocab_size=VOCAB, val_fraction=0.2, workers=1, dir=str(data / "prepared"))
    first = prepare(cfg)
    texts = [json.loads(line)["text"] for i in range(3) for line in (data / f"part{i}.jsonl").read_text().splitlines()]
    assert first.manifest["splits"]["train"]["docs"] + first.manifest["splits"]["validation"]["docs"] == len(texts)
    before = {p.name: p.stat().st_mtime_ns for p in first.dir.iterdir()}
    assert prepare(cfg).manifest == first.manifest  # the same settings digest: reused, not refused
    assert {p.name: p.stat().st_mtime_ns for p in first.dir.iterdir()} == before


DAMAGE = {
    "manifest garbled": (lambda d: (d / "manifest.json").write_text("{'not': json"), "manifest.json is damaged"),
    "manifest of something else": (lambda d: (d / "manifest.json").write_text('{"name": "x"}'),
                                   "not a manifest that scratchlm prepare wrote"),
    "shard missing": (lambda d: (d / "train_000.bin").unlink(), "train_000.bin is missing"),
    "shard truncated": (lambda d: (d / "validation_000.bin").write_bytes(b"\x00" * 10),
                        "validation_000.bin has 10 bytes"),
    "tokenizer replaced": (lambda d: shutil.copy(d / "other.json", d / "tokenizer.json"),
                           "not the tokenizer that made the shards"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_prepared_dataset_is_refused_by_name(prepared, tmp_path, damage):
    spoil, message = DAMAGE[damage]
    folder = tmp_path / "copy"
    shutil.copytree(prepared.dir, folder)
    train_tokenizer(["a different text entirely"] * 5, VOCAB).save(folder / "other.json")
    spoil(folder)
    with pytest.raises(ScratchError, match=message) as err:
        prepare(DataConfig(source=str(folder)))
    assert "--force" in str(err.value) and "\n" not in str(err.value)


def test_ranks_must_agree_on_the_tokenizer(prepared, tmp_path):
    same_tokenizer([prepared, load_prepared(prepared.dir)])
    other = Prepared(tmp_path / "elsewhere", {**prepared.manifest, "tokenizer_hash": "0123456789abcdef"})
    with pytest.raises(ScratchError, match="rank 1 .*elsewhere with 0123456789abcdef"):
        same_tokenizer([prepared, other])


def test_prepare_then_pretrain_on_the_folder_as_the_readme_says(source, tmp_path, capsys):
    """`scratchlm prepare --out D` with its own flags, then `scratchlm pretrain --data D` without them."""
    folder, run = tmp_path / "prepared", tmp_path / "run"
    main(["prepare", "--data", str(source), "--out", str(folder), "--data.vocab_size", str(VOCAB),
          "--data.val_fraction", "0.2", "--data.workers", "1"])
    made = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    main(["pretrain", "--data", str(folder), "--out", str(run), "--max-steps", "2", "--samples", "0",
          *[x for flag, value in zip(FAST[::2], FAST[1::2], strict=True) if not flag.startswith("--data.")
            for x in (flag, value)]])
    assert f"train tokens in {folder}" in capsys.readouterr().out
    assert (run / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert load_config(config_file=run / "config.yaml").model.vocab_size == VOCAB
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == made
