"""Test-session settings: caches stay inside the repository (CI caches nothing outside it)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("EMBER_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "ember"))
