"""The three registries and the built-in components, registered lazily by import path.

Importing this module imports no component: each is imported when first used by name.
"""

from __future__ import annotations

from ribench.registry import Registry

METHODS = Registry("method", base="ribench.engine.method:Method")
SUITES = Registry("suite")
PRETRAINS = Registry("pretrain")

# Methods: name -> class, and aliases. A method's description and paper are read from its class (the
# one source; leaderboard entries store the class's). `needs`: the ingredient specs a derived method
# reads by default (its class's default ingredients() without "pretrained"), so the runner knows which
# cells keep their weights without importing any method; tests/test_method_contract.py holds them equal.
METHODS.register("zeroshot", "ribench.methods.zeroshot:ZeroShot", aliases=["zero-shot", "pretrained"])
METHODS.register("ft", "ribench.methods.ft:FineTune", aliases=["finetune", "full"])
METHODS.register("lp", "ribench.methods.lp:LinearProbe", aliases=["linear-probe", "linear"])
METHODS.register("vpt", "ribench.methods.vpt:VisualPrompt", aliases=["visual-prompt", "vp"])
METHODS.register("lora", "ribench.methods.lora:LoRA")
METHODS.register("l2sp", "ribench.methods.l2sp:L2SP", aliases=["l2-sp"])
METHODS.register("ewc", "ribench.methods.ewc:EWC")
METHODS.register("ewc-rib", "ribench.methods.ewc_rib:EWCRib")
METHODS.register("lwf", "ribench.methods.lwf:LwF", aliases=["learning-without-forgetting"])
METHODS.register("lpft", "ribench.methods.lpft:LPFT", aliases=["lp-ft"], needs=["lp[fit=lbfgs]"])
METHODS.register("wiseft", "ribench.methods.wiseft:WiSEFT", aliases=["wise-ft", "wise"], needs=["ft"])
METHODS.register("soup", "ribench.methods.soup:Soup", aliases=["model-soup", "ms"], needs=["ft", "ewc", "lwf"])
METHODS.register("flyp", "ribench.methods.flyp:FLYP")
METHODS.register("saft", "ribench.methods.saft:SAFT", aliases=["sparse-adaptation"])
METHODS.register("imp-select", "ribench.methods.imp_select:ImportanceSelect", aliases=["importance-select"])
METHODS.register("imp-reg", "ribench.methods.imp_reg:ImportanceReg", aliases=["importance-reg"])
METHODS.register("auto-rgn", "ribench.methods.auto_rgn:AutoRGN", aliases=["autorgn"])
METHODS.register("auto-rgn-hessian", "ribench.methods.auto_rgn:AutoRGNHessian")
METHODS.register("auto-rgn-change", "ribench.methods.auto_rgn:AutoRGNChange")
METHODS.register("surprise", "ribench.methods.surprise:Surprise", aliases=["layerwise-surprise"])
METHODS.register("surprise-diff", "ribench.methods.surprise:SurpriseDiff")
METHODS.register("criticality-identity", "ribench.methods.criticality:CriticalityIdentity")
METHODS.register("criticality-random", "ribench.methods.criticality:CriticalityRandom")
METHODS.register("digrap", "ribench.methods.digrap:DiGraP")

SUITES.register("rib-mini", "ribench.suites.rib_mini:build", aliases=["mini", "ribmini"],
                description="generated 32px shapes: a captioned corpus and 7 style-shifted downstream datasets")
SUITES.register("imagenet-rib", "ribench.suites.imagenet_rib:build", aliases=["imagenetrib"],
                description="ImageNet-V2, -A, -R, -Sketch, ObjectNet, -Cartoon, -Drawing, -C; ImageNet val as "
                            "pretraining domain (read from --data-root)")

PRETRAINS.register("mini-clip", "ribench.pretrains.presets:MINI_CLIP", aliases=["miniclip"],
                   description="tiny open_clip CLIP (ViT 4x96, patch 4) pretrained contrastively on rib-mini",
                   defaults={"suite": "rib-mini", "head": "zero-shot from text tower"})
PRETRAINS.register("mini-sup", "ribench.pretrains.presets:MINI_SUP", aliases=["minisup"],
                   description="tiny timm ViT (4x96, patch 4) pretrained supervised on rib-mini",
                   defaults={"suite": "rib-mini", "head": "pretrained classifier"})
PRETRAINS.register("laion2b", "ribench.pretrains.real:LAION2B", aliases=["laion"],
                   description="open_clip ViT-B/16 laion2b_s34b_b88k, zero-shot head (local weights file)",
                   defaults={"weights": "open_clip_pytorch_model.bin"})
PRETRAINS.register("openai", "ribench.pretrains.real:OPENAI", aliases=["clip-openai"],
                   description="open_clip ViT-B/16 OpenAI CLIP (QuickGELU), zero-shot head (local weights file)",
                   defaults={"weights": "open_clip_pytorch_model.bin"})
for _name, _attr, _model in (
        ("laion2b-in1k", "LAION2B_IN1K", "vit_base_patch16_clip_224.laion2b_ft_in1k"),
        ("openai-in1k", "OPENAI_IN1K", "vit_base_patch16_clip_224.openai_ft_in1k"),
        ("in1k-augreg", "IN1K_AUGREG", "vit_base_patch16_224.augreg_in1k"),
        ("in21k", "IN21K", "vit_base_patch16_224.orig_in21k_ft_in1k"),
        ("in21k-augreg", "IN21K_AUGREG", "vit_base_patch16_224.augreg_in21k_ft_in1k")):
    PRETRAINS.register(_name, f"ribench.pretrains.real:{_attr}",
                       description=f"timm {_model}, its ImageNet-1K head (local weights file)",
                       defaults={"weights": "model.safetensors", "suite": "imagenet-rib"})
