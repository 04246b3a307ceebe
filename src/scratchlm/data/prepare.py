"""`scratchlm prepare`: text -> tokenizer.json + shards of token ids + manifest.json.

    documents --(train BPE on the train split, or reuse a tokenizer)--> tokenizer.json
    documents --(worker processes: <|bos|> ids <|eos|> per document)--> train_000.bin, validation_000.bin
    manifest.json: token counts, dtype, tokenizer fingerprint, bytes per token

Shards are flat arrays of uint16 (when every id fits) or uint32, read back with numpy.memmap.
Everything is written to a temporary folder and renamed, so an interrupted prepare never leaves
a half-written dataset that a later run would trust.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scratchlm.cache import cache_root
from scratchlm.config import DataConfig
from scratchlm.data import sources
from scratchlm.errors import ScratchError
from scratchlm.tokenizer import TOKENIZER_FILE, BPETokenizer, train_tokenizer

MANIFEST = "manifest.json"
SHARD_TOKENS = 1 << 27  # 128M tokens: 256 MiB as uint16; big enough to be few, small enough to move
BATCH_DOCS = 512
TOKENIZER_TRAIN_CHARS = 1 << 30  # train BPE on at most ~1 GiB of text: merges barely change past that


@dataclass
class Prepared:
    """A prepared dataset folder and what its manifest says."""

    dir: Path
    manifest: dict

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / TOKENIZER_FILE

    def tokenizer(self) -> BPETokenizer:
        return BPETokenizer.load(self.tokenizer_path)


def shard_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 halves the disk and memory of shards when every id fits in 16 bits."""
    if requested == "auto":
        return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)
    if requested not in ("uint16", "uint32"):
        raise ScratchError(f"data.dtype must be auto, uint16 or uint32, got '{requested}'")
    dtype = np.dtype(requested)
    if vocab_size > np.iinfo(dtype).max + 1:
        raise ScratchError(f"a vocabulary of {vocab_size} tokens does not fit {requested} shards (at most "
                           f"{np.iinfo(dtype).max + 1}); set --data.dtype uint32 or auto")
    return dtype


