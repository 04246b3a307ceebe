"""`scratchlm prepare`: text -> tokenizer.json + shards of token ids + manifest.json.

    documents --(train BPE on the train split, or reuse a tokenizer)--> tokenizer.json
    documents --(worker processes: <|bos|> ids <|eos|> per document)--> train_000.bin, validation_000.bin
    manifest.json: token counts, dtype, tokenizer fingerprint, bytes per token

Shards are flat arrays of uint16 (when every id fits) or uint32, read back with numpy.memmap.
Everything is written to a temporary folder, flushed to disk and renamed, so an interrupted
prepare (or a power loss) never leaves a half-written dataset that a later run would trust.

Where the result goes: --out (prepare only), else --data.dir, else a folder of the cache
(SCRATCHLM_CACHE/data, default ~/.cache/scratchlm/data) named by the settings that make the shards,
so the same settings find the same shards again. A prepared folder is a data source of its own:
`--data FOLDER` trains on its shards with its tokenizer, whatever settings made them.
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

from scratchlm import atomic
from scratchlm.cache import cache_root
from scratchlm.config import DataConfig
from scratchlm.data import sources
from scratchlm.data.sources import MANIFEST
from scratchlm.errors import ScratchError
from scratchlm.tokenizer import TOKENIZER_FILE, BPETokenizer, train_tokenizer

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
        tokenizer = BPETokenizer.load(self.tokenizer_path)
        if tokenizer.fingerprint() != self.manifest.get("tokenizer_hash"):
            raise ScratchError(f"{self.tokenizer_path} is not the tokenizer that made the shards in {self.dir} (it "
                               "was replaced or edited); prepare the dataset again with --force")
        return tokenizer


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


MANIFEST_KEYS = ("dtype", "splits")  # what reading the shards needs


def load_prepared(data_dir: str | Path) -> Prepared:
    """A prepared dataset, checked against its manifest: every shard there, at the size it records."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / MANIFEST
    if not manifest_path.is_file():
        raise ScratchError(f"{data_dir} is not a prepared dataset (no {MANIFEST}); run scratchlm prepare first")
    again = "prepare the dataset again (scratchlm prepare with --force)"
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except ValueError as exc:  # bad JSON or not UTF-8
        raise ScratchError(f"{manifest_path} is damaged ({str(exc).splitlines()[0]}); {again}") from None
    try:
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
        if lacking := [key for key in MANIFEST_KEYS if key not in manifest]:
            raise KeyError(lacking[0])
        itemsize = np.dtype(manifest["dtype"]).itemsize
        shards = [(data_dir / s["file"], int(s["tokens"])) for info in manifest["splits"].values()
                  for s in info["shards"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ScratchError(f"{manifest_path} is not a manifest that scratchlm prepare wrote ({type(exc).__name__}: "
                           f"{exc}); {again}") from None
    for path, tokens in shards:
        size = path.stat().st_size if path.is_file() else None
        if size != tokens * itemsize:
            found = "is missing" if size is None else f"has {size:,} bytes"
            raise ScratchError(f"{path} {found}, but {MANIFEST} records {tokens:,} {manifest['dtype']} tokens "
                               f"({tokens * itemsize:,} bytes); {again}")
    return Prepared(data_dir, manifest)


def same_tokenizer(results: list[Prepared]) -> None:
    """The ranks of one job must train on the same token ids: refuse datasets made with different tokenizers
    (ranks on nodes that see different files under the same path, or different --data.tokenizer files)."""
    hashes = [p.manifest.get("tokenizer_hash") for p in results]
    for rank, (other, tokenizer) in enumerate(zip(results, hashes, strict=True)):
        if tokenizer != hashes[0]:
            raise ScratchError(
                f"the ranks disagree on the tokenizer: rank 0 prepared {results[0].dir} with tokenizer {hashes[0]}, "
                f"rank {rank} {other.dir} with {tokenizer}; every rank must read the same data: give all nodes the "
                "same files, or prepare once into a shared folder and train with --data FOLDER")


def _use_as_is(folder: Path, cfg: DataConfig, out: str | Path | None, force: bool) -> Prepared:
    """A prepared folder given as the data source: its shards and its tokenizer, as they are."""
    prepared = load_prepared(folder)
    if force:
        raise ScratchError(f"--force rebuilds a dataset from its text, and {folder} holds token shards; give the "
                           f"text it was prepared from ({prepared.manifest.get('source', 'not recorded')})")
    if out and Path(out).resolve() != folder.resolve():
        raise ScratchError(f"{folder} is already a prepared dataset; train on it with --data {folder}, without "
                           "--out or --data.dir")
    if cfg.tokenizer and BPETokenizer.load(cfg.tokenizer).fingerprint() != prepared.manifest.get("tokenizer_hash"):
        raise ScratchError(f"{folder} was prepared with another tokenizer than --data.tokenizer {cfg.tokenizer}; "
                           "drop --data.tokenizer to use the dataset's own, or prepare the text again with it")
    prepared.tokenizer()  # there, and the one that made the shards
    return prepared


def _output_flag(data_dir: str | Path | None, cfg: DataConfig) -> str:
    """Which setting chose the output folder, for messages."""
    return "--out" if data_dir else "--data.dir" if cfg.dir else "the cache folder (SCRATCHLM_CACHE)"


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
    """Tokenize cfg's source into data_dir (default: --data.dir, else a cache folder). Reuses a matching
    earlier result; a source that is itself a prepared folder is used as it is."""
    sources.check(cfg)
    if (folder := sources.prepared_dir(cfg.source)) is not None:
        return _use_as_is(folder, cfg, data_dir or cfg.dir, force)
    if cfg.workers < 0:
        raise ScratchError(f"data.workers must be 0 (one per CPU core) or a positive count, got {cfg.workers}")
    out = Path(data_dir or cfg.dir or default_dir(cfg))
    flag = _output_flag(data_dir, cfg)
    atomic.check_output_dir(out, flag)
    given = BPETokenizer.load(cfg.tokenizer) if cfg.tokenizer else None
    shard_dtype(given.vocab_size if given else cfg.vocab_size, cfg.dtype)  # refuse before any work
    digest = settings_digest(cfg)
    if (out / MANIFEST).is_file() and not force:
        prepared = load_prepared(out)
        if given is not None and prepared.manifest.get("tokenizer_hash") != given.fingerprint():
            raise ScratchError(f"shards in {out} were made by another tokenizer; pick another {flag} "
                               "or re-run prepare with --force")
        if prepared.manifest.get("settings") != digest:
            raise ScratchError(f"shards in {out} were made from other data or settings (source "
                               f"{prepared.manifest.get('source')}); to train on them as they are, pass --data {out}; "
                               f"else pick another {flag} or prepare with --force")
        return prepared
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ScratchError(f"{out} exists and is not a prepared dataset; its files are left alone: pick a new or "
                           f"empty {flag}")

    tokenizer = given or train_tokenizer(
        tqdm(_limited(sources.documents(cfg, "train"), TOKENIZER_TRAIN_CHARS), desc="train tokenizer",
             unit=" docs", dynamic_ncols=True, leave=False),
        cfg.vocab_size)
    dtype = shard_dtype(tokenizer.vocab_size, cfg.dtype)

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        workers = cfg.workers or os.cpu_count() or 1
        with get_context("spawn").Pool(workers, _init_worker, (tokenizer.to_json(),)) as pool:
            splits = {s: _write_split(pool, cfg, s, tmp, dtype) for s in sources.SPLITS}
        for split, info in splits.items():
            if info["tokens"] == 0:
                raise ScratchError(f"the {split} split of {sources.describe(cfg)} is empty")
        # Saved once the text is read: until then the folder holds no .json that a data directory
        # around it (--out inside --data) would take for text.
        tokenizer.save(tmp / TOKENIZER_FILE)
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
        atomic.sync_tree(tmp)
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
        atomic.sync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(out)


