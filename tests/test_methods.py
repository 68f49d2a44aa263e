"""The ImageNet-RIB method suite: invariants from METHODS.md and which weights each method moves."""

import copy
import math

import numpy as np

import pytest
import torch

from ribench.engine.compose import method_class
from ribench.engine.context import Batch

from ribench.engine.settings import parse_spec
from ribench.errors import ConfigError, RibenchError
from ribench.methods.ewc import EWC
from ribench.methods.ewc_rib import EWCRib
from ribench.methods.flyp import FLYP, contrastive_loss
from ribench.run.runner import execute
from ribench.run.spec import fit_context, resolve
from ribench.store import Store
from ribench.toolkit.gradients import per_sample_gradient_means
from ribench.toolkit.weights import changed_tensors

from helpers import changed_keys, closed_form_and_autograd, fit_method, state


@pytest.fixture(scope="module")
def ft_clip(clip):
    model, _, _ = fit_method(clip, "ft")
    return state(model)


def _quiet(_):
    pass


# ---- names, combinations, settings -------------------------------------------------------

def test_combination_names_are_canonical():
    assert method_class("ft+lwf") is method_class("lwf")
    assert method_class("ft+lwf+l2sp").name == "l2sp+lwf"
    assert method_class("lwf+l2sp") is method_class("ft+l2sp+lwf")
    assert method_class("flyp+l2sp").name == "flyp+l2sp"
    assert method_class("wise-ft").name == "wiseft"
    assert parse_spec("lp[fit=lbfgs, l2=0.1]") == ("lp", {"fit": "lbfgs", "l2": "0.1"})


@pytest.mark.parametrize("name, message", [
    ("lp+lwf", "does not train through the loop"),
    ("wiseft+l2sp", "does not train through the loop"),
    ("lwf+ft", "not a regularizer"),
    ("ft+lfw", "did you mean 'lwf'"),
    ("ft+", "empty part"),
])
def test_bad_combinations_are_one_line_errors(name, message):
    with pytest.raises(RibenchError, match=message):
        resolve(name, "rib-tiny", "mini-clip")


def test_combination_settings_route_by_part(tiny_suite):
    spec = resolve("flyp+l2sp+lwf", "rib-tiny", "mini-clip", overrides=["alpha=0.5", "l2sp.lam=2", "epochs=1"])
    assert spec.label == "flyp+l2sp+lwf[epochs=1,l2sp.lam=2.0,lwf.alpha=0.5]"    # the protocol change too
    assert spec.protocol.epochs == 1
    with pytest.raises(ConfigError, match="ambiguous.*ewc.lam or l2sp.lam"):
        resolve("l2sp+ewc", "rib-tiny", "mini-clip", overrides=["lam=1"])
    with pytest.raises(ConfigError, match="unknown part 'ewc'"):
        resolve("ft+lwf+l2sp", "rib-tiny", "mini-clip", overrides=["ewc.lam=1"])
    inline = resolve("lwf[T=4]", "rib-tiny", "mini-clip")
    assert inline.label == "lwf[T=4.0]" and inline.method_config.T == 4.0


def test_flyp_refuses_a_pretrain_without_text_tower_before_any_work(tiny_suite):
    with pytest.raises(ConfigError, match="needs a text tower; pretrain 'mini-sup' has none"):
        resolve("flyp", "rib-tiny", "mini-sup")
    with pytest.raises(ConfigError, match="text tower"):
        resolve("flyp+lwf", "rib-tiny", "mini-sup")
    with pytest.raises(ConfigError, match="needs 'flyp'"):
        resolve("wiseft", "rib-tiny", "mini-sup", overrides=["base=flyp"])


# ---- invariants: penalties at zero strength are ft --------------------------------------

@pytest.mark.parametrize("method", ["l2sp[lam=0]", "ewc[lam=0]", "ewc-rib[lam=0]", "lwf[alpha=0]",
                                    "l2sp+lwf[lam=0,alpha=0]"])
def test_zero_strength_penalties_give_ft_weights(clip, ft_clip, method):
    model, _, _ = fit_method(clip, method)
    after = model.state_dict()
    assert all(torch.equal(ft_clip[k], after[k]) for k in ft_clip)


