"""A cell's key: the sha256 of the canonical JSON of everything that can change its result, so that work
is never done twice and a stored number can be traced back to what made it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Mapping


def _canonical(value: Any) -> Any:
    """Plain JSON types only, so that equal identities serialise identically."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cell identity contains a non-finite number: {value!r}")
        return value  # json writes floats with repr: 1e-3 and 0.001 are the same float
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cell identity keys must be strings, got {key!r}")
            out[key] = _canonical(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(item) for item in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _canonical(value.item())
    raise TypeError(f"cell identity holds a value JSON cannot represent: {value!r}")


def canonical_json(identity: Mapping[str, Any]) -> str:
    return json.dumps(_canonical(identity), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cell_key(identity: Mapping[str, Any]) -> str:
    """Full sha256 hex of the canonical JSON of a cell's identity.

    Key order does not matter; ints and floats stay distinct (1 vs 1.0), so
    hyperparameter dataclasses should keep their declared types.
    """
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()
