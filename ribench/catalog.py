"""The three registries and the built-in components, registered lazily by import path."""

from __future__ import annotations

from .registry import Registry

METHODS = Registry("method")
SUITES = Registry("suite")
PRETRAINS = Registry("pretrain")

METHODS.register("zeroshot", "ribench.methods.zeroshot:ZeroShot", aliases=["zero-shot", "pretrained"],
                 description="no training: the pretrained model and its (zero-shot or restricted) head")
METHODS.register("ft", "ribench.methods.ft:FineTune", aliases=["finetune", "full"],
                 description="full fine-tuning: all image-classifier weights, cross-entropy")
METHODS.register("lp", "ribench.methods.lp:LinearProbe", aliases=["linear-probe", "linear"],
                 description="linear probe: frozen backbone, head trained on cached features")

SUITES.register("rib-mini", "ribench.suites.rib_mini:build", aliases=["mini", "ribmini"],
                description="generated 32px shapes: a captioned corpus and 7 style-shifted downstream datasets")

PRETRAINS.register("mini-clip", "ribench.pretrains.presets:MINI_CLIP", aliases=["miniclip"],
                   description="tiny open_clip CLIP (ViT 4x96, patch 4) pretrained contrastively on rib-mini",
                   defaults={"suite": "rib-mini", "head": "zero-shot from text tower"})
PRETRAINS.register("mini-sup", "ribench.pretrains.presets:MINI_SUP", aliases=["minisup"],
                   description="tiny timm ViT (4x96, patch 4) pretrained supervised on rib-mini",
                   defaults={"suite": "rib-mini", "head": "pretrained classifier"})
PRETRAINS.register("laion2b", "ribench.pretrains.presets:LAION2B", aliases=["laion"],
                   description="open_clip ViT-B/16 laion2b_s34b_b88k, zero-shot head (local weights file)",
                   defaults={"weights": "open_clip_pytorch_model.bin"})
