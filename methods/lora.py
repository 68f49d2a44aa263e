"""lora: low-rank adaptation (Hu et al., ICLR 2022) of the query and value projections.

    W_q ← W_q + (α/r)·B_q A_q,   W_v ← W_v + (α/r)·B_v A_v,   W_k unchanged

r = 8, α = 1, no dropout, as ImageNet-RIB; A from LoRA's Kaiming-uniform
initialisation, B = 0, so training starts exactly at θ0. Every other weight,
the head included, is frozen.

Fused projections. timm's ViT computes q, k, v with one `qkv` Linear and
open_clip's towers with `nn.MultiheadAttention.in_proj_weight`, both a
(3d × d) matrix whose row thirds are q, k and v. A generic LoRA wrapper can
only adapt the whole matrix; here the adapter is a `torch.nn.utils.parametrize`
parametrization of that fused weight which returns
W + (α/r)·[B_q A_q; 0; B_v A_v], so the key third gets no update and the
attention code runs unchanged. After training the parametrization is removed
with its value kept (`leave_parametrized=True`): the adapters are merged and
the stored model is a plain model with the usual parameter names.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ribench.errors import ConfigError
from ribench.engine.method import Method, ParamGroup


class QueryValueLoRA(nn.Module):
    """Parametrization of a fused (3d × d) q/k/v weight: a rank-r update of the q and v thirds."""

    def __init__(self, dim: int, rank: int, alpha: float):
        super().__init__()
        self.scaling = alpha / rank
        self.A_q = nn.Parameter(torch.empty(rank, dim))
        self.A_v = nn.Parameter(torch.empty(rank, dim))
        self.B_q = nn.Parameter(torch.zeros(dim, rank))
        self.B_v = nn.Parameter(torch.zeros(dim, rank))
        for a in (self.A_q, self.A_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def forward(self, weight):
        dim = weight.shape[1]
        no_change = weight.new_zeros(dim, dim)
        delta = torch.cat([self.B_q @ self.A_q, no_change, self.B_v @ self.A_v], dim=0)
        return weight + self.scaling * delta


def fused_qkv_weights(backbone: nn.Module):
    """(module, attribute) of every fused q/k/v projection weight in an image backbone."""
    found = []
    for module in backbone.modules():
        if isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is None:
                raise ConfigError("lora: attention with separate q/k/v weights is not supported")
            found.append((module, "in_proj_weight"))
        elif isinstance(getattr(module, "qkv", None), nn.Linear):
            found.append((module.qkv, "weight"))
    return found


class LoRA(Method):
    name = "lora"
    description = "LoRA rank 8 on the q and v projections; everything else frozen; merged after training"
    paper = "https://arxiv.org/abs/2106.09685"

    @dataclass
    class Config:
        rank: int = 8
        alpha: float = 1.0

    def __init__(self, config=None):
        super().__init__(config)
        self.targets: list = []       # (module, "weight") pairs, set by prepare
        self.adapters: list = []

    def prepare(self, ctx):
        targets = fused_qkv_weights(ctx.model.image_backbone())
        if not targets:
            raise ConfigError("lora: no fused q/k/v projection found in the image backbone")
        adapters = []
        for module, attr in targets:
            weight = getattr(module, attr)
            adapter = QueryValueLoRA(weight.shape[1], self.config.rank, self.config.alpha).to(weight.device)
            parametrize.register_parametrization(module, attr, adapter)
            adapters.append(adapter)
        self.targets, self.adapters = targets, adapters

    def param_groups(self, ctx):
        return [ParamGroup([p for a in self.adapters for p in a.parameters()], 1.0, "adapters")]

    def finish(self, ctx):
        """Merge: W ← W + (α/r)·ΔW, then a plain parameter again."""
        for module, attr in self.targets:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
