"""Records of a data source, one at a time: the reading that loaders of records (not plain text) share.

    PATH | DIR | GLOB  local .jsonl, .json or .parquet files
    hf:NAME[:CONFIG]   a Hugging Face hub dataset, streamed (needs a network)

Each record comes as (where, record number, record). Parquet files and hub datasets stream through
`datasets`, so tests that read local parquet files run the hub path offline. JSON lines are read line by
line here instead: a malformed line then comes as a BadRecord named by its line number, which the loader
can skip and count, where `datasets` would give up on the whole file.

A loader passes `check_first(record, where)`, which refuses, in one line, a file whose first record has
none of the fields it reads (the wrong kind of file altogether).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from scratchlm.data.sources import local_files
from scratchlm.errors import ScratchError

SUFFIXES = (".jsonl", ".json", ".parquet")
CheckFirst = Callable[[dict, str], None]


class BadRecord(Exception):
    """A record that a loader cannot use; its message is the reason, as a summary counts it."""


def records(source: str, hub_split: str, check_first: CheckFirst) -> Iterator[tuple[str, int, object]]:
    """(where, record number, record) for every record of a source, in order; numbers count from 1 in each
    file (line numbers in a .jsonl file); a line that does not parse comes as a BadRecord."""
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        rows = _dataset_rows(source, "hf", check_first, path=name, name=config or None, split=hub_split)
        yield from ((source, number, row) for number, row in enumerate(rows, 1))
        return
    files = [path for path in local_files(source) if path.suffix in SUFFIXES]
    if not files:
        raise ScratchError(f"data source {source} holds no {', '.join(SUFFIXES)} files (this data is records, "
                           "not plain text)")
    for path in files:
        if path.suffix == ".parquet":
            if _parquet_rows(path) == 0:
                continue  # `datasets` fails on an empty file with an obscure error; it simply holds nothing
            rows = _dataset_rows(str(path), "parquet", check_first, data_files=str(path), split="train")
            yield from ((str(path), number, row) for number, row in enumerate(rows, 1))
        else:
            yield from ((str(path), number, record) for number, record in _json_records(path, check_first))


def _json_records(path: Path, check_first: CheckFirst) -> Iterator[tuple[int, object]]:
    """A .json array, or JSON lines (numbered by line; a malformed line becomes a BadRecord)."""
    with open(path, "rb") as f:
        if f.read(1024).lstrip()[:1] == b"[":
            f.seek(0)
            try:
                items = json.load(f)
            except ValueError as exc:
                raise ScratchError(f"{path} is not valid JSON ({exc}); write one record per line as .jsonl to "
                                   "have bad records skipped") from None
            first = next((r for r in items if isinstance(r, dict)), None)
            if first is not None:
                check_first(first, str(path))
            yield from enumerate(items, 1)
            return
        f.seek(0)
        checked = False
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield number, BadRecord("malformed JSON")
                continue
            if not checked and isinstance(record, dict):
                check_first(record, str(path))
                checked = True
            yield number, record


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _dataset_rows(where: str, builder: str, check_first: CheckFirst, **kwargs) -> Iterator[dict]:
    """Rows streamed through `datasets`: the one path for hub datasets and local parquet files.
    builder "hf": the dataset named by kwargs["path"]; otherwise a packaged builder (parquet)."""
    import datasets  # imported here: it takes a second to import and the embedded corpus never needs it
    import pyarrow

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = kwargs.pop("path") if builder == "hf" else builder
    # What `datasets` raises for a missing or unreachable dataset, a bad config or split, or a broken file.
    failures = (OSError, ValueError, datasets.exceptions.DatasetsError, pyarrow.ArrowException)
    try:
        first = True
        for row in datasets.load_dataset(path, streaming=True, **kwargs):
            if first:
                check_first(row, where)
                first = False
            yield row
    except failures as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScratchError(f"could not read {where}: {reason}") from None
