"""Evaluation records from .jsonl, .parquet, .txt and through `datasets` (hf:), with bad files named."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trained_run import hub_folder

from scratchlm.errors import ScratchError
from scratchlm.eval import data

ROWS = [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
        {"question": "What is 4 * 6?", "answer": "4 * 6 = <<4*6=24>>24\n#### 24"}]


def test_jsonl_parquet_and_text(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")  # a blank last line is fine
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    for path in (jsonl, parquet):
        assert data.read_records(str(path), ("question", "answer"), "test") == ROWS
        assert data.read_records(str(path), ("question",), "test", limit=1) == ROWS[:1]
    text = tmp_path / "a.txt"
    text.write_text("One story.\n\nTwo paragraphs.")
    assert data.read_records(str(text), ("text",), "test") == [{"text": "One story.\n\nTwo paragraphs."}]


def test_hub_datasets_through_datasets(tmp_path):
    folder = hub_folder(tmp_path / "gsm8k", {"test": ROWS, "train": ROWS[::-1]})
    assert data.read_records(f"hf:{folder}:main", ("question", "answer"), "test") == ROWS
    assert data.read_records(f"hf:{folder}:main:train", ("question",), "test") == ROWS[::-1]
    assert data.with_split(f"hf:{folder}:main", "train") == f"hf:{folder}:main:train"
    assert data.describe(f"hf:{folder}:main", "test") == f"hf:{folder}:main:test"
    with pytest.raises(ScratchError, match="could not read"):
        data.read_records(f"hf:{folder}:main:validation", ("question",), "test")


@pytest.mark.parametrize(("content", "message"), [
    ('{"question": "q"}\n', "record 1 has no field 'answer'; this task reads question, answer"),
    ('{"question": "q", "answer": "a"}\nnot json\n', "line 2 is not JSON"),
    ('["a list"]\n', "line 1 is not a JSON object"),
    ("", "holds no records"),
])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ScratchError, match=message):
        data.read_records(str(path), ("question", "answer"), "test")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(ScratchError, match="does not exist"):
        data.read_records(str(tmp_path / "none.jsonl"), ("text",), "test")
    (tmp_path / "a.csv").write_text("x\n")
    with pytest.raises(ScratchError, match="not a supported data file"):
        data.read_records(str(tmp_path / "a.csv"), ("text",), "test")
    with pytest.raises(ScratchError, match="names no dataset"):
        data.read_records("hf:", ("text",), "test")


def test_fingerprint_follows_the_content():
    assert data.fingerprint(ROWS) == data.fingerprint([dict(r) for r in ROWS])
    assert data.fingerprint(ROWS) != data.fingerprint(ROWS[::-1])
