"""The published ViT-B/16 backbones ImageNet-RIB fine-tunes, loaded from local weight files only.

Two CLIP towers (open_clip) classify through a zero-shot head built from the
suite's class names and prompt templates; five supervised timm ViTs keep their
ImageNet-1K classifier head. Nothing is downloaded: a weight file comes from
`--weights PATH` (a file or a folder holding it), `$RIBENCH_WEIGHTS/<preset>/`,
or the local Hugging Face cache, read offline. A missing file is one line that
names the file and where it is published.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ribench.errors import ConfigError, MissingWeightsError
from ribench.data.images import ImageGeometry
from ribench.cachefile import load_arrays, save_arrays
from ribench.paths import cache_dir
from ribench.pretrains.base import (ClipClassifier, Pretrained, TimmClassifier, normalizer, sha256_file,
                                   unloadable)
from ribench.pretrains.presets import PretrainPreset, weights_dir

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class WeightSource:
    """The file a preset needs and the Hugging Face repository that publishes it."""

    filename: str
    hf_repo: str
    alternatives: tuple[str, ...] = ()      # same weights under another name (e.g. safetensors)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.filename,) + self.alternatives

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.hf_repo}/blob/main/{self.filename}"


def _hf_cached(source: WeightSource) -> Path | None:
    """The file in the local Hugging Face cache, looked up without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        return None
    for name in source.names:
        found = try_to_load_from_cache(source.hf_repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def find_weights(preset: str, source: WeightSource, weights=None, what: str = "", offline_hint: str = "") -> Path:
    """--weights (file or folder), then $RIBENCH_WEIGHTS/<preset>/ and $RIBENCH_WEIGHTS/, then the HF cache."""
    if weights:
        given = Path(weights).expanduser()
        if given.is_file():
            return given
        if given.is_dir():
            for name in source.names:
                if (given / name).is_file():
                    return given / name
            where = str(given / source.filename)
        else:
            where = str(given)
    else:
        root = weights_dir()
        candidates = [root / preset / n for n in source.names] + [root / n for n in source.names] if root else []
        for path in candidates:
            if path.is_file():
                return path
        cached = _hf_cached(source)
        if cached is not None:
            return cached
        where = (str(root / preset / source.filename) if root
                 else f"$RIBENCH_WEIGHTS/{preset}/{source.filename}")
    hint = f", or run offline with '--pretrain {offline_hint}'" if offline_hint else ""
    raise MissingWeightsError(
        f"pretrain '{preset}' needs {where} ({what}, published at {source.url}); pass --weights PATH, "
        f"put it under $RIBENCH_WEIGHTS/{preset}/ or in the local Hugging Face cache{hint}")


def _resizing(preprocess, size: int):
    """Normalise, then resize when a suite's images are not at the model's input size (e.g. rib-mini's 32 px)."""

    def run(images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        return x

    return run


# ---------------------------------------------------------------------------- CLIP towers


def encode_text_trimmed(clip, tokens: torch.Tensor) -> torch.Tensor:
    """`clip.encode_text(tokens)` computed on the tokens up to the longest text's end token.

    The text tower is causal and pools at the end token, so positions after it
    never reach the output: dropping them gives the same embedding at a fraction
    of the cost (prompts use ~20 of the 77 positions). Other towers fall back to
    `encode_text`.
    """
    import open_clip

    if (type(clip) is not open_clip.CLIP or getattr(clip, "text_pool_type", None) != "argmax"
            or clip.attn_mask is None):
        return clip.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    text = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(text).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
    if clip.text_projection is not None:
        x = clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Linear) else x @ clip.text_projection
    return x


class ZeroShotClip(ClipClassifier):
    """`ClipClassifier` whose first zero-shot head is computed in batches and cached on disk.

    1000 classes x 80 templates is 80 000 text-tower passes: seconds on a GPU,
    hours on one CPU core. The head built from the pretrained text tower is kept
    in the ribench cache, keyed by the weight file, architecture, class names and
    templates; later calls (e.g. FLYP's head from a fine-tuned text tower) compute afresh.
    """

    def __init__(self, clip, tokenizer, class_names, templates, head_cache: Path | None = None):
        self.__dict__["_head_cache"] = head_cache     # read by zeroshot_weights() inside ClipClassifier.__init__
        super().__init__(clip, tokenizer, class_names, templates)
        self.__dict__["_head_cache"] = None

    @torch.no_grad()
    def zeroshot_weights(self) -> torch.Tensor:
        cache = self.__dict__.get("_head_cache")
        if cache is not None:
            found = load_arrays(cache)          # its own hash: a damaged file is recomputed
            if found is not None and "head" in found:
                return torch.from_numpy(found["head"])
        weights = self._compute_head()
        if cache is not None:
            save_arrays(cache, {"head": weights.detach().float().cpu().contiguous().numpy()}, "zero-shot head cache")
        return weights

    def _compute_head(self, chunk: int = 1024) -> torch.Tensor:
        clip = self.clip
        home = next(clip.parameters()).device
        device = torch.device("cuda") if torch.cuda.is_available() else home
        clip.to(device)
        try:
            texts = [t.format(name) for name in self.class_names for t in self.templates]
            tokens = self.tokenizer(texts)
            embeddings = torch.cat([F.normalize(encode_text_trimmed(clip, tokens[s:s + chunk].to(device)).float(), dim=-1)
                                    for s in range(0, len(texts), chunk)])
            per_class = embeddings.view(len(self.class_names), len(self.templates), -1).mean(1)
            head = F.normalize(per_class, dim=-1)      # Û; the logit scale is the head's fixed buffer
        finally:
            clip.to(home)
        return head.to(home)


def _head_cache_path(preset: str, weights_sha: str, architecture: str, class_names, templates) -> Path:
    key = hashlib.sha256(json.dumps([architecture, list(class_names), list(templates)]).encode()).hexdigest()
    return cache_dir() / "zeroshot-heads" / f"{preset}-{weights_sha[:16]}-{key[:16]}.npz"


@dataclass(frozen=True)
class ClipSpec:
    """An open_clip CLIP model: config name, the tag its weights were published under, the file."""

    name: str
    architecture: str                 # open_clip config ("ViT-B-16-quickgelu" for OpenAI's QuickGELU towers)
    tag: str
    source: WeightSource
    model_kwargs: dict = field(default_factory=dict)   # config overrides (tests: a tiny tower, same code)

    @property
    def what(self) -> str:
        return f"open_clip {self.architecture.replace('-quickgelu', '')} '{self.tag}'"

    def locate(self, weights=None) -> Path:
        return find_weights(self.name, self.source, weights, self.what, "mini-clip")

    def build(self, suite, weights=None) -> Pretrained:
        path = self.locate(weights)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip

        try:
            clip = open_clip.create_model(self.architecture, pretrained=str(path), **self.model_kwargs)
        except Exception as exc:       # open_clip asserts on a checkpoint of another architecture
            raise unloadable(path, f"an open_clip {self.architecture} checkpoint (pretrain '{self.name}')", exc) from None
        clip.eval()
        tokenizer = open_clip.get_tokenizer(self.architecture, context_length=clip.context_length)
        size = clip.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
        geometry = ImageGeometry(size, 1.0, cfg.get("interpolation", "bicubic"))
        sha = sha256_file(path)
        model = ZeroShotClip(clip, tokenizer, suite.class_names, suite.templates,
                             _head_cache_path(self.name, sha, self.architecture, suite.class_names, suite.templates))
        preprocess = _resizing(normalizer(cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)), size)
        return Pretrained(self.name, model, preprocess, sha, True, info={
            "file": str(path), "architecture": self.architecture, "tag": self.tag,
            "eval_transform": geometry.as_dict(), "zero_shot_templates": len(suite.templates)})