@pytest.mark.parametrize("method", ["l2sp[lam=1]", "ewc[lam=10]", "ewc-rib", "lwf"])   # ewc[lam=100] diverges (NaN) here
def test_penalties_move_the_same_weights_as_ft_but_differently(clip, ft_clip, method):
    before = state(clip.model)
    model, _, _ = fit_method(clip, method)
    after = model.state_dict()
    assert changed_keys(before, after) == changed_keys(before, ft_clip)
    assert not all(torch.equal(ft_clip[k], after[k]) for k in ft_clip)


@pytest.mark.parametrize("method", ["l2sp[lam=0.3]", "ewc[lam=0.3]", "ewc[lam=0.3,normalize=none]"])
def test_penalty_gradient_matches_autograd_of_the_penalty(clip, method):
    ctx, _, _, closed, auto = closed_form_and_autograd(clip, method)
    compared = 0
    for g, a in zip(closed, auto):
        torch.testing.assert_close(g, a, rtol=1e-5, atol=1e-10)
        compared += int(g.abs().sum() > 0)
    assert compared > 10          # the backbone, not a trivial subset
    # the head carries no penalty
    assert torch.count_nonzero(ctx.model.head.weight.grad if ctx.model.head.weight.grad is not None
                               else torch.zeros(1)) == 0


def test_ewc_closed_form_is_lambda_fisher_times_displacement(clip):
    ctx, instance, params, closed, _ = closed_form_and_autograd(clip, "ewc[lam=0.3]")
    pre = dict(ctx.pretrained.named_parameters())
    fisher = instance.fisher
    names = {id(p): n for n, p in ctx.model.named_parameters()}
    (name, p, g) = next((names[id(p)], p, g) for p, g in zip(params, closed) if names[id(p)] in fisher)
    torch.testing.assert_close(g, 0.3 * fisher[name] * (p.detach() - pre[name]))
    # normalize=mean: the Fisher's mean over all backbone weights is 1
    total = sum(f.double().sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values())
    assert float(total) == pytest.approx(1.0, rel=1e-6)


