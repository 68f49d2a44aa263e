"""lora and vpt train under their papers' recipes; the frozen weights stay θ0.

Each test trains one tiny cell under the method's recipe (its optimizer, lr and
weight decay over rib-tiny's epochs, batch and schedule) and asserts how far the
trained tensors moved and that the training loss fell, next to the setting whose
rows did not train (ImageNet-RIB's α = 1 and SGD at the suite's lr).
"""

import torch
import torch.nn.functional as F

from ribench.engine.trainer import position_labels
from ribench.methods.lora import LoRA
from ribench.methods.vpt import VisualPrompt

from helpers import changed_keys, fit_method, state


def _recipe(method_cls, *extra):
    r = method_cls.recipe
    return [f"optimizer={r.optimizer}", f"lr={r.lr}", f"weight_decay={r.weight_decay}",
            f"momentum={r.momentum}", *extra]


def _train_loss(model, pretrained, split):
    x = pretrained.preprocess(torch.from_numpy(split.images))
    y = torch.from_numpy(position_labels(split.labels, split.class_mask))
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x)[:, torch.as_tensor(split.class_mask)], y).item()


def _qkv_thirds_moved(before, after):
    """(min over blocks of the q third's relative change, the same for v, max for k) of merged fused weights."""
    q, k, v = [], [], []
    for name in changed_keys(before, after):
        d = after[name].shape[1]
        rel = [((after[name][i * d:(i + 1) * d] - before[name][i * d:(i + 1) * d]).norm()
                / before[name][i * d:(i + 1) * d].norm()).item() for i in range(3)]
        q.append(rel[0]), k.append(rel[1]), v.append(rel[2])
    return min(q), min(v), max(k)


# ---- lora -------------------------------------------------------------------------------------

def test_lora_recipe_is_the_authors():
    assert LoRA.recipe.optimizer == "adamw" and LoRA.recipe.lr == 5e-4
    config = LoRA.Config()
    assert (config.rank, config.alpha, config.also_train) == (8, 16.0, "none")


def test_lora_under_its_recipe_moves_q_and_v_and_lowers_the_loss(clip, sup, tiny_suite):
    split = tiny_suite.train_split("sketch")
    for pre, fused in ((clip, "attn.in_proj_weight"), (sup, "attn.qkv.weight")):
        before = state(pre.model)
        model, _, _ = fit_method(pre, "lora", overrides=_recipe(LoRA, "epochs=1"))
        after = model.state_dict()
        changed = changed_keys(before, after)
        assert changed and all(k.endswith(fused) for k in changed)      # merged: plain names, only q/k/v
        q, v, k = _qkv_thirds_moved(before, after)
        assert q > 1e-3 and v > 1e-3                                    # 3.6e-3 / 4.6e-3 measured
        assert k == 0.0                                                 # the key third is never adapted
        assert _train_loss(model, pre, split) < _train_loss(pre.model, pre, split) - 0.02


def test_lora_at_alpha_1_under_sgd_does_not_train(clip):
    """The stored rows' setting: α = 1 (scaling 1/8) under SGD at 3e-3 leaves q and v where they were."""
    before = state(clip.model)
    model, _, _ = fit_method(clip, "lora", overrides=["alpha=1", "optimizer=sgd", "lr=3e-3", "epochs=1"])
    q, v, _ = _qkv_thirds_moved(before, model.state_dict())
    assert q < 1e-3 and v < 1e-3                                        # 4e-6 measured


def test_lora_before_merging_leaves_the_frozen_weights_bit_identical(clip):
    before = state(clip.model)
    model, _, method = fit_method(clip, "lora", overrides=_recipe(LoRA, "epochs=1"), finish=False)
    names = {id(m): n for n, m in model.named_modules()}
    for module, attr in method.targets:                                 # W under the adapter: θ0's
        original = module.parametrizations[attr].original
        assert torch.equal(original, before[f"{names[id(module)]}.{attr}"])
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k in after)
    assert any(a.B_q.abs().sum() > 0 for a in method.adapters)           # and the adapters did train


def test_lora_rib_variant_also_trains_cls_position_and_final_norm(clip, sup):
    extras = {"mini-clip": {"clip.visual.class_embedding", "clip.visual.positional_embedding",
                            "clip.visual.ln_post.weight", "clip.visual.ln_post.bias"},
              "mini-sup": {"vit.cls_token", "vit.pos_embed", "vit.norm.weight", "vit.norm.bias"}}
    for pre in (clip, sup):
        before = state(pre.model)
        model, _, _ = fit_method(pre, "lora[also_train=rib]", overrides=_recipe(LoRA, "epochs=1"))
        changed = set(changed_keys(before, model.state_dict()))
        assert changed - extras[pre.name] and changed & extras[pre.name] == extras[pre.name]
        assert all(k.endswith(("in_proj_weight", "qkv.weight")) for k in changed - extras[pre.name])


# ---- vpt --------------------------------------------------------------------------------------

def _prompt(model):
    return torch.cat([p.detach().flatten() for p in model.prompter.parameters()])


def test_vpt_recipe_is_the_authors():
    r = VisualPrompt.recipe
    assert (r.optimizer, r.lr, r.weight_decay, r.momentum) == ("sgd", 40.0, 0.0, 0.9)


def test_vpt_starts_at_the_pretrained_model(clip, tiny_suite):
    model, _, method = fit_method(clip, "vpt", overrides=["lr=1e-12", "epochs=1"])
    assert method.pad == 4                                              # 30 px at 224 → 4 px at 32
    assert _prompt(model).abs().max() < 1e-6                            # φ0 = 0 (the default init)
    with torch.no_grad():
        for p in model.prompter.parameters():
            p.zero_()
        x = clip.preprocess(torch.from_numpy(tiny_suite.train_split("sketch").images[:8]))
        assert torch.equal(model.prompter(x), x)
        assert torch.equal(model.eval()(x), clip.model.eval()(x))
    normal, _, _ = fit_method(clip, "vpt[init=normal]", overrides=["lr=1e-12", "epochs=1"])
    assert 0.9 < _prompt(normal).std().item() < 1.1                     # the authors' N(0, 1)


def test_vpt_under_its_recipe_moves_the_prompt_and_lowers_the_loss(clip, tiny_suite):
    split = tiny_suite.train_split("sketch")
    before = state(clip.model)
    model, ctx, method = fit_method(clip, "vpt", overrides=_recipe(VisualPrompt, "epochs=5"))
    x = clip.preprocess(torch.from_numpy(split.images))
    border = torch.ones_like(x[:1], dtype=torch.bool)
    border[..., method.pad:-method.pad, method.pad:-method.pad] = False
    image_rms = x[border.expand_as(x)].pow(2).mean().sqrt()
    assert _prompt(model).pow(2).mean().sqrt() > 0.1 * image_rms          # moved from φ0 = 0 (RMS 13 measured)
    assert _train_loss(model, clip, split) < _train_loss(clip.model, clip, split) - 0.1   # 3.12 → 2.85
    after = model.classifier.state_dict()                                # the model itself: θ0, bit for bit
    assert all(torch.equal(after[k], before[k]) for k in before)
    # under SGD at 1e-3 the same border stays where it started: what the stored rows measured
    still, _, _ = fit_method(clip, "vpt", overrides=["optimizer=sgd", "lr=1e-3", "epochs=1"])
    assert _prompt(still).pow(2).mean().sqrt() < 1e-3 * image_rms        # 5e-5 measured
