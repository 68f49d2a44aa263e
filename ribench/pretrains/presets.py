"""Pretrain presets: a name, how to build its classifier, where its weights come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import MissingWeightsError
from .base import ClipClassifier, Pretrained, normalizer, sha256_file


@dataclass(frozen=True)
class PretrainPreset:
    name: str
    description: str
    build: Callable                 # (suite, weights path or None) -> Pretrained
    has_text_tower: bool
    embedded: bool                  # ships with ribench, runs offline

    def load(self, suite, weights=None) -> Pretrained:
        return self.build(suite, weights)


def _mini(name):
    def build(suite, weights=None):
        from . import mini

        return (mini.build_mini_clip if name == "mini-clip" else mini.build_mini_sup)(suite, weights)
    return build


MINI_CLIP = PretrainPreset("mini-clip", "tiny open_clip CLIP pretrained on rib-mini", _mini("mini-clip"), True, True)
MINI_SUP = PretrainPreset("mini-sup", "tiny timm ViT pretrained on rib-mini", _mini("mini-sup"), False, True)


def weights_dir() -> Path | None:
    value = os.environ.get("RIBENCH_WEIGHTS")
    return Path(value) if value else None


def _laion2b(suite, weights=None):
    """open_clip ViT-B/16 (LAION-2B, laion2b_s34b_b88k) from a local file only."""
    filename = "open_clip_pytorch_model.bin"
    path = Path(weights) if weights else (weights_dir() / "laion2b" / filename if weights_dir() else None)
    if path is None or not path.is_file():
        where = str(path) if path else f"$RIBENCH_WEIGHTS/laion2b/{filename}"
        raise MissingWeightsError(
            f"pretrain 'laion2b' needs {where} (open_clip ViT-B-16 'laion2b_s34b_b88k', published on "
            f"Hugging Face as laion/CLIP-ViT-B-16-laion2B-s34B-b88K); pass --weights PATH or set "
            f"RIBENCH_WEIGHTS, or run offline with '--pretrain mini-clip'")
    import open_clip
    import torch
    import torch.nn.functional as F

    clip = open_clip.create_model("ViT-B-16", pretrained=str(path))
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    model = ClipClassifier(clip, tokenizer, suite.class_names, suite.templates)
    base = normalizer((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        x = base(images)
        return F.interpolate(x, size=224, mode="bicubic", align_corners=False) if x.shape[-1] != 224 else x

    return Pretrained("laion2b", model, preprocess, sha256_file(path), True)


LAION2B = PretrainPreset("laion2b", "open_clip ViT-B/16 LAION-2B (local weights)", _laion2b, True, False)
