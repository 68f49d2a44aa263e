"""Pretrain presets: a name, how to build its classifier, where its weights come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable



@dataclass(frozen=True)
class PretrainPreset:
    name: str
    description: str
    build: Callable                 # (suite, weights path or None) -> Pretrained
    has_text_tower: bool
    embedded: bool                  # ships with ribench, runs offline
    locate: Callable | None = None  # (weights path or None) -> the local weight file, or MissingWeightsError

    def load(self, suite, weights=None) -> Pretrained:
        return self.build(suite, weights)


def _mini(name):
    def build(suite, weights=None):
        from ribench.pretrains import mini

        return (mini.build_mini_clip if name == "mini-clip" else mini.build_mini_sup)(suite, weights)
    return build


MINI_CLIP = PretrainPreset("mini-clip", "tiny open_clip CLIP pretrained on rib-mini", _mini("mini-clip"), True, True)
MINI_SUP = PretrainPreset("mini-sup", "tiny timm ViT pretrained on rib-mini", _mini("mini-sup"), False, True)


def weights_dir() -> Path | None:
    value = os.environ.get("RIBENCH_WEIGHTS")
    return Path(value) if value else None
