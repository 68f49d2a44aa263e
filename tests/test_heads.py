"""The classifier heads: CLIP's zero-shot head as s·Û (fixed s, trainable Û), timm's plain head.

The "old" head below is CLIP's zero-shot matrix W = s·Û stored as the trained weight
(a LogitScaledHead with scale 1 and weight s·Û is exactly that linear map), so every
comparison runs both parameterisations through the same code.
"""

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ribench.engine.trainer import position_labels
from ribench.pretrains.base import LogitScaledHead
from ribench.run.spec import fit_context, resolve
from ribench.toolkit.weights import changed_tensors

from helpers import fit_method, state

ONE_EPOCH_SGD = ["epochs=1"]          # rib-tiny's protocol: SGD, momentum 0.9, lr 1e-2


def _old_head(pretrained):
    """The same pretrain with its head stored as W = s·Û (the parameterisation before this one)."""
    model = copy.deepcopy(pretrained.model)
    with torch.no_grad():
        model.head.weight.mul_(model.head.scale)
        model.head.scale.fill_(1.0)
    return dataclasses.replace(pretrained, model=model)


def _train_features(pretrained, dataset="sketch"):
    spec = resolve("lp", "rib-tiny", pretrained.name, datasets=[dataset], seeds=[0])
    ctx = fit_context(spec, pretrained, dataset, 0)
    split = ctx.train
    feats = torch.from_numpy(ctx.train_features())
    return feats, torch.from_numpy(position_labels(split.labels, split.class_mask)), torch.as_tensor(split.class_mask)


def _loss(head, feats, targets, mask):
    with torch.no_grad():
        return F.cross_entropy(head(feats)[:, mask], targets).item()


def _relative_change(after, before):
    return ((after - before).norm() / before.norm()).item()


def test_zero_shot_logits_are_clip_s_scaled_cosines(clip, tiny_suite):
    model = clip.model.eval()
    rows = []
    with torch.no_grad():
        for name in model.class_names:        # CLIP's zero-shot classifier, written out
            tokens = model.tokenizer([t.format(name) for t in model.templates])
            rows.append(F.normalize(F.normalize(model.clip.encode_text(tokens), dim=-1).mean(0), dim=-1))
        W = model.clip.logit_scale.exp() * torch.stack(rows)
        x = clip.preprocess(torch.from_numpy(tiny_suite.train_split("sketch").images[:32]))
        expected = model.features(x) @ W.T
        logits = model(x)
    assert (logits - expected).abs().max() <= 1e-6 * expected.abs().max()
    assert torch.allclose(model.logit_weight(), W, rtol=1e-6, atol=0)
    old = _old_head(clip).model.eval()
    with torch.no_grad():
        assert (old(x) - logits).abs().max() <= 1e-6 * logits.abs().max()


def test_clip_head_is_unit_directions_times_a_fixed_scale(clip, sup):
    head = clip.model.head
    assert isinstance(head, LogitScaledHead)
    assert [n for n, _ in head.named_parameters()] == ["weight"]           # Û: the one trained tensor
    assert "head.scale" in clip.model.state_dict()                          # s: stored, never trained
    norms = head.weight.detach().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert head.scale.item() == clip.model.clip.logit_scale.exp().item() > 10
    assert clip.model.head_parameterisation == "logit-scaled"
    # timm heads are the pretrained classifier as it was trained: plain, rows of norm ~1 already
    assert type(sup.model.head) is nn.Linear and sup.model.head_parameterisation == "plain"
    assert 0.3 < sup.model.head.weight.detach().norm(dim=1).mean().item() < 3


def test_lp_moves_the_clip_head_and_lowers_the_loss_under_sgd(clip):
    feats, targets, mask = _train_features(clip)
    before = state(clip.model)
    model, _, _ = fit_method(clip, "lp", overrides=ONE_EPOCH_SGD)
    moved = _relative_change(model.head.weight.detach(), clip.model.head.weight)
    assert moved > 0.02                                                     # 0.074 measured
    assert _loss(model.head, feats, targets, mask) < _loss(clip.model.head, feats, targets, mask) - 0.2
    # the frozen weights, the scale s among them, stay bit-identical
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == ["head.weight"]
    # the same steps on the head stored as s·Û: what the stored rows measured
    old = _old_head(clip)
    old_model, _, _ = fit_method(old, "lp", overrides=ONE_EPOCH_SGD)
    old_moved = _relative_change(old_model.head.weight.detach(), old.model.head.weight)
    assert old_moved < 1e-3 and moved > 50 * old_moved                       # 2.0e-4 measured
    assert _loss(old_model.head, feats, targets, mask) > _loss(old.model.head, feats, targets, mask) - 0.05


def test_lp_lbfgs_fits_the_same_probe_whatever_the_parameterisation(clip):
    feats, targets, mask = _train_features(clip)
    new, _, method = fit_method(clip, "lp", overrides=["fit=lbfgs"])
    old, _, _ = fit_method(_old_head(clip), "lp", overrides=["fit=lbfgs"])
    l2 = method.config.l2

    def objective(model):
        with torch.no_grad():
            return (F.cross_entropy(model.head(feats)[:, mask], targets)
                    + 0.5 * l2 * model.logit_weight().pow(2).sum()).item()

    assert abs(objective(new) - objective(old)) < 1e-5 * objective(old)
    assert _relative_change(new.logit_weight().detach(), old.logit_weight().detach()) < 1e-3   # 8e-5 measured
    assert list(changed_tensors(new, clip.model)) == ["head.weight"]     # lpft's ingredient: Û alone


def test_timm_head_trains_under_sgd_as_it_is(sup):
    feats, targets, mask = _train_features(sup)
    model, _, _ = fit_method(sup, "lp", overrides=ONE_EPOCH_SGD)
    assert _relative_change(model.head.weight.detach(), sup.model.head.weight) > 0.01   # 0.037 measured
    assert _loss(model.head, feats, targets, mask) < _loss(sup.model.head, feats, targets, mask)


def test_wiseft_endpoints_are_the_pretrained_model_and_ft(clip):
    ft, _, _ = fit_method(clip, "ft", overrides=["epochs=1"])
    ingredient = changed_tensors(ft, clip.model)
    assert "head.weight" in ingredient and "head.scale" not in ingredient
    zero, _, _ = fit_method(clip, "wiseft[alpha=0]", ingredients={"ft": ingredient})
    one, _, _ = fit_method(clip, "wiseft[alpha=1]", ingredients={"ft": ingredient})
    theta0, theta_ft, at0, at1 = clip.model.state_dict(), ft.state_dict(), zero.state_dict(), one.state_dict()
    assert all(torch.equal(at0[k], theta0[k]) for k in theta0)
    assert all(torch.equal(at1[k], theta_ft[k]) for k in theta_ft)
    assert at1["head.scale"] == theta0["head.scale"]


def test_the_rebuilt_zero_shot_head_follows_the_logit_scale(clip):
    model = copy.deepcopy(clip.model)
    directions = model.head.weight.detach().clone()
    with torch.no_grad():
        model.clip.logit_scale.fill_(float(np.log(5.0)))
    model.set_zeroshot_head()                       # what flyp does after training both towers
    torch.testing.assert_close(model.head.scale, torch.tensor(5.0))
    torch.testing.assert_close(model.head.weight.detach(), directions)
    # an override that returns s·Û (real presets cache the zero-shot matrix) gives the same Û
    model.zeroshot_weights = lambda: 7.0 * directions
    model.set_zeroshot_head()
    torch.testing.assert_close(model.head.weight.detach(), directions)
