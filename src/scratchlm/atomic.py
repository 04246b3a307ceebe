"""Files that are either there whole or not at all.

A reader (another rank, a later command) never sees a half-written config or tokenizer: the text
goes to a temporary file beside the target, which then replaces it in one rename.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after a failed one
