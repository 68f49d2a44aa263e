"""The one place where user text becomes settings: `--set key=value`, values by field type, and
method specs `NAME[key=value,...]`."""

from __future__ import annotations

import dataclasses
import math
import difflib
import re
import typing
from typing import Any

import numpy as np

from ribench.engine.protocol import Protocol
from ribench.errors import ConfigError


def unknown_key(key, names, where):
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    known = ", ".join(names) if names else "none"
    return f"unknown setting '{key}' for {where}{hint} (settings: {known})"


def parse_value(key: str, raw: str, kind) -> Any:
    """Parse a --set value as the field's type; a clear error otherwise."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if raw not in choices:
            raise ConfigError(f"bad value for {key}: '{raw}' (choose one of {', '.join(map(str, choices))})")
        return raw
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not np.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"bad value for {key}: '{raw}' is not a valid {kind.__name__}") from None
    return raw


def configure_protocol(protocol: Protocol, overrides: dict[str, str]) -> Protocol:
    hints = typing.get_type_hints(Protocol)
    names = [f.name for f in dataclasses.fields(Protocol)]
    values = {}
    for key, raw in overrides.items():
        if key not in names:
            raise ConfigError(unknown_key(key, names, "the protocol"))
        values[key] = parse_value(key, raw, hints[key])
    new = dataclasses.replace(protocol, **values)
    check_protocol(new)
    return new


# What each protocol number may be: (lowest allowed, highest allowed or None, whether the lowest is allowed).
PROTOCOL_RANGES = {
    "lr": (0.0, None, False), "momentum": (0.0, 1.0, True), "weight_decay": (0.0, None, True),
    "warmup_steps": (0, None, True), "epochs": (1, None, True), "batch_size": (1, None, True),
    "eval_batch_size": (1, None, True),
}


def check_protocol(new: Protocol) -> None:
    """Every protocol value in its range, checked before any work (a bad eval_batch_size used to fail
    only after training)."""
    for key, (low, high, low_ok) in PROTOCOL_RANGES.items():
        value = getattr(new, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"bad value for {key}: {value!r} is not a finite number")
        too_low = value < low if low_ok else value <= low
        if too_low or (high is not None and value > high):
            allowed = (f"{'at least' if low_ok else 'above'} {low}" if high is None
                       else f"between {low} and {high}")
            raise ConfigError(f"bad value for {key}: {value!r} (must be {allowed})")
    if new.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"bad value for optimizer: '{new.optimizer}' (choose sgd or adamw)")
    if new.schedule not in ("cosine", "constant"):
        raise ConfigError(f"bad value for schedule: '{new.schedule}' (choose cosine or constant)")


def split_overrides(pairs: list[str], method_cls) -> tuple[dict, dict]:
    """Route `--set key=value` pairs to the method or the protocol.

    `method.key` / `protocol.key` force a side; `part.key` (a combination's part)
    goes to the method; a bare key goes to the method if it has such a setting,
    else to the protocol.
    """
    method_names = method_cls.setting_names()
    method, protocol = {}, {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"bad --set '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key.startswith("method."):
            method[key[7:]] = raw
        elif key.startswith("protocol."):
            protocol[key[9:]] = raw
        elif key in method_names or "." in key:     # 'lwf.alpha': a part of a combination
            method[key] = raw
        else:
            protocol[key] = raw
    return method, protocol


_SPEC = re.compile(r"^\s*([^\[\]]+?)\s*(?:\[(.*)\])?\s*$")
_KEY = re.compile(r"^\s*[A-Za-z_][\w.]*\s*=")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'lp[fit=lbfgs]' -> ('lp', {'fit': 'lbfgs'})."""
    match = _SPEC.match(spec or "")
    if not match:
        raise ConfigError(f"bad method '{spec}': expected NAME or NAME[key=value,...]")
    name, inner = match.group(1), match.group(2)
    overrides, key = {}, None
    for piece in split_top_level(inner or ""):
        if _KEY.match(piece):
            key, value = piece.split("=", 1)
            key = key.strip()
            overrides[key] = value.strip()
        elif key is not None:          # a list value: soup[ingredients=pretrained,ft,lwf]
            overrides[key] += "," + piece
        else:
            raise ConfigError(f"bad method '{spec}': '{piece}' is not key=value")
    return name, overrides


def split_top_level(text: str) -> list[str]:
    """'pretrained,lp[fit=lbfgs,l2=0.1]' -> ['pretrained', 'lp[fit=lbfgs,l2=0.1]']."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]
