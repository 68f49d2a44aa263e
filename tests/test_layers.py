"""One block vocabulary for timm and open_clip ViTs (ribench.toolkit.layers)."""

import pytest

from ribench.toolkit.layers import block_of, blocks, cohorts, image_parameters, transformer_blocks
from ribench.run.cell import load_pretrained
from ribench.run.spec import resolve


@pytest.mark.parametrize("pretrain, stem, post", [
    ("mini-clip", {"clip.visual.class_embedding", "clip.visual.positional_embedding", "clip.visual.conv1.weight",
                   "clip.visual.ln_pre.weight", "clip.visual.ln_pre.bias"},
     {"clip.visual.proj", "clip.visual.ln_post.weight", "clip.visual.ln_post.bias"}),
    ("mini-sup", {"vit.cls_token", "vit.pos_embed", "vit.patch_embed.proj.weight", "vit.patch_embed.proj.bias"},
     {"vit.norm.weight", "vit.norm.bias"}),
])
def test_blocks_cover_the_image_classifier_input_to_output(tiny_suite, pretrain, stem, post):
    model = load_pretrained(resolve("ft", "rib-tiny", pretrain, datasets=["sketch"])).model
    grouped = blocks(model)
    depth = len(transformer_blocks(model))
    assert list(grouped) == ["stem"] + [f"block.{i}" for i in range(depth)] + ["post", "head"]
    assert set(grouped["stem"]) == stem and set(grouped["post"]) == post
    names = [n for group in grouped.values() for n in group]
    assert sorted(names) == sorted(image_parameters(model)) and len(names) == len(set(names))
    assert not any(n.startswith(("clip.transformer", "clip.token_embedding")) for n in names)   # no text tower
    for i in range(depth):
        module_names = {f"{n}" for n, _ in transformer_blocks(model)[f"block.{i}"].named_parameters()}
        assert len(grouped[f"block.{i}"]) == len(module_names)
    assert len(cohorts(model, "layer")) == len(names) and list(cohorts(model, "global")) == ["all"]
    with pytest.raises(ValueError, match="unknown cohort"):
        cohorts(model, "neuron")


def test_block_of_reads_names():
    assert block_of("vit.blocks.11.attn.qkv.weight") == "block.11"
    assert block_of("clip.visual.transformer.resblocks.2.mlp.c_fc.bias") == "block.2"
    assert block_of("head.bias") == "head"
    assert block_of("clip.visual.proj", "clip.visual.") == "post"
    assert block_of("vit.patch_embed.proj.weight", "vit.") == "stem"


@pytest.mark.parametrize("pretrain, embedding, paired, alone", [
    ("mini-clip", {"clip.visual.class_embedding", "clip.visual.positional_embedding", "clip.visual.conv1.weight"},
     {"clip.visual.transformer.resblocks.0.attn.in_proj": ["in_proj_weight", "in_proj_bias"],
      "clip.visual.transformer.resblocks.0.attn.out_proj": ["weight", "bias"],
      "clip.visual.ln_pre": ["weight", "bias"]},
     {"clip.visual.proj", "head"}),
    ("mini-sup", {"vit.cls_token", "vit.pos_embed", "vit.patch_embed.proj.weight", "vit.patch_embed.proj.bias"},
     {"vit.blocks.0.attn.qkv": ["weight", "bias"], "vit.blocks.0.norm1": ["weight", "bias"],
      "vit.norm": ["weight", "bias"], "head": ["weight", "bias"]},
     set()),
])
def test_modules_are_the_functions_of_the_network_with_all_their_tensors(tiny_suite, pretrain, embedding, paired, alone):
    model = load_pretrained(resolve("ft", "rib-tiny", pretrain, datasets=["sketch"])).model
    grouped = cohorts(model, "module")
    names = [n for group in grouped.values() for n in group]
    assert sorted(names) == sorted(image_parameters(model)) and len(names) == len(set(names))
    prefix = pretrain == "mini-clip" and "clip.visual." or "vit."
    assert set(grouped[prefix + "embedding"]) == embedding                 # ViT Eq. 1: [x_class; x_p E] + E_pos
    for module, tensors in paired.items():
        assert grouped[module] == [f"{module.rpartition('.')[0]}.{t}" if "_" in t else f"{module}.{t}" for t in tensors]
    for module in alone:
        assert len(grouped[module]) == 1
    in_block = [m for m in grouped if block_of(grouped[m][0], prefix) == "block.0"]
    assert len(in_block) == 6                  # norm, attention in and out, norm, MLP in and out
