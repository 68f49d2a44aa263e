"""Where a store lives, where its weights live, and how long a claim on a cell lasts."""

from __future__ import annotations

import os
from pathlib import Path


LEASE_S = 6 * 3600.0    # a claim on a cell not finished by then is another process's to take over


def lease_seconds() -> float:
    """How long a claim on a cell lasts: $RIBENCH_LEASE_S, else six hours."""
    try:
        return float(os.environ.get("RIBENCH_LEASE_S", LEASE_S))
    except ValueError:
        return LEASE_S


def default_store_path() -> Path:
    """$RIBENCH_STORE, else $XDG_DATA_HOME/ribench/results.sqlite."""
    explicit = os.environ.get("RIBENCH_STORE")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data_home).expanduser() / "ribench" / "results.sqlite"


def weights_dir_of(store_path: Path) -> Path:
    """The folder beside a store that holds its cells' weights."""
    return store_path.parent / f"{store_path.stem}-weights"