def _mean_one(fisher):
    total = sum(f.double().sum() for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    return {n: f * float(count / total) for n, f in fisher.items()}


def test_ewc_fisher_is_estimated_on_the_pretraining_domain(clip):
    """F belongs to the task being protected: by default the source split's statistic, not the target's."""
    spec = resolve("ewc", "rib-tiny", "mini-clip", datasets=["sketch"])
    ctx = fit_context(spec, clip, "sketch", 0)
    assert ctx.source.dataset == spec.suite.pretrain_eval != ctx.train.dataset
    backbone = {id(p) for p in ctx.model.backbone_parameters()}
    params = {n: p for n, p in ctx.model.named_parameters() if id(p) in backbone}
    expected = {}
    for data, split in (("source", ctx.source), ("target", ctx.train)):
        raw = per_sample_gradient_means(ctx.model, params, split, ctx.preprocess, ("sq",), max_samples=16)["sq"]
        expected[data] = _mean_one(raw)
    assert EWC.Config().fisher_data == "source"
    default, target = EWC(EWC.Config(fisher_samples=16)), EWC(EWC.Config(fisher_samples=16, fisher_data="target"))
    default.prepare(ctx)
    target.prepare(ctx)
    assert set(default.fisher) == set(params)                          # the backbone, no head
    for name in params:
        torch.testing.assert_close(default.fisher[name], expected["source"][name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(target.fisher[name], expected["target"][name], rtol=1e-5, atol=1e-7)
    # the two domains weight the weights differently: far from equal, not a rounding difference
    a = torch.cat([default.fisher[n].reshape(-1) for n in params])
    b = torch.cat([target.fisher[n].reshape(-1) for n in params])
    assert float((a - b).abs().sum() / a.abs().sum()) > 0.5


def test_ewc_rib_gradient_is_lambda_displacement_on_every_weight_head_included(clip):
    """ImageNet-RIB's "EWC": Σ(θ − θ0)² unscaled (λ = 2), no Fisher; autograd of `value` = λ(θ − θ0)."""
    assert EWCRib.Config().lam == 2.0
    ctx, instance, params, closed, auto = closed_form_and_autograd(clip, "ewc-rib[lam=0.3]")
    pre = dict(ctx.pretrained.named_parameters())
    names = {id(p): n for n, p in ctx.model.named_parameters()}
    compared = 0
    for p, g, a in zip(params, closed, auto):
        torch.testing.assert_close(g, a, rtol=1e-5, atol=1e-10)
        torch.testing.assert_close(g, 0.3 * (p.detach() - pre[names[id(p)]]), rtol=1e-6, atol=0)
        compared += int(g.abs().sum() > 0)
    assert compared == len(params) > 10
    head = ctx.model.head.weight
    assert torch.count_nonzero(head.grad) == head.numel()               # the head is penalised too
    # the value is (λ/2)·Σ‖θ − θ0‖² over backbone and head
    total = sum(float((p.detach() - pre[names[id(p)]]).double().pow(2).sum()) for p in params)
    assert float(instance.value(ctx).detach()) == pytest.approx(0.15 * total, rel=1e-5)


def test_fisher_is_the_mean_of_squared_per_sample_gradients(clip, tiny_suite):
    """vmap(grad) against a plain loop over single samples, in float64 so that only the maths is compared
    (float32 roundoff differs between the batched and the single-sample pass)."""
    from ribench.engine.trainer import position_labels

    model = copy.deepcopy(clip.model).double()
    preprocess = lambda t: clip.preprocess(t).double()  # noqa: E731
    split = tiny_suite.train_split("cartoon")
    params = {n: p for n, p in model.named_parameters() if n.startswith("clip.visual.transformer.resblocks.3")}
    stats = per_sample_gradient_means(model, params, split, preprocess, ("sq", "abs", "sum"), max_samples=12)
    targets = position_labels(split.labels, split.class_mask)
    mask = torch.as_tensor(split.class_mask)
    sums = {k: {n: torch.zeros_like(p) for n, p in params.items()} for k in ("sq", "abs", "sum")}
    for i in range(12):
        model.zero_grad()
        x = preprocess(torch.from_numpy(split.images[i:i + 1]))
        loss = torch.nn.functional.cross_entropy(model(x)[:, mask], torch.tensor([targets[i]]))
        grads = torch.autograd.grad(loss, list(params.values()))
        for (n, _), g in zip(params.items(), grads):
            sums["sq"][n] += g.pow(2)
            sums["abs"][n] += g.abs()
            sums["sum"][n] += g
    for k in sums:
        for n in params:
            # atol: the key bias has an exactly-zero true gradient (softmax shift invariance)
            torch.testing.assert_close(stats[k][n], sums[k][n] / 12, rtol=1e-4, atol=1e-7)


def test_lwf_penalty_is_zero_at_the_pretrained_model_and_matches_its_formula(clip):
    _, ctx, instance = fit_method(clip, "lwf[T=3,alpha=0.7]", overrides=["epochs=1"])
    split = ctx.train
    mask = torch.as_tensor(split.class_mask)
    x = clip.preprocess(torch.from_numpy(split.images[:16]))
    at_start = instance.penalty(ctx, Batch(x, None, mask, ctx.pretrained))
    assert abs(float(at_start)) < 1e-6
    z, z0 = ctx.model(x)[:, mask], ctx.pretrained(x)[:, mask]
    p0 = torch.softmax(z0 / 3, 1)
    expected = 0.7 * (p0 * (p0.log() - torch.log_softmax(z / 3, 1))).sum(1).mean()
    torch.testing.assert_close(instance.penalty(ctx, Batch(x, None, mask, ctx.model)), expected)


# ---- which weights each method moves ---------------------------------------------------------

def test_vpt_trains_only_the_prompt(clip, sup):
    for pretrained in (clip, sup):
        before = state(pretrained.model)
        model, _, method = fit_method(pretrained, "vpt")
        assert method.pad == 4                      # 30 px at 224 -> 4 px at 32
        inner = model.classifier.state_dict()
        assert changed_keys(before, inner) == []    # frozen weights bit-identical
        prompt = model.prompter
        start = torch.Generator().manual_seed(0)
        assert not torch.equal(prompt.pad_up, torch.randn(prompt.pad_up.shape, generator=start))
        x = torch.zeros(1, 3, 32, 32)
        border = prompt(x)[0]
        assert torch.count_nonzero(border[:, 4:28, 4:28]) == 0 and torch.count_nonzero(border[:, :4]) > 0


@pytest.mark.parametrize("which", ["clip", "sup"])
def test_lora_updates_only_the_q_and_v_thirds_then_merges(which, clip, sup):
    pretrained = {"clip": clip, "sup": sup}[which]
    before = state(pretrained.model)
    unmerged, _, method = fit_method(pretrained, "lora", finish=False)
    # before merging: every pretrained weight is bit-identical, adapters trained
    targets, adapters = method.targets, method.adapters
    originals = {k: v for k, v in unmerged.state_dict().items() if k.endswith(".original")}
    assert len(originals) == len(targets) == 4
    for key, value in originals.items():
        plain = key.replace("parametrizations.", "").replace(".original", "")
        assert torch.equal(value, before[plain])
    assert all(a.B_q.abs().sum() > 0 and a.B_v.abs().sum() > 0 for a in adapters)
    # merged: a plain model with the usual names; only the q and v thirds moved
    model, _, _ = fit_method(pretrained, "lora")
    after = model.state_dict()
    assert set(after) == set(before)
    changed = changed_keys(before, after)
    suffix = "attn.in_proj_weight" if which == "clip" else "attn.qkv.weight"
    assert len(changed) == 4 and all(k.endswith(suffix) for k in changed)
    for key in changed:
        d = before[key].shape[1]
        q, k, v = (after[key] - before[key]).split(d, dim=0)
        assert q.abs().sum() > 0 and v.abs().sum() > 0 and torch.count_nonzero(k) == 0


def test_lora_at_start_is_the_pretrained_model(clip, tiny_suite):
    model, _, method = fit_method(clip, "lora", overrides=["lr=1e-12", "epochs=1"], finish=False)
    x = clip.preprocess(torch.from_numpy(tiny_suite.train_split("sketch").images[:8]))
    for adapter in method.adapters:
        torch.nn.init.zeros_(adapter.B_q), torch.nn.init.zeros_(adapter.B_v)
    with torch.no_grad():
        torch.testing.assert_close(model(x), clip.model(x))


def test_flyp_trains_both_towers_and_rebuilds_the_head(clip):
    before = state(clip.model)
    model, _, _ = fit_method(clip, "flyp")
    after = model.state_dict()
    changed = changed_keys(before, after)
    assert "head.weight" in changed
    assert any(k.startswith("clip.visual.") for k in changed)
    assert any(k.startswith("clip.transformer.") for k in changed)        # the text tower
    torch.testing.assert_close(model.head.weight, model.zeroshot_weights())


def test_flyp_loss_with_distinct_captions_is_the_clip_loss():

    gen = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(6, 6, generator=gen)
    captions = torch.arange(6 * 4).view(6, 4)                  # six different token rows
    target = torch.arange(6)
    clip_loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                       + torch.nn.functional.cross_entropy(logits.T, target))
    torch.testing.assert_close(contrastive_loss(logits, captions), clip_loss, rtol=1e-6, atol=0)


def test_flyp_loss_treats_identical_captions_as_positives_by_hand():
    """Rows 0 and 2 share a caption: each row's target is uniform over the equal-caption columns."""

    s = [[2.0, 0.5, 1.0, -1.0],
         [0.0, 3.0, -0.5, 0.5],
         [1.5, -1.0, 2.5, 0.0],
         [0.2, 0.1, -0.3, 1.0]]
    a, b, c = [7, 1, 1], [7, 2, 1], [8, 1, 1]
    captions = torch.tensor([a, b, a, c])
    positives = [[0, 2], [1], [0, 2], [3]]                      # columns equal to each row's caption

    def soft_ce(rows):
        total = 0.0
        for i, row in enumerate(rows):
            log_z = math.log(sum(math.exp(x) for x in row))
            total += -sum((row[j] - log_z) / len(positives[i]) for j in positives[i])
        return total / len(rows)

    columns = [list(col) for col in zip(*s)]                   # sᵀ: text → image
    expected = 0.5 * (soft_ce(s) + soft_ce(columns))
    got = contrastive_loss(torch.tensor(s, dtype=torch.float64), captions)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    diagonal = 0.5 * (torch.nn.functional.cross_entropy(torch.tensor(s), torch.arange(4))
                      + torch.nn.functional.cross_entropy(torch.tensor(s).T, torch.arange(4)))
    assert abs(float(got) - float(diagonal)) > 0.05             # not CLIP's diagonal targets


def test_flyp_compute_loss_uses_soft_targets_on_a_real_batch(clip):
    """FLYP's loss on the tiny CLIP: two pairs with the very same caption share their target mass."""
    spec = resolve("flyp", "rib-tiny", "mini-clip", datasets=["sketch"])
    ctx = fit_context(spec, clip, "sketch", 0)
    method = FLYP()
    method.prepare(ctx)

    class Fixed:                                               # the templates each image's caption uses
        def integers(self, high, size):
            return np.array([0, 0, 1, 0])[:size]

    method.caption_rng = Fixed()
    labels = torch.tensor([3, 3, 3, 5])                        # rows 0 and 1: class 3, template 0
    x = ctx.preprocess(torch.from_numpy(ctx.train.images[:4]))
    mask = torch.as_tensor(ctx.train.class_mask)
    loss = method.compute_loss(ctx, Batch(x, labels, mask, ctx.model))
    with torch.no_grad():
        m = ctx.model.clip
        tokens = method.tokens[labels, torch.tensor([0, 0, 1, 0])]
        s = m.logit_scale.exp() * (torch.nn.functional.normalize(m.encode_image(x), dim=-1)
                                   @ torch.nn.functional.normalize(m.encode_text(tokens), dim=-1).T)
        s = s.double()
    target = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=torch.float64)
    by_hand = 0.5 * (-(target * s.log_softmax(1)).sum(1).mean() - (target * s.T.log_softmax(1)).sum(1).mean())
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_lpft_starts_from_the_stored_probe(clip):
    probe, _, _ = fit_method(clip, "lp[fit=lbfgs]")
    ingredient = changed_tensors(probe, clip.model)
    assert list(ingredient) == ["head.weight"]
    start, _, _ = fit_method(clip, "lpft", overrides=["lr=1e-12", "epochs=1"],
                             ingredients={"lp[fit=lbfgs]": ingredient})
    torch.testing.assert_close(start.head.weight, probe.head.weight, rtol=0, atol=1e-8)
    model, _, _ = fit_method(clip, "lpft", ingredients={"lp[fit=lbfgs]": ingredient})
    changed = changed_keys(state(clip.model), model.state_dict())
    assert "head.weight" in changed and any(k.startswith("clip.visual.") for k in changed)
    assert not any(k.startswith("clip.transformer.") for k in changed)


# ---- derived methods -------------------------------------------------------------------------

def test_wiseft_endpoints_and_midpoint(clip, ft_clip):
    ingredient = {k: v for k, v in ft_clip.items() if not torch.equal(v, clip.model.state_dict()[k])}
    theta0 = state(clip.model)
    zero, _, _ = fit_method(clip, "wiseft[alpha=0]", ingredients={"ft": ingredient})
    one, _, _ = fit_method(clip, "wiseft[alpha=1]", ingredients={"ft": ingredient})
    half, _, _ = fit_method(clip, "wiseft", ingredients={"ft": ingredient})
    assert all(torch.equal(zero.state_dict()[k], theta0[k]) for k in theta0)
    assert all(torch.equal(one.state_dict()[k], ft_clip[k]) for k in ft_clip)
    for k in ingredient:
        torch.testing.assert_close(half.state_dict()[k], 0.5 * theta0[k] + 0.5 * ft_clip[k])


def test_soup_of_one_is_that_ingredient_and_of_many_is_the_mean(clip, ft_clip):
    ft = {k: v for k, v in ft_clip.items() if not torch.equal(v, clip.model.state_dict()[k])}
    lwf_model, _, _ = fit_method(clip, "lwf")
    lwf = changed_tensors(lwf_model, clip.model)
    one, _, _ = fit_method(clip, "soup[ingredients=ft]", ingredients={"ft": ft})
    assert all(torch.equal(one.state_dict()[k], ft_clip[k]) for k in ft_clip)
    three, _, _ = fit_method(clip, "soup[ingredients=pretrained,ft,lwf]", ingredients={"ft": ft, "lwf": lwf})
    theta0 = clip.model.state_dict()
    key = "clip.visual.conv1.weight"
    torch.testing.assert_close(three.state_dict()[key], (theta0[key] + ft_clip[key] + lwf[key]) / 3)


def test_derived_methods_train_nothing_when_ingredients_are_stored(tmp_path, clip):
    store = Store(tmp_path / "d.sqlite")
    run = dict(datasets=["sketch", "cartoon"], seeds=[0])
    ft = execute(resolve("ft", "rib-tiny", "mini-clip", **run), store, clip, progress=False, log=_quiet)
    assert ft["ran"] == 2 and len(list(store.weights_dir.glob("*.safetensors"))) == 2
    messages = []
    for alpha in ("0", "1", "0.5"):
        out = execute(resolve("wiseft", "rib-tiny", "mini-clip", overrides=[f"alpha={alpha}"], **run),
                      store, clip, progress=False, log=messages.append)
        assert out["ran"] == 2
    assert all("ft cells already in the store" in m for m in messages if "ft" in m)
    cells = {(c.label, c.dataset): c for c in store.cells()}
    assert len(cells) == 8                                      # 2 ft + 3 x 2 wiseft, no ft re-run
    for d in run["datasets"]:
        assert cells[("wiseft[alpha=1.0]", d)].accuracies == cells[("ft", d)].accuracies
        assert cells[("wiseft[alpha=0.0]", d)].accuracies == ft["pretrained"]
        assert cells[("wiseft", d)].timings["steps"] == 0


def test_soup_runs_its_missing_ingredients_first_once(tmp_path, clip):
    store = Store(tmp_path / "s.sqlite")
    run = dict(datasets=["sketch"], seeds=[1])
    execute(resolve("soup", "rib-tiny", "mini-clip", **run), store, clip, progress=False, log=_quiet)
    labels = sorted(c.label for c in store.cells())
    assert labels == ["ewc", "ft", "lwf", "soup"]
    n_weights = len(list(store.weights_dir.glob("*.safetensors")))
    assert n_weights == 3
    again = execute(resolve("soup[ingredients=ft,lwf]", "rib-tiny", "mini-clip", **run), store, clip,
                    progress=False, log=_quiet)
    assert again["ran"] == 1 and len(list(store.cells())) == 5


def test_stored_cells_without_weights_are_trained_again_not_overwritten(tmp_path, clip):
    """A store without weights (from before weights were kept, or restored from the archive): the ft cells
    are re-trained for their weights when a derived cell needs them, and only then."""
    store = Store(tmp_path / "w.sqlite")
    run = dict(datasets=["sketch"], seeds=[0])
    spec = resolve("ft", "rib-tiny", "mini-clip", **run)
    execute(spec, store, clip, progress=False, log=_quiet, keep_weights=False)
    (before,) = store.cells()
    assert not store.has_weights(before.key)
    again = execute(spec, store, clip, progress=False, log=_quiet)    # ft itself: stored, nothing to refit
    assert again["ran"] == 0 and not store.has_weights(before.key)
    messages = []
    execute(resolve("wiseft", "rib-tiny", "mini-clip", **run), store, clip, progress=False, log=messages.append)
    assert store.has_weights(before.key)
    assert any("no saved weights" in m for m in messages)
    assert store.get(before.key).created_at == before.created_at    # the record itself is untouched


def test_no_method_can_reach_a_test_split(clip, tiny_suite, monkeypatch):
    """Every method's fit runs with test splits made unreachable."""
    from ribench.catalog import SUITES

    def refuse(self, name):
        raise AssertionError(f"test split {name} read during training")

    suite_cls = type(SUITES.get("rib-tiny")())
    monkeypatch.setattr(suite_cls, "test_split", refuse)
    ft = changed_tensors(fit_method(clip, "ft")[0], clip.model)
    probe = changed_tensors(fit_method(clip, "lp[fit=lbfgs]")[0], clip.model)
    ingredients = {"ft": ft, "ewc": ft, "lwf": ft, "lp[fit=lbfgs]": probe}
    for method in ("zeroshot", "lp", "vpt", "lora", "l2sp", "ewc", "ewc-rib", "lwf", "lpft", "wiseft", "soup",
                   "flyp"):
        fit_method(clip, method, overrides=["epochs=1"], ingredients=ingredients)
