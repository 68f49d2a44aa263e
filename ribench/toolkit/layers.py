"""Layers and blocks of an image classifier, named the same way for timm and open_clip ViTs.

Layer-wise methods (importance cohorts, Auto-RGN, surprise, criticality, DiGraP)
need one vocabulary for "which part of the network is this weight in":

- a *layer* is one parameter tensor (its name);
- a *module* is one function f_ℓ of the network with all its tensors: a leaf
  module's tensors (a Linear's weight and bias, a LayerNorm's scale and shift)
  are one module, named after it; the patch embedding with the class token and
  the position embedding is the module "embedding" (ViT's Eq. 1,
  z₀ = [x_class; x_p E] + E_pos); any other tensor held directly by a module
  with children (open_clip's projection, its attention in-projection) is its own
  module, weight and bias paired by name ("attn.in_proj");
- a *block* is one transformer block with everything inside it ("block.3"); the
  stem (patch embedding, class token, position embedding, pre-norm) is the block
  "stem", the final norm and projection are "post", the classifier head is "head".

Blocks are listed input to output: stem, block.0 … block.N-1, post, head.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)(?:blocks|resblocks)\.(\d+)\.")
_POST = {"norm", "fc_norm", "ln_post", "proj", "head_drop"}


def _backbone_prefix(model: nn.Module) -> str:
    backbone = model.image_backbone()
    for name, module in model.named_modules():
        if module is backbone:
            return name + "." if name else ""
    return ""


def block_of(name: str, prefix: str = "") -> str:
    """The block a parameter belongs to, from its name in the classifier."""
    if name.startswith("head.") or name == "head":
        return "head"
    match = _BLOCK.search(name)
    if match:
        return f"block.{int(match.group(1))}"
    relative = name[len(prefix):] if prefix and name.startswith(prefix) else name
    return "post" if relative.split(".")[0] in _POST else "stem"


def image_parameters(model: nn.Module) -> "OrderedDict[str, nn.Parameter]":
    """The image classifier's weights by name (image backbone and head; no text tower)."""
    keep = {id(p) for p in model.backbone_parameters()} | {id(p) for p in model.head.parameters()}
    return OrderedDict((n, p) for n, p in model.named_parameters() if id(p) in keep)


def _order(block: str) -> tuple:
    if block == "stem":
        return (0, 0)
    if block.startswith("block."):
        return (1, int(block.split(".")[1]))
    return (2, 0) if block == "post" else (3, 0)


def blocks(model: nn.Module) -> "OrderedDict[str, list[str]]":
    """{block: [parameter names]} of the image classifier, input to output."""
    prefix = _backbone_prefix(model)
    grouped: dict[str, list[str]] = {}
    for name in image_parameters(model):
        grouped.setdefault(block_of(name, prefix), []).append(name)
    return OrderedDict((b, grouped[b]) for b in sorted(grouped, key=_order))


def _module_of(model: nn.Module, name: str, prefix: str) -> str:
    owner, _, tensor = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    if block_of(name, prefix) == "stem" and not isinstance(module, nn.LayerNorm):
        return prefix + "embedding"
    if next(module.children(), None) is None:
        return owner or name
    stem = re.sub(r"_?(weight|bias)$", "", tensor) or tensor
    return f"{owner}.{stem}" if owner else stem


def modules(model: nn.Module) -> "OrderedDict[str, list[str]]":
    """{module: [parameter names]} of the image classifier, in parameter order."""
    prefix = _backbone_prefix(model)
    grouped: "OrderedDict[str, list[str]]" = OrderedDict()
    for name in image_parameters(model):
        grouped.setdefault(_module_of(model, name, prefix), []).append(name)
    return grouped


def cohorts(model: nn.Module, kind: str) -> "OrderedDict[str, list[str]]":
    """Groups of parameter names: 'block' (transformer blocks), 'module', 'layer' (one tensor each), 'global'."""
    names = list(image_parameters(model))
    if kind == "block":
        return blocks(model)
    if kind == "module":
        return modules(model)
    if kind == "layer":
        return OrderedDict((n, [n]) for n in names)
    if kind == "global":
        return OrderedDict(all=names)
    raise ValueError(f"unknown cohort '{kind}' (choose block, module, layer or global)")


def transformer_blocks(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """{'block.i': module} for the image encoder's transformer blocks, input to output."""
    backbone = model.image_backbone()
    stack = getattr(backbone, "blocks", None)
    if stack is None and hasattr(backbone, "transformer"):
        stack = backbone.transformer.resblocks
    if stack is None:
        raise ValueError(f"no transformer blocks found in {type(backbone).__name__}")
    return OrderedDict((f"block.{i}", module) for i, module in enumerate(stack))
