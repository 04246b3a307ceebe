"""Where evaluation records come from, besides the embedded corpus:

    PATH.jsonl | PATH.json        one JSON object per line
    PATH.parquet                  one record per row
    PATH.txt                      one record {"text": the whole file} (bits per byte)
    hf:NAME[:CONFIG[:SPLIT]]      a Hugging Face dataset through `datasets`: a hub id (needs a network) or a
                                  local folder laid out as on the hub; SPLIT defaults to the task's

Every record must hold the fields its task reads; the first that lacks one is named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


def describe(source: str, split: str) -> str:
    """The source as settings record it: a file's absolute path, or a hub dataset with its split."""
    if source.startswith("hf:"):
        name, config, chosen = _hub_parts(source, split)
        return f"hf:{name}:{config or ''}:{chosen}"
    return str(Path(source).expanduser().resolve())


def _hub_parts(source: str, split: str) -> tuple[str, str | None, str]:
    name, _, rest = source[3:].partition(":")
    config, _, chosen = rest.partition(":")
    if not name:
        raise ScratchError(f"'{source}' names no dataset; write hf:NAME[:CONFIG[:SPLIT]], e.g. hf:openai/gsm8k:main")
    return name, config or None, chosen or split


def _read_hub(source: str, split: str, limit: int | None) -> list[dict[str, Any]]:
    import datasets  # a second to import, and only hub sources need it

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    name, config, chosen = _hub_parts(source, split)
    try:
        rows = datasets.load_dataset(name, config, split=chosen, streaming=True)
        return [dict(row) for row in islice(rows, limit)]
    # What `datasets` raises for a missing dataset, config or split, or no network.
    except (OSError, ConnectionError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScratchError(f"could not read {source} (split {chosen}): {first}") from None


def _read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(records) == limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScratchError(f"{path} line {number} is not JSON ({exc.msg}); write one object per line"
                                   ) from None
            if not isinstance(record, dict):
                raise ScratchError(f"{path} line {number} is not a JSON object; write one object per line")
            records.append(record)
    return records


def _read_parquet(path: Path, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except pa.ArrowException as exc:
        raise ScratchError(f"{path} is not a parquet file: {str(exc).splitlines()[0]}") from None
    return rows[:limit]


def read_records(source: str, fields: Sequence[str], split: str, limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """The first `limit` records of source (all when None), each checked to hold `fields`."""
    if source.startswith("hf:"):
        records = _read_hub(source, split, limit)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ScratchError(f"data file {source} does not exist")
        if path.suffix not in FILE_SUFFIXES:
            raise ScratchError(f"{source} is not a supported data file; use {', '.join(FILE_SUFFIXES)} or hf:NAME")
        if path.suffix == ".txt":
            records = [{"text": path.read_text(encoding="utf-8", errors="replace")}]
        elif path.suffix == ".parquet":
            records = _read_parquet(path, limit)
        else:
            records = _read_jsonl(path, limit)
    if not records:
        raise ScratchError(f"{source} holds no records")
    for number, record in enumerate(records, 1):
        missing = [f for f in fields if f not in record]
        if missing:
            raise ScratchError(f"{source} record {number} has no field '{missing[0]}'; this task reads "
                               f"{', '.join(fields)}")
    return records


def fingerprint(*parts: Any) -> str:
    """A short hash of the data an evaluation saw: equal fingerprints, equal questions and answers."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_split(source: str, split: str) -> str:
    """A hub source naming another split of the same dataset: hf:NAME:CONFIG:split."""
    name, config, _ = _hub_parts(source, split)
    return f"hf:{name}:{config or ''}:{split}"
