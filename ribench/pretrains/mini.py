"""The embedded pretrains: `mini-clip` (open_clip CLIP) and `mini-sup` (timm ViT).

Tiny configs of the model classes the real presets use, pretrained on the
rib-mini corpus by `ribench pretrain NAME` and shipped as safetensors with
their sha256 so every user benchmarks the same model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ribench.errors import MissingWeightsError, RibenchError
from ribench.pretrains.base import (ClipClassifier, Pretrained, TimmClassifier, normalizer, sha256_file,
                                   unloadable)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

VISION = dict(image_size=32, patch_size=4, width=96, layers=4, head_width=32, mlp_ratio=4)
CLIP_CONFIG = dict(embed_dim=64, vision_cfg=VISION,
                   text_cfg=dict(context_length=16, width=64, heads=2, layers=2))
VIT_CONFIG = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4)

# Pretraining recipes (AdamW, warm-up then cosine). Chosen once, recorded here.
RECIPES = {
    "mini-clip": dict(steps=2000, batch_size=128, lr=2e-3, weight_decay=0.1, warmup=150, seed=0),
    "mini-sup": dict(steps=2500, batch_size=128, lr=2e-3, weight_decay=0.05, warmup=100, seed=0),
}


class CompactTokenizer:
    """open_clip's BPE tokenizer, with ids remapped onto the few tokens rib-mini uses.

    Keeps the text tower's embedding table a few KB instead of 49408 rows.
    Ids: 0 pad, 1 start, 2.. known BPE tokens, V-2 unknown, V-1 end (largest, so
    open_clip's argmax text pooling still finds it).
    """

    def __init__(self, known_ids, context_length):
        from open_clip.tokenizer import SimpleTokenizer

        self.base = SimpleTokenizer(context_length=context_length)
        self.known_ids = [int(i) for i in known_ids]
        self.vocab_size = len(self.known_ids) + 4
        table = torch.full((len(self.base.encoder),), self.vocab_size - 2, dtype=torch.long)
        table[0] = 0
        table[self.base.sot_token_id] = 1
        table[self.base.eot_token_id] = self.vocab_size - 1
        for k, i in enumerate(self.known_ids):
            table[i] = k + 2
        self.table = table
        self.context_length = context_length

    @classmethod
    def for_texts(cls, texts, context_length):
        from open_clip.tokenizer import SimpleTokenizer

        base = SimpleTokenizer(context_length=context_length)
        special = {0, base.sot_token_id, base.eot_token_id}
        ids = sorted({int(i) for row in base(list(texts)) for i in row.tolist()} - special)
        return cls(ids, context_length)

    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self.table[self.base(list(texts), context_length=self.context_length)]


def _clip_texts():
    from ribench.suites import rib_mini as M
    from ribench.suites.rib_mini_render import CLASS_NAMES, COLOR_NAMES

    words = [f.format(style=s, color=c + " ", shape=n, size=z)
             for f in M.CAPTION_FORMS for _, s, _ in M.CORPUS_STYLES
             for c in COLOR_NAMES for n in CLASS_NAMES for z in ("small", "large")]
    return words + [t.format(n) for t in M.TEMPLATES for n in CLASS_NAMES]


def new_clip(tokenizer):
    from open_clip.model import CLIP

    text_cfg = dict(CLIP_CONFIG["text_cfg"], vocab_size=tokenizer.vocab_size)
    return CLIP(embed_dim=CLIP_CONFIG["embed_dim"], vision_cfg=CLIP_CONFIG["vision_cfg"],
                text_cfg=text_cfg, output_dict=True)


def new_vit(num_classes):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(num_classes=num_classes, **VIT_CONFIG)


def weights_file(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def _load_state(name: str, path: Path | None):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path else weights_file(name)
    if not path.exists():
        raise MissingWeightsError(
            f"weights for '{name}' not found at {path}; run 'ribench pretrain {name}' to rebuild them")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta, sha256_file(path)
    except Exception as exc:              # a truncated or damaged file: safetensors raises its own error type
        raise unloadable(path, f"{name} weights", exc, _rebuild_hint(name)) from None


def _rebuild_hint(name: str) -> str:
    return f"; run 'ribench pretrain {name}' to rebuild them"


def build_mini_clip(suite, weights: str | Path | None = None) -> Pretrained:
    state, meta, digest = _load_state("mini-clip", weights)
    try:
        tokenizer = CompactTokenizer(json.loads(meta["known_ids"]), CLIP_CONFIG["text_cfg"]["context_length"])
        clip = new_clip(tokenizer)
        clip.load_state_dict(state)
    except Exception as exc:              # a file of another model, or without its tokenizer's metadata
        raise unloadable(weights or weights_file("mini-clip"), "mini-clip weights", exc,
                         _rebuild_hint("mini-clip")) from None
    model = ClipClassifier(clip, tokenizer, suite.class_names, suite.templates)
    return Pretrained("mini-clip", model, normalizer(CLIP_MEAN, CLIP_STD), digest, True, info=meta)


def build_mini_sup(suite, weights: str | Path | None = None) -> Pretrained:
    from ribench.suites.rib_mini_render import CLASS_NAMES

    state, meta, digest = _load_state("mini-sup", weights)
    vit = new_vit(len(CLASS_NAMES))
    try:
        vit.load_state_dict(state)
    except Exception as exc:
        raise unloadable(weights or weights_file("mini-sup"), "mini-sup weights", exc,
                         _rebuild_hint("mini-sup")) from None
    index = [CLASS_NAMES.index(c) for c in suite.class_names]
    return Pretrained("mini-sup", TimmClassifier(vit, index), normalizer((0.5,) * 3, (0.5,) * 3), digest, False,
                      info=meta)


# ------------------------------------------------------------------ pretraining

def _lr_at(step, recipe):
    if step < recipe["warmup"]:
        return recipe["lr"] * (step + 1) / recipe["warmup"]
    progress = (step - recipe["warmup"]) / max(recipe["steps"] - recipe["warmup"], 1)
    return recipe["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(name: str, out: Path | None = None, threads: int | None = None, steps: int | None = None,
             log=print) -> Path:
    """Pretrain a mini preset on the rib-mini corpus and write safetensors + a JSON card."""
    from safetensors.torch import save_file

    from ribench.suites import rib_mini

    if name not in RECIPES:
        raise RibenchError(f"'{name}' is not an embedded pretrain; choose one of {', '.join(RECIPES)}")
    recipe = dict(RECIPES[name], **({"steps": steps} if steps else {}))
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe["seed"])
    rng = np.random.default_rng(recipe["seed"])
    suite = rib_mini.build()
    images, labels, captions = suite.corpus()
    labels_t = torch.from_numpy(labels)

    if name == "mini-clip":
        tokenizer = CompactTokenizer.for_texts(_clip_texts(), CLIP_CONFIG["text_cfg"]["context_length"])
        unique, inverse = np.unique(np.array(captions), return_inverse=True)
        caption_tokens = tokenizer(list(unique))[torch.from_numpy(inverse)]
        model = new_clip(tokenizer)
        preprocess = normalizer(CLIP_MEAN, CLIP_STD)
        meta = {"known_ids": json.dumps(tokenizer.known_ids)}
    else:
        model = new_vit(len(rib_mini.R.CLASS_NAMES))
        preprocess = normalizer((0.5,) * 3, (0.5,) * 3)
        meta = {}
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe["lr"])
    model.train()
    order, pos, start = rng.permutation(len(labels)), 0, time.time()
    for step in range(recipe["steps"]):
        if pos + recipe["batch_size"] > len(order):
            order, pos = rng.permutation(len(labels)), 0
        idx = torch.from_numpy(order[pos:pos + recipe["batch_size"]])
        pos += recipe["batch_size"]
        x = preprocess(torch.from_numpy(images[idx.numpy()]))
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        if name == "mini-clip":
            outputs = model(x, caption_tokens[idx])
            logits = outputs["logit_scale"] * outputs["image_features"] @ outputs["text_features"].T
            # Symmetric InfoNCE; identical captions in a batch count as positives.
            same = (caption_tokens[idx][:, None, :] == caption_tokens[idx][None, :, :]).all(-1).float()
            target = same / same.sum(1, keepdim=True)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        else:
            loss = F.cross_entropy(model(x), labels_t[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if name == "mini-clip":
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == recipe["steps"] - 1:
            log(f"{name} step {step}/{recipe['steps']} loss {loss.item():.3f} ({time.time() - start:.0f}s)")
        if (step + 1) % 500 == 0 or step == recipe["steps"] - 1:
            log(f"{name} step {step + 1}: photo test accuracy {_monitor(model, name, suite, preprocess):.3f}")
            model.train()
    model.eval()
    out = Path(out) if out else weights_file(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta["recipe"] = json.dumps(recipe)
    save_file(state, str(out), metadata=meta)
    return out


@torch.no_grad()
def _monitor(model, name, suite, preprocess):
    """Accuracy on the pretraining-domain test split while pretraining (zero-shot for CLIP)."""
    model.eval()
    split = suite.test_split(suite.pretrain_eval)
    x = preprocess(torch.from_numpy(split.images))
    if name == "mini-clip":
        tokenizer = CompactTokenizer.for_texts(_clip_texts(), CLIP_CONFIG["text_cfg"]["context_length"])
        heads = [F.normalize(F.normalize(model.encode_text(tokenizer([t.format(c) for t in suite.templates])), dim=-1)
                             .mean(0), dim=-1) for c in suite.class_names]
        logits = F.normalize(model.encode_image(x), dim=-1) @ torch.stack(heads).T
    else:
        logits = model(x)
    return float((logits.argmax(1).numpy() == split.labels).mean())


def describe(name: str, suite, weights: Path | None = None, device: str = "cpu") -> dict:
    """Accuracy of a mini preset on every test split of rib-mini (its model card)."""
    from ribench.engine.evaluate import evaluate_all

    builder = build_mini_clip if name == "mini-clip" else build_mini_sup
    pre = builder(suite, weights)
    recipe = json.loads(pre.info["recipe"]) if "recipe" in pre.info else RECIPES[name]   # as trained
    accuracies, _ = evaluate_all(pre.model, pre.preprocess, suite, device=device)
    return {"pretrain": name, "sha256": pre.weights_sha256, "recipe": recipe,
            "config": CLIP_CONFIG if name == "mini-clip" else VIT_CONFIG,
            "parameters": sum(p.numel() for p in pre.model.parameters()),
            "test_accuracy": accuracies}
