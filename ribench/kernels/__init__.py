"""Optional Triton kernels for the methods' extra work, each beside the torch code it replaces.

`--kernels auto|torch|triton` picks them: `auto` is Triton on a CUDA device when triton imports,
torch otherwise; `triton` insists (on CPU tensors it runs only under TRITON_INTERPRET=1, which the
tests use). The resolved choice is recorded in every cell's provenance, not in its identity: the
kernels compute the same quantities as the torch code, to float tolerance.
"""

from __future__ import annotations

import importlib.util
import os

from ribench.errors import ConfigError

KERNEL_CHOICES = ("auto", "torch", "triton")


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton's interpreter runs kernels on CPU tensors (slowly; fp32 only is reliable)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_kernels(choice: str, device: str, check: bool = True) -> str:
    """'torch' or 'triton' for a run on `device`; a one-line error when triton cannot run there.
    `check=False`: a driver that only plans cells for workers elsewhere, which resolve it again."""
    if choice not in KERNEL_CHOICES:
        raise ConfigError(f"unknown --kernels '{choice}' (choose {', '.join(KERNEL_CHOICES)})")
    on_cuda = device.startswith("cuda")
    if choice == "auto":
        return "triton" if on_cuda and triton_importable() else "torch"
    if choice == "triton" and check:
        if not triton_importable():
            raise ConfigError("--kernels triton needs triton (pip install 'ribench[kernels]'; Linux only)")
        if not on_cuda and not interpreting():
            raise ConfigError("--kernels triton runs on CUDA devices; on CPU only under TRITON_INTERPRET=1 "
                              "(slow: for tests)")
    return choice


def launch_block(tensor, block: int = 1024) -> int:
    """Elements per program: `block` on a GPU; under the interpreter, where each program costs ≈ 2 ms
    whatever its size, 64k, so a run over a model's weights takes a few programs, not thousands."""
    return 1 << 16 if interpreting() and not tensor.is_cuda else block
