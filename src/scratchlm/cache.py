"""scratchlm's cache directory: prepared datasets, compiled kernels, measured peaks.

SCRATCHLM_CACHE moves it (default ~/.cache/scratchlm); deleting it only costs recomputation.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("SCRATCHLM_CACHE", Path.home() / ".cache" / "scratchlm"))
