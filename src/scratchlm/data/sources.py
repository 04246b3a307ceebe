"""Where text comes from. One interface: `documents(cfg, split)` yields strings.

    embedded           the built-in corpus (scratchlm.data.corpus): stories and worked math
    PATH | DIR | GLOB  local .txt (one document per file), .jsonl and .parquet (one per row)
    hf:NAME[:CONFIG]   a Hugging Face hub dataset, streamed (needs a network)
    PREPARED_DIR       a folder that `scratchlm prepare` wrote (it holds manifest.json): token shards and
                       their tokenizer, used as they are (scratchlm.data.prepare); it has no documents

Local .jsonl and .parquet are read through the same `datasets` streaming path as hub datasets,
so the hub code is exercised by tests that run offline. A directory of text files skips the
prepared datasets inside it: their manifest.json and tokenizer.json are not text to train on.
"""

from __future__ import annotations

import functools
import glob
from collections.abc import Iterator
from pathlib import Path

from scratchlm.config import DataConfig
from scratchlm.errors import ScratchError

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"  # marks a folder as a prepared dataset


def describe(cfg: DataConfig) -> str:
    if cfg.source == "embedded":
        return "the embedded corpus"
    return f"the prepared dataset {cfg.source}" if prepared_dir(cfg.source) else cfg.source


def prepared_dir(source: str) -> Path | None:
    """The folder, when source is a prepared dataset (a folder holding manifest.json), else None."""
    if source == "embedded" or source.startswith("hf:"):
        return None
    path = Path(source).expanduser()
    return path if (path / MANIFEST).is_file() else None


def local_files(source: str) -> list[Path]:
    """Expand a file, a directory (recursively) or a glob into data files, sorted for determinism."""
    path = Path(source).expanduser()
    if prepared_dir(source):
        raise ScratchError(f"{source} is a prepared dataset (token shards, no text); train on it with "
                           f"--data {source}, or give the text it was prepared from")
    if path.is_dir():
        files = _outside_prepared([p for p in sorted(path.rglob("*")) if p.suffix in LOCAL_SUFFIXES and p.is_file()])
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
        if not files:
            raise ScratchError(f"data path {source} does not exist (give a file, a directory, a glob, "
                               "'embedded' or hf:NAME)")
        files = _outside_prepared(files)
    unsupported = [p for p in files if p.suffix not in LOCAL_SUFFIXES]
    if unsupported:
        raise ScratchError(f"{unsupported[0]} is not a supported data file; use {', '.join(LOCAL_SUFFIXES)}")
    if not files:
        raise ScratchError(f"data path {source} holds no {', '.join(LOCAL_SUFFIXES)} files")
    return files


def _outside_prepared(files: list[Path]) -> list[Path]:
    """Leave out the files of prepared datasets that a directory or a glob takes in."""
    holds_manifest = functools.cache(lambda folder: (folder / MANIFEST).is_file())
    return [p for p in files if not any(holds_manifest(folder) for folder in p.parents)]


def fingerprint(cfg: DataConfig) -> list[tuple[str, int, int]]:
    """(absolute path, size, modification time) of every local file: an edited or moved file is a new source."""
    if cfg.source == "embedded" or cfg.source.startswith("hf:") or prepared_dir(cfg.source):
        return []
    try:
        files = local_files(cfg.source)
    except ScratchError:  # no files yet: check() reports that where it matters
        return []
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def check(cfg: DataConfig) -> None:
    """Fail fast on a local source that is not there, or settings that cannot split it, before any slow work."""
    if cfg.source == "embedded" or prepared_dir(cfg.source):
        return
    if not 0 < cfg.val_fraction <= 0.5:
        raise ScratchError(f"data.val_fraction is the share of documents held out for validation, between 0 and 0.5; "
                           f"got {cfg.val_fraction}: try 0.01")
    if cfg.max_docs < 0:
        raise ScratchError(f"data.max_docs must be 0 (all documents) or a positive count, got {cfg.max_docs}")
    if not cfg.source.startswith("hf:"):
        local_files(cfg.source)