def settings_digest(cfg: DataConfig) -> str:
    """A hash of the settings and source files that make the shards (the tokenizer is compared on its own,
    by fingerprint, so that a dataset can be reused with the very tokenizer it was made with)."""
    key = {k: v for k, v in asdict(cfg).items() if k not in ("dir", "workers", "tokenizer")}
    key["files"] = sources.fingerprint(cfg)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def default_dir(cfg: DataConfig) -> Path:
    """A cache folder named by the settings digest and, when one is given, the tokenizer."""
    key = settings_digest(cfg) + (BPETokenizer.load(cfg.tokenizer).fingerprint() if cfg.tokenizer else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    label = "embedded" if cfg.source == "embedded" else Path(cfg.source.replace("hf:", "")).name or "data"
    return cache_root() / "data" / f"{label}-{digest}"


def load_prepared(data_dir: str | Path) -> Prepared:
    data_dir = Path(data_dir)
    manifest_path = data_dir / MANIFEST
    if not manifest_path.is_file():
        raise ScratchError(f"{data_dir} is not a prepared dataset (no {MANIFEST}); run scratchlm prepare first")
    return Prepared(data_dir, json.loads(manifest_path.read_text()))


def _limited(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    total = 0
    for text in texts:
        yield text
        total += len(text)
        if total >= max_chars:
            return


# Worker processes hold one tokenizer each, built once from its JSON by the pool initializer.
_worker_tokenizer: BPETokenizer | None = None


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallelism comes from the processes
    _worker_tokenizer = BPETokenizer.from_json(tokenizer_json)


def _encode_docs(texts: list[str]) -> tuple[np.ndarray, int, int]:
    """-> (ids of <|bos|> doc <|eos|> for each doc, UTF-8 bytes, documents)."""
    tok = _worker_tokenizer
    pieces = [np.array([tok.bos_id] + ids + [tok.eos_id], dtype=np.int64) for ids in tok.encode_batch(texts)]
    return np.concatenate(pieces), sum(len(t.encode("utf-8")) for t in texts), len(texts)


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _write_split(pool, cfg: DataConfig, split: str, out: Path, dtype: np.dtype) -> dict:
    """Tokenize one split in the worker pool; the pool keeps document order, so output is deterministic."""
    shards: list[dict] = []
    handle, shard_tokens = None, 0
    docs = n_bytes = 0
    bar = tqdm(desc=f"tokenize {split}", unit=" docs", dynamic_ncols=True, leave=False)
    try:
        batches = _batches(sources.documents(cfg, split), BATCH_DOCS)
        for ids, batch_bytes, batch_docs in pool.imap(_encode_docs, batches):
            start = 0
            while start < len(ids):
                if handle is None or shard_tokens >= SHARD_TOKENS:
                    if handle is not None:
                        handle.close()
                    name = f"{split}_{len(shards):03d}.bin"
                    handle, shard_tokens = open(out / name, "wb"), 0
                    shards.append({"file": name, "tokens": 0})
                take = ids[start:start + SHARD_TOKENS - shard_tokens]
                handle.write(take.astype(dtype).tobytes())
                shard_tokens += len(take)
                shards[-1]["tokens"] += len(take)
                start += len(take)
            n_bytes += batch_bytes
            docs += batch_docs
            bar.update(batch_docs)
    finally:
        if handle is not None:
            handle.close()
        bar.close()
    tokens = sum(s["tokens"] for s in shards)
    return {"tokens": tokens, "docs": docs, "bytes": n_bytes, "shards": shards}


def prepare(cfg: DataConfig, data_dir: str | Path | None = None, force: bool = False) -> Prepared:
    """Tokenize cfg's source into data_dir (default: a cache folder). Reuses a matching earlier result."""
    sources.check(cfg)
    out = Path(data_dir or cfg.dir or default_dir(cfg))
    given = BPETokenizer.load(cfg.tokenizer) if cfg.tokenizer else None
    shard_dtype(given.vocab_size if given else cfg.vocab_size, cfg.dtype)  # refuse before any work
    digest = settings_digest(cfg)
    if (out / MANIFEST).is_file() and not force:
        prepared = load_prepared(out)
        if given is not None and prepared.manifest["tokenizer_hash"] != given.fingerprint():
            raise ScratchError(f"shards in {out} were made by another tokenizer; pick another --data.dir "
                               "or re-run prepare with --force")
        if prepared.manifest.get("settings") != digest:
            raise ScratchError(f"shards in {out} were made from other data or settings (source "
                               f"{prepared.manifest['source']}); pick another --data.dir or prepare with --force")
        return prepared
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ScratchError(f"{out} exists and is not a prepared dataset; pick a new or empty --data.dir")

    tokenizer = given or train_tokenizer(
        tqdm(_limited(sources.documents(cfg, "train"), TOKENIZER_TRAIN_CHARS), desc="train tokenizer",
             unit=" docs", dynamic_ncols=True, leave=False),
        cfg.vocab_size)
    dtype = shard_dtype(tokenizer.vocab_size, cfg.dtype)

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer.save(tmp / TOKENIZER_FILE)
        workers = cfg.workers or os.cpu_count() or 1
        with get_context("spawn").Pool(workers, _init_worker, (tokenizer.to_json(),)) as pool:
            splits = {s: _write_split(pool, cfg, s, tmp, dtype) for s in sources.SPLITS}
        for split, info in splits.items():
            if info["tokens"] == 0:
                raise ScratchError(f"the {split} split of {sources.describe(cfg)} is empty")
        manifest = {
            "format": 1,
            "source": cfg.source,
            "settings": digest,
            "tokenizer_hash": tokenizer.fingerprint(),
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
            # How much text one token carries on validation text, which BPE was not trained on
            # (the <|bos|> and <|eos|> around each document are not text, so they are not counted).
            "bytes_per_token": round(splits["validation"]["bytes"]
                                     / (splits["validation"]["tokens"] - 2 * splits["validation"]["docs"]), 4),
            "splits": splits,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # Another process may have finished the same dataset meanwhile (ranks of a job on a node-local
        # cache): theirs is identical, so it is kept and this copy dropped.
        if (out / MANIFEST).is_file() and not force:
            return load_prepared(out)
        if (out / MANIFEST).is_file():  # --force: replace the earlier dataset, and only a dataset
            shutil.rmtree(out)
        elif out.exists():
            out.rmdir()  # empty, checked above
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(out)


