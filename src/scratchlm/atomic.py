"""Files that are either there whole or not at all, and output paths checked before any work.

A reader (another rank, a later command) never sees a half-written config or tokenizer: the text
goes to a temporary file beside the target, which then replaces it in one rename. A rename is only
as durable as what it points to: the file's data is flushed to disk (fsync) before the rename, and
the folder that holds the new name after it, so a power loss leaves the old file or the new one,
never an empty one. Checkpoints and prepared datasets, written as temporary folders and renamed,
use the same two steps (sync_tree, sync_dir).
"""

from __future__ import annotations

import os
from pathlib import Path

from scratchlm.errors import ScratchError


def sync_file(path: str | Path) -> None:
    """Flush a file's data to disk (an fsync on any descriptor of the file flushes all its writes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str | Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk. Windows cannot open a
    folder, and makes its renames durable itself."""
    if os.name == "posix":
        sync_file(path)


def sync_tree(root: str | Path) -> None:
    """Flush every file and folder under root, root included: before root is renamed into place."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            sync_file(Path(folder) / name)
        sync_dir(folder)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after a failed one


def check_output_dir(path: str | Path, flag: str) -> None:
    """Refuse an output folder that cannot be made or written, before any work: it must be a folder or
    not exist yet, and the nearest folder that does exist must be writable. flag names the option
    that gave the path, for the message."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ScratchError(f"{flag} {path} is a file, not a folder; choose a folder path")
    _check_writable_folder(path, path, flag)


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse an output file path that is a folder, or that lies where nothing can be written."""
    path = Path(path)
    if path.is_dir():
        raise ScratchError(f"{flag} {path} is a folder; give a file path such as {path / 'out.jsonl'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ScratchError(f"{flag} {path} is read-only for this user; choose another path")
    _check_writable_folder(path.parent, path, flag)


def _check_writable_folder(folder: Path, path: Path, flag: str) -> None:
    """folder, or the nearest folder above it that exists, must be a folder this user can write into."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ScratchError(f"{flag} {path} cannot be created: {folder} is a file; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ScratchError(f"{flag} {path} cannot be written: {folder} is not writable for this user; "
                           "choose another path")