def _stream_rows(builder: str, text_field: str, where: str, **kwargs) -> Iterator[str]:
    """Stream rows through `datasets` and yield the text column; the one path for hub and local files."""
    import datasets  # imported here: it takes a second to import and the embedded corpus never needs it

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        stream = datasets.load_dataset(builder, streaming=True, **kwargs)
        first = True
        for row in stream:
            if first and text_field not in row:
                fields = ", ".join(row)
                raise ScratchError(f"{where} has no field '{text_field}'; set --data.text_field to one of: {fields}")
            first = False
            text = row[text_field]
            if isinstance(text, str) and text:
                yield text
    except ScratchError:
        raise
    except Exception as exc:  # network, auth, parse errors all surface from deep inside datasets
        raise ScratchError(f"could not read {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from None


TXT_PIECE_CHARS = 1 << 20


def _txt_documents(path: Path) -> Iterator[str]:
    """A .txt file is one document; a large one is cut at blank lines into pieces of about 1 MiB,
    so that it can be tokenized in parallel and split for validation. A stray byte that is not UTF-8
    becomes U+FFFD (large text dumps have a few); a NUL byte means the file is not text at all."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if "\x00" in text:
        raise ScratchError(f"{path} is not a text file (it holds NUL bytes, as binary files do); give .txt files "
                           "of plain text, or convert this one")
    piece: list[str] = []
    size = 0
    for paragraph in text.split("\n\n"):
        piece.append(paragraph)
        size += len(paragraph) + 2
        if size >= TXT_PIECE_CHARS:
            yield "\n\n".join(piece)
            piece, size = [], 0
    rest = "\n\n".join(piece)
    if rest.strip():
        yield rest


def _is_empty(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except pa.ArrowException as exc:
            raise ScratchError(f"{path} is not a Parquet file ({str(exc).splitlines()[0]}); rename it to what it "
                               "holds (.txt, .jsonl) or write it again as Parquet") from None
    return False


def _all_documents(cfg: DataConfig) -> Iterator[str]:
    if cfg.source.startswith("hf:"):
        name, _, config = cfg.source[3:].partition(":")
        yield from _stream_rows(name, cfg.text_field, cfg.source, name=config or None, split=cfg.hub_split)
        return
    for path in local_files(cfg.source):
        if _is_empty(path):
            continue  # `datasets` fails on an empty file with an obscure error; it simply holds no documents
        if path.suffix == ".txt":
            yield from _txt_documents(path)
        elif path.suffix == ".parquet":
            yield from _stream_rows("parquet", cfg.text_field, str(path), data_files=str(path), split="train")
        else:
            yield from _stream_rows("json", cfg.text_field, str(path), data_files=str(path), split="train")


def documents(cfg: DataConfig, split: str) -> Iterator[str]:
    """The documents of one split. External sources hold out every k-th document for validation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.source == "embedded":
        from scratchlm.data import corpus

        n = cfg.embedded_docs if split == "train" else max(200, cfg.embedded_docs // 50)
        yield from corpus.documents(split, n, seed=cfg.seed)
        return
    every = max(2, round(1 / cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    kept = 0
    for i, text in enumerate(_all_documents(cfg)):
        if cfg.max_docs and i >= cfg.max_docs:
            break
        is_val = every > 0 and i % every == every - 1
        if is_val == (split == "validation"):
            kept += 1
            yield text
    if kept == 0:
        if split == "train":
            raise ScratchError(f"data source {cfg.source} has no documents (is the file empty, or the text "
                               f"field '{cfg.text_field}' blank?)")
        raise ScratchError(f"data source {cfg.source} leaves no documents for validation (val_fraction "
                           f"{cfg.val_fraction}); add documents or set --data.val_fraction between 0.01 and 0.5")
