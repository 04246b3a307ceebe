"""Where text comes from. One interface: `documents(cfg, split)` yields strings.

    embedded           the built-in corpus (scratchlm.data.corpus): stories and worked math
    PATH | DIR | GLOB  local .txt (one document per file), .jsonl and .parquet (one per row)
    hf:NAME[:CONFIG]   a Hugging Face hub dataset, streamed (needs a network)

Local .jsonl and .parquet are read through the same `datasets` streaming path as hub datasets,
so the hub code is exercised by tests that run offline.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

from scratchlm.config import DataConfig
from scratchlm.errors import ScratchError

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
SPLITS = ("train", "validation")


def describe(cfg: DataConfig) -> str:
    return "the embedded corpus" if cfg.source == "embedded" else cfg.source


def local_files(source: str) -> list[Path]:
    """Expand a file, a directory (recursively) or a glob into data files, sorted for determinism."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.suffix in LOCAL_SUFFIXES and p.is_file()]
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
        if not files:
            raise ScratchError(f"data path {source} does not exist (give a file, a directory, a glob, "
                               "'embedded' or hf:NAME)")
    unsupported = [p for p in files if p.suffix not in LOCAL_SUFFIXES]
    if unsupported:
        raise ScratchError(f"{unsupported[0]} is not a supported data file; use {', '.join(LOCAL_SUFFIXES)}")
    if not files:
        raise ScratchError(f"data path {source} holds no {', '.join(LOCAL_SUFFIXES)} files")
    return files


def fingerprint(cfg: DataConfig) -> list[tuple[str, int, int]]:
    """(absolute path, size, modification time) of every local file: an edited or moved file is a new source."""
    if cfg.source == "embedded" or cfg.source.startswith("hf:"):
        return []
    try:
        files = local_files(cfg.source)
    except ScratchError:  # no files yet: check() reports that where it matters
        return []
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def check(cfg: DataConfig) -> None:
    """Fail fast on a local source that is not there, before any slow work starts."""
    if cfg.source != "embedded" and not cfg.source.startswith("hf:"):
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
    so that it can be tokenized in parallel and split for validation."""
    text = path.read_text(encoding="utf-8", errors="replace")
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
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows == 0
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
