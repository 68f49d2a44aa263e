"""Pretrain presets: a name, how to build its classifier, where its weights come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ribench.errors import ConfigError
from ribench.suites.rib_mini_render import CLASS_NAMES as RIB_MINI_CLASSES


@dataclass(frozen=True)
class PretrainPreset:
    name: str
    description: str
    build: Callable                 # (suite, weights path or None) -> Pretrained
    has_text_tower: bool
    embedded: bool                  # ships with ribench, runs offline
    locate: Callable | None = None  # (weights path or None) -> the local weight file, or MissingWeightsError
    classes: tuple | None = None    # the only classes it knows (an embedded preset); None: any label space

    def load(self, suite, weights=None) -> Pretrained:
        return self.build(suite, weights)

    def check_suite(self, suite) -> None:
        """Refuse, before any work, a suite whose classes this preset was never pretrained on."""
        if self.classes is None:
            return
        unknown = [name for name in suite.class_names if name not in self.classes]
        if unknown:
            raise ConfigError(f"pretrain '{self.name}' knows only rib-mini's {len(self.classes)} classes and "
                              f"cannot classify suite '{suite.name}' ({len(suite.class_names)} classes, e.g. "
                              f"'{unknown[0]}'); use a real preset (see 'ribench list pretrains')")


def _mini(name):
    def build(suite, weights=None):
        from ribench.pretrains import mini

        return (mini.build_mini_clip if name == "mini-clip" else mini.build_mini_sup)(suite, weights)
    return build


MINI_CLIP = PretrainPreset("mini-clip", "tiny open_clip CLIP pretrained on rib-mini", _mini("mini-clip"), True, True,
                           classes=tuple(RIB_MINI_CLASSES))
MINI_SUP = PretrainPreset("mini-sup", "tiny timm ViT pretrained on rib-mini", _mini("mini-sup"), False, True,
                          classes=tuple(RIB_MINI_CLASSES))


def weights_dir() -> Path | None:
    value = os.environ.get("RIBENCH_WEIGHTS")
    return Path(value) if value else None