# ---------------------------------------------------------------------------- supervised timm ViTs


@dataclass(frozen=True)
class TimmSpec:
    """A timm model with its ImageNet-1K head, from a local file through timm's own loader."""

    name: str
    model_name: str                   # timm name with the pretrained tag
    source: WeightSource
    num_classes: int = 1000
    model_kwargs: dict = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"timm {self.model_name}"

    def locate(self, weights=None) -> Path:
        return find_weights(self.name, self.source, weights, self.what, "mini-sup")

    def build(self, suite, weights=None) -> Pretrained:
        if len(suite.class_names) != self.num_classes:
            raise ConfigError(f"pretrain '{self.name}' classifies the {self.num_classes} ImageNet-1K classes; "
                              f"suite '{suite.name}' has {len(suite.class_names)} (use --suite imagenet-rib)")
        path = self.locate(weights)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import timm

        try:
            # num_classes in the overlay: without it timm re-initialises the head it was asked to load
            vit = timm.create_model(self.model_name, pretrained=True,
                                    pretrained_cfg_overlay=dict(file=str(path), num_classes=self.num_classes),
                                    **self.model_kwargs)
        except Exception as exc:
            raise unloadable(path, f"a {self.model_name} checkpoint (pretrain '{self.name}')", exc) from None
        vit.eval()
        cfg = vit.pretrained_cfg
        size = int(vit.patch_embed.img_size[0])
        geometry = ImageGeometry(size, float(cfg.get("crop_pct", 0.875)), cfg.get("interpolation", "bicubic"))
        preprocess = _resizing(normalizer(cfg["mean"], cfg["std"]), size)
        return Pretrained(self.name, TimmClassifier(vit), preprocess, sha256_file(path), False, info={
            "file": str(path), "model": self.model_name, "eval_transform": geometry.as_dict()})


