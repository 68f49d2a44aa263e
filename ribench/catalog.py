"""The three registries and the built-in components, registered lazily by import path."""

from __future__ import annotations

from ribench.registry import Registry

METHODS = Registry("method")
SUITES = Registry("suite")
PRETRAINS = Registry("pretrain")

METHODS.register("zeroshot", "ribench.methods.zeroshot:ZeroShot", aliases=["zero-shot", "pretrained"],
                 description="no training: the pretrained model and its (zero-shot or restricted) head")
METHODS.register("ft", "ribench.methods.ft:FineTune", aliases=["finetune", "full"],
                 description="full fine-tuning: all image-classifier weights, cross-entropy")
METHODS.register("lp", "ribench.methods.lp:LinearProbe", aliases=["linear-probe", "linear"],
                 description="linear probe: frozen backbone, head trained on cached features")
METHODS.register("vpt", "ribench.methods.vpt:VisualPrompt", aliases=["visual-prompt", "vp"],
                 description="visual prompt (pad prompter, Bahng et al.): a learnable input border, model frozen")
METHODS.register("lora", "ribench.methods.lora:LoRA",
                 description="LoRA rank 8 on the q and v projections, everything else frozen; merged after")
METHODS.register("l2sp", "ribench.methods.l2sp:L2SP", aliases=["l2-sp"],
                 description="L2-SP: cross-entropy + (λ/2)·‖θ − θ0‖² over the backbone (regularizer)")
METHODS.register("ewc", "ribench.methods.ewc:EWC",
                 description="EWC: cross-entropy + (λ/2)·Σ F(θ − θ0)², empirical Fisher at θ0 (regularizer)")
METHODS.register("lwf", "ribench.methods.lwf:LwF", aliases=["learning-without-forgetting"],
                 description="LwF: cross-entropy + α·KL to the pretrained model's logits at T=2 (regularizer)")
METHODS.register("lpft", "ribench.methods.lpft:LPFT", aliases=["lp-ft"],
                 description="LP-FT: ft starting from the stored converged linear probe (lp[fit=lbfgs])")
METHODS.register("wiseft", "ribench.methods.wiseft:WiSEFT", aliases=["wise-ft", "wise"],
                 description="WiSE-FT: (1 − α)·θ0 + α·θ_ft from the stored ft cell; no training")
METHODS.register("soup", "ribench.methods.soup:Soup", aliases=["model-soup", "ms"],
                 description="uniform model soup of pretrained, ft, ewc, lwf weights; no training")
METHODS.register("flyp", "ribench.methods.flyp:FLYP",
                 description="FLYP: contrastive fine-tuning of both CLIP towers; zero-shot head rebuilt")
METHODS.register("saft", "ribench.methods.saft:SAFT", aliases=["sparse-adaptation"],
                 description="SAFT: train only the top 0.1% weights by |mean gradient|; the rest stay at θ0")
METHODS.register("imp-select", "ribench.methods.imp_select:ImportanceSelect", aliases=["importance-select"],
                 description="importance-guided selective fine-tuning: train the top-k% weights by mean |per-sample grad|")
METHODS.register("imp-reg", "ribench.methods.imp_reg:ImportanceReg", aliases=["importance-reg"],
                 description="importance-guided regularization: + λ·Σ r̄|θ − θ0|, r̄ block-normalised importance (regularizer)")
METHODS.register("auto-rgn", "ribench.methods.auto_rgn:AutoRGN", aliases=["autorgn"],
                 description="Auto-RGN: layer lr ∝ ‖g_ℓ‖/‖θ_ℓ‖ (relative gradient norm)")
METHODS.register("auto-rgn-hessian", "ribench.methods.auto_rgn:AutoRGNHessian",
                 description="Auto-RGN with the gradient preconditioned by an L-BFGS inverse Hessian")
METHODS.register("auto-rgn-change", "ribench.methods.auto_rgn:AutoRGNChange",
                 description="Auto-RGN on the change of gradient from source (pretraining domain) to target")
METHODS.register("surprise", "ribench.methods.surprise:Surprise", aliases=["layerwise-surprise"],
                 description="layerwise surprise: layer lr ∝ KL(target ‖ source) of its activation histograms")
METHODS.register("surprise-diff", "ribench.methods.surprise:SurpriseDiff",
                 description="layerwise surprise, lr ∝ the increase of surprise over the previous layer")
METHODS.register("criticality-identity", "ribench.methods.criticality:CriticalityIdentity",
                 description="module criticality: block lr ∝ source-loss increase when the block is the identity")
METHODS.register("criticality-random", "ribench.methods.criticality:CriticalityRandom",
                 description="module criticality: block lr ∝ source-loss increase when the block is re-initialised")
METHODS.register("digrap", "ribench.methods.digrap:DiGraP",
                 description="DiGraP: project conflicting gradients off θ − θ0 per layer, trainable strength ω")

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
