"""Where ribench keeps caches and finds its shipped data."""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    """A data folder shipped with the package: ribench/<name> installed, ./<name> in a checkout."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    return _HERE / name


def manifest_dir() -> Path:
    return _shipped("data_manifests")


def cache_dir() -> Path:
    """Generated data and cached features: $RIBENCH_CACHE, else $XDG_CACHE_HOME/ribench."""
    if os.environ.get("RIBENCH_CACHE"):
        return Path(os.environ["RIBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ribench"


def data_home() -> Path:
    """ribench's own data (the default store, the user's tuned selections): $XDG_DATA_HOME/ribench."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "ribench"