def _timm_source(model_name: str) -> WeightSource:
    return WeightSource("model.safetensors", f"timm/{model_name}", ("pytorch_model.bin",))


CLIP_SPECS = {
    "laion2b": ClipSpec("laion2b", "ViT-B-16", "laion2b_s34b_b88k",
                        WeightSource("open_clip_pytorch_model.bin", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
                                     ("open_clip_model.safetensors",))),
    "openai": ClipSpec("openai", "ViT-B-16-quickgelu", "openai",
                       WeightSource("open_clip_pytorch_model.bin", "timm/vit_base_patch16_clip_224.openai",
                                    ("open_clip_model.safetensors",))),
}
TIMM_SPECS = {name: TimmSpec(name, model, _timm_source(model)) for name, model in {
    "laion2b-in1k": "vit_base_patch16_clip_224.laion2b_ft_in1k",
    "openai-in1k": "vit_base_patch16_clip_224.openai_ft_in1k",
    "in1k-augreg": "vit_base_patch16_224.augreg_in1k",
    "in21k": "vit_base_patch16_224.orig_in21k_ft_in1k",
    "in21k-augreg": "vit_base_patch16_224.augreg_in21k_ft_in1k",
}.items()}


def preset(spec) -> PretrainPreset:
    kind = "open_clip" if isinstance(spec, ClipSpec) else "timm"
    return PretrainPreset(spec.name, f"{kind} {spec.what} (local weights)", spec.build,
                          isinstance(spec, ClipSpec), False, spec.locate)


LAION2B = preset(CLIP_SPECS["laion2b"])
OPENAI = preset(CLIP_SPECS["openai"])
LAION2B_IN1K = preset(TIMM_SPECS["laion2b-in1k"])
OPENAI_IN1K = preset(TIMM_SPECS["openai-in1k"])
IN1K_AUGREG = preset(TIMM_SPECS["in1k-augreg"])
IN21K = preset(TIMM_SPECS["in21k"])
IN21K_AUGREG = preset(TIMM_SPECS["in21k-augreg"])
