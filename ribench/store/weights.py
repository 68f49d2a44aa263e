"""The weights derived cells reuse, as safetensors files beside the database (never pickles), each
carrying the sha256 of its tensors so that a damaged file is caught on read."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ribench.cachefile import atomic_write
from ribench.errors import StoreError


def weights_file(folder: Path, key: str) -> Path:
    return folder / f"{key}.safetensors"


def save_weights(folder: Path, key: str, state_dict: Mapping[str, Any]) -> Path:
    """Write a state dict of tensors atomically (temp file, then rename), with the sha256 of its tensors;
    a failure (a full disk) is one StoreError line and leaves no temporary file."""
    target = weights_file(folder, key)
    # Own CPU copies: safetensors refuses tied/shared or non-contiguous tensors.
    tensors = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state_dict.items()}
    metadata = {"cell_key": key, "tensors_sha256": tensors_sha256(tensors)}
    return atomic_write(target, lambda name: save_file(tensors, name, metadata=metadata), "weights",
                        error_type=StoreError)


def load_weights(folder: Path, key: str, device: str = "cpu") -> dict[str, Any]:
    """The stored tensors of a cell, checked against the hash they were written with."""
    target = weights_file(folder, key)
    if not target.is_file():
        raise StoreError(f"no stored weights for cell {key} (expected {target})")
    try:
        with safe_open(str(target), "pt") as handle:
            expected = (handle.metadata() or {}).get("tensors_sha256")
        tensors = load_file(str(target), device="cpu")
    except Exception as error:  # a corrupt file is a store problem, not a traceback
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StoreError(f"cannot read weights {target}: {type(error).__name__}: {reason}") from None
    if expected is not None and tensors_sha256(tensors) != expected:
        raise StoreError(f"stored weights {target} are damaged (their tensors do not match the hash they were "
                         "written with); delete the file and run the same command to train that cell again")
    return {name: tensor.to(device) for name, tensor in tensors.items()} if device != "cpu" else tensors


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """sha256 over names, dtypes, shapes and bytes of CPU tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
