"""saft, imp-select, imp-reg and the sparse optimizer state: invariants from METHODS.md, on tiny models."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from ribench.engine.compose import method_class
from ribench.data.splits import TrainSplit
from ribench.errors import ConfigError
from ribench.data.features import cached_features
from ribench.toolkit.gradients import per_sample_gradient_means
from ribench.toolkit.layers import cohorts, image_parameters
from ribench.engine.context import Batch, FitContext
from ribench.methods.ft import FineTune
from ribench.methods.imp_reg import ImportanceReg
from ribench.methods._importance import importance, normalise, prediction_entropy
from ribench.methods.saft import SAFT, mean_gradient, text_head
from ribench.run.runner import execute
from ribench.run.spec import resolve
from ribench.toolkit.sparse import SparseParameters, mask_size, optimizer_state_bytes, top_entries
from ribench.store import Store
from ribench.engine.trainer import position_labels, start_training, training_step

from helpers import closed_form_and_autograd, fit_method, state


@pytest.fixture(scope="module")
def ft_clip(clip):
    model, _, _ = fit_method(clip, "ft")
    return state(model)


def _context(pretrained, method="ft", overrides=(), dataset="sketch", seed=0):
    """(ctx at θ0, method instance) for one cell, as `helpers.fit_method` builds it, without training."""
    spec = resolve(method, "rib-tiny", pretrained.name, datasets=[dataset], seeds=[seed], overrides=overrides)
    frozen = copy.deepcopy(pretrained.model).eval().requires_grad_(False)
    split = spec.suite.train_split(dataset)
    ctx = FitContext(copy.deepcopy(pretrained.model), frozen, split, spec.suite.train_split(spec.suite.pretrain_eval),
                     pretrained.preprocess, spec.protocol, seed,
                     train_features=lambda: cached_features(pretrained, split, "train"),
                     has_text_tower=pretrained.has_text_tower, class_names=tuple(spec.suite.class_names),
                     templates=tuple(spec.suite.templates))
    return ctx, spec.method_cls(spec.method_config)


def _fit(pretrained, instance, overrides=(), seed=0):
    ctx, _ = _context(pretrained, "ft", overrides, seed=seed)
    torch.manual_seed(seed)
    instance.fit(ctx)
    return ctx


# ---- full masks and zero strength are ft -----------------------------------------------------

@pytest.mark.parametrize("method", ["saft[alpha=1,towers=image]", "imp-select[k=1.0,samples=8]",
                                    "imp-reg[lam=0,samples=8]"])
def test_full_masks_and_zero_strength_give_ft_weights_bit_for_bit(clip, ft_clip, method):
    model, ctx, _ = fit_method(clip, method)
    after = model.state_dict()
    assert all(torch.equal(ft_clip[k], after[k]) for k in ft_clip)
    if "sparse" in ctx.state:                                   # a full mask optimizes the tensors themselves
        assert not ctx.state["sparse"].sparse and ctx.state["sparse"].count() == ctx.state["sparse_total"]


# ---- which entries the sparse methods move ---------------------------------------------------

@pytest.mark.parametrize("which", ["clip", "sup"])
@pytest.mark.parametrize("method, fraction", [("saft[towers=image]", 0.001), ("imp-select[samples=16]", 0.1)])
def test_sparse_methods_change_exactly_the_masked_entries(clip, sup, which, method, fraction):
    pretrained = {"clip": clip, "sup": sup}[which]
    before = state(pretrained.model)
    model, ctx, _ = fit_method(pretrained, method, overrides=["epochs=1"])
    sparse = ctx.state["sparse"]
    params = image_parameters(model)
    total = sum(p.numel() for p in params.values())
    assert ctx.state["sparse_total"] == total
    assert sparse.count() == math.floor(total * fraction + 1e-9) == (total // 1000 if fraction == 0.001 else total // 10)
    after = model.state_dict()
    _assert_only_masked_weights_moved(before, after, params, sparse)
    others = [k for k in before if k not in params]                       # text tower, buffers
    assert all(torch.equal(after[k], before[k]) for k in others)


def _assert_only_masked_weights_moved(before, after, params, sparse):
    """Unmasked weights bit-identical to θ0, and nearly every masked weight moved."""
    moved = 0
    for name, p in params.items():
        mask = sparse.mask(name, p)
        assert torch.equal(after[name][~mask], before[name][~mask])      # unmasked: bit-identical to θ0
        moved += int((after[name][mask] != before[name][mask]).sum())
    assert moved > 0.9 * sparse.count()


def test_saft_mask_is_the_top_of_the_mean_gradient_magnitude(clip):
    ctx, instance = _context(clip, "saft[towers=image]")
    w = mean_gradient(ctx)
    instance.prepare(ctx)
    sparse = ctx.state["sparse"]
    params = image_parameters(ctx.model)
    inside = torch.cat([w[n].abs()[sparse.mask(n, p)] for n, p in params.items()])
    outside = torch.cat([w[n].abs()[~sparse.mask(n, p)] for n, p in params.items()])
    assert inside.numel() == 465 and inside.min() >= outside.max()


def _text_tower(model):
    return {n for n, p in model.named_parameters()
            if id(p) in {id(q) for q in model.text_parameters()} and n != "clip.logit_scale"}


def _both_towers(model):
    text = _text_tower(model)
    return {n: p for n, p in model.named_parameters()
            if n in text or (n in image_parameters(model) and n != "head.weight")}


def test_saft_ranks_both_clip_towers_through_the_text_head(clip, tiny_suite):
    """towers=both (default): D = image + text tower, w = autograd of Eq. 2 with the head built by the
    text tower from every template; the mask is the top ⌊αD⌋ of |w| and holds text-tower weights."""
    assert SAFT.Config().towers == "both"
    ctx, instance = _context(clip, "saft")
    model, split = ctx.model, ctx.train
    params = _both_towers(model)
    total = sum(p.numel() for p in params.values())
    assert total == sum(p.numel() for p in model.clip.parameters()) - 1           # all but the logit scale
    # Eq. 2 by plain autograd, through the differentiable zero-shot head, one pass over the split
    model.eval()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
    names = [ctx.class_names[c] for c in split.class_mask]
    tokens = model.tokenizer([t.format(n) for n in names for t in ctx.templates]).view(len(names), len(ctx.templates), -1)
    x = clip.preprocess(torch.from_numpy(split.images))
    y = torch.from_numpy(position_labels(split.labels, split.class_mask))
    head = text_head(model.clip, tokens)
    torch.testing.assert_close(head, model.head.logit_weight()[torch.as_tensor(split.class_mask)])   # zero-shot W
    loss = torch.nn.functional.cross_entropy(model.features(x) @ head.T, y)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])
    model.train()
    instance.prepare(ctx)
    sparse = ctx.state["sparse"]
    assert ctx.state["sparse_total"] == total
    assert sparse.count() == total // 1000 == 572                                  # ⌊αD⌋ over both towers
    scores = instance.scores(ctx)
    for n in params:
        scale = float(grads[n].abs().max())
        torch.testing.assert_close(scores[n], grads[n].abs(), rtol=1e-4, atol=1e-5 * scale + 1e-9)
    inside = torch.cat([grads[n].abs()[sparse.mask(n, p)] for n, p in params.items()])
    outside = torch.cat([grads[n].abs()[~sparse.mask(n, p)] for n, p in params.items()])
    assert inside.numel() == 572 and inside.min() >= outside.max() * (1 - 1e-4)
    text = _text_tower(model)
    in_text = sum(int(sparse.mask(n, p).sum()) for n, p in params.items() if n in text)
    assert 0 < in_text < 572 and "head.weight" not in sparse.names
    assert instance.learned(ctx) == {"masked": {"image": 572 - in_text, "text": in_text}}


def test_saft_on_both_towers_changes_only_masked_weights_and_the_head_follows_the_text_tower(clip):
    before = state(clip.model)
    model, ctx, _ = fit_method(clip, "saft", overrides=["epochs=1"])
    sparse = ctx.state["sparse"]
    after = model.state_dict()
    params = _both_towers(model)
    _assert_only_masked_weights_moved(before, after, params, sparse)
    assert any(n in _text_tower(model) and not torch.equal(after[n], before[n]) for n in params)
    torch.testing.assert_close(model.head.weight, model.zeroshot_weights())     # rebuilt from the tuned tower
    assert not torch.equal(after["head.weight"], before["head.weight"])
    others = [k for k in before if k not in params and k != "head.weight"]     # logit scale, buffers
    assert all(torch.equal(after[k], before[k]) for k in others)


def test_saft_trains_through_the_zero_shot_head_with_every_template(clip):
    """train_templates=0 at θ0: the training loss is the pretrained model's own cross-entropy."""
    ctx, instance = _context(clip, "saft[train_templates=0]")
    start_training(instance, ctx)                       # prepare, and the masked weights' gradients
    split = ctx.train
    x = clip.preprocess(torch.from_numpy(split.images[:16]))
    y = torch.from_numpy(position_labels(split.labels[:16], split.class_mask))
    mask = torch.as_tensor(split.class_mask)
    got = instance.compute_loss(ctx, Batch(x, y, mask, ctx.model))
    expected = torch.nn.functional.cross_entropy(ctx.model(x)[:, mask], y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_sparse_state_follows_the_dense_reset_of_algorithm_1(clip):
    """SAFT's Algorithm 1 literally (dense optimizer, reset unmasked weights after each step) vs stand-ins."""

    class DenseReset(FineTune):
        def __init__(self, indices):
            super().__init__()
            self.indices = indices

        @torch.no_grad()
        def after_step(self, ctx):
            theta0 = dict(ctx.pretrained.named_parameters())
            for name, p in image_parameters(ctx.model).items():
                keep = torch.zeros(p.numel(), dtype=torch.bool)
                keep[self.indices.get(name, torch.zeros(0, dtype=torch.long))] = True
                p.copy_(torch.where(keep.view(p.shape), p, theta0[name]))    # θ̃ ← m⊙θ̃ + (1−m)⊙θ

    for overrides in (["epochs=1"], ["epochs=1", "optimizer=adamw", "weight_decay=0.1"]):
        model, ctx, _ = fit_method(clip, "saft[alpha=0.01,towers=image]", overrides=overrides)
        dense = _fit(clip, DenseReset(ctx.state["sparse"].indices()), overrides)
        sparse_state, dense_state = model.state_dict(), dense.model.state_dict()
        for key in sparse_state:
            assert torch.equal(sparse_state[key], dense_state[key]), key          # bit for bit
        # the dense run keeps state for every weight, the sparse one for the mask only
        assert optimizer_state_bytes(ctx.optimizer) < optimizer_state_bytes(dense.optimizer) / 50


# ---- the mask: size and ties -----------------------------------------------------------------

def test_mask_size_is_exact_floor():
    assert mask_size(0.001, 465472) == 465
    assert mask_size(0.29, 100) == 29            # 0.29 * 100 == 28.999999999999996 in floats
    assert mask_size(1.0, 7) == 7 and mask_size(0.0, 7) == 0


def test_ties_are_broken_by_position():
    scores = {"a": torch.tensor([1.0, 3.0, 3.0]), "b": torch.tensor([[3.0, 2.0], [3.0, 0.0]])}
    # flat: a0=1 a1=3 a2=3 | b00=3 b01=2 b10=3 b11=0
    pick = lambda count, largest=True: {n: i.tolist() for n, i in top_entries(scores, count, largest).items()}
    assert pick(3) == {"a": [1, 2], "b": [0]}
    assert pick(4) == {"a": [1, 2], "b": [0, 2]}
    assert pick(5) == {"a": [1, 2], "b": [0, 1, 2]}
    assert pick(2, largest=False) == {"a": [0], "b": [3]}
    flat = torch.zeros(10)
    assert top_entries({"z": flat}, 4)["z"].tolist() == [0, 1, 2, 3]
    # the result is the stable sort by (-score, position)
    gen = torch.Generator().manual_seed(0)
    many = {"x": torch.randint(0, 5, (40,), generator=gen).float(), "y": torch.randint(0, 5, (3, 7), generator=gen).float()}
    flat = torch.cat([many["x"], many["y"].flatten()])
    expected = torch.sort(torch.argsort(-flat, stable=True)[:23]).values.tolist()
    got = top_entries(many, 23)
    assert got["x"].tolist() + [40 + i for i in got["y"].tolist()] == expected


def test_ties_in_a_method_mask_are_broken_by_position(clip):
    """imp-select with importance rounded to 4 levels: most of the mask is decided by the tie rule."""
    from ribench.methods.imp_select import ImportanceSelect

    class Coarse(ImportanceSelect):
        def scores(self, ctx):
            r = super().scores(ctx)
            peak = max(float(v.max()) for v in r.values())
            return {n: torch.floor(v / peak * 3) for n, v in r.items()}

    masks, flat = [], None
    for _ in range(2):
        ctx, _ = _context(clip, "imp-select")
        instance = Coarse(ImportanceSelect.Config(k=0.3, samples=8))
        instance.prepare(ctx)
        params = image_parameters(ctx.model)
        masks.append(torch.cat([ctx.state["sparse"].mask(n, p).reshape(-1) for n, p in params.items()]))
        flat = torch.cat([s.reshape(-1) for s in instance.scores(ctx).values()])
    count = mask_size(0.3, flat.numel())
    assert torch.equal(masks[0], masks[1]) and int(masks[0].sum()) == count
    assert int((flat == flat[masks[0]].min()).sum()) > count // 2             # the cut falls inside a tie
    expected = torch.zeros_like(masks[0])
    expected[torch.argsort(-flat, stable=True)[:count]] = True                # stable sort by (-score, position)
    assert torch.equal(masks[0], expected)


# ---- scores ----------------------------------------------------------------------------------

def test_saft_score_is_the_magnitude_of_the_mean_of_per_sample_gradients(clip):
    ctx, _ = _context(clip, "saft")
    w = mean_gradient(ctx)
    params = image_parameters(ctx.model)
    mean = per_sample_gradient_means(ctx.model, dict(params), ctx.train, ctx.preprocess, ("sum",))["sum"]
    for name in params:
        # float32 batch sums against float64 per-sample sums: signed terms cancel, so the
        # tolerance is relative to the tensor's largest entry
        scale = float(mean[name].abs().max())
        torch.testing.assert_close(w[name], mean[name], rtol=1e-4, atol=1e-5 * scale + 1e-9)
    assert all(p.grad is None for p in ctx.model.parameters())                  # no gradient left behind


@pytest.mark.parametrize("estimate", ["ce", "entropy"])
def test_importance_is_the_mean_absolute_gradient_of_single_samples(clip, estimate):
    """vmap(grad) against autograd on one sample at a time (Eq. 4), in float64 so that only the maths is
    compared (float32 roundoff differs between the batched and the single-sample pass)."""
    ctx, _ = _context(clip, "imp-select", dataset="cartoon")
    ctx.model = ctx.model.double()
    ctx.preprocess = lambda t: clip.preprocess(t).double()
    r = importance(ctx, estimate, max_samples=10)
    model, split = ctx.model, ctx.train
    params = image_parameters(model)
    targets = position_labels(split.labels, split.class_mask)
    mask = torch.as_tensor(split.class_mask)
    model.eval()
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(10):
        logits = model(ctx.preprocess(torch.from_numpy(split.images[i:i + 1])))[:, mask]
        loss = (torch.nn.functional.cross_entropy(logits, torch.tensor([targets[i]])) if estimate == "ce"
                else -(logits.softmax(-1) * logits.log_softmax(-1)).sum())
        for (n, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            sums[n] += g.abs()
    for n in params:
        torch.testing.assert_close(r[n], sums[n] / 10, rtol=1e-4, atol=1e-7)


def test_entropy_importance_uses_no_labels(clip):
    ctx, _ = _context(clip, "imp-reg")
    split = ctx.train
    shuffled = TrainSplit(split.dataset, split.images, np.roll(split.labels, 7), split.class_mask, split.details)
    assert (shuffled.labels != split.labels).any()
    other = dataclasses.replace(ctx, train=shuffled, state={})
    for estimate, same in (("entropy", True), ("ce", False)):
        a, b = importance(ctx, estimate, max_samples=16), importance(other, estimate, max_samples=16)
        assert all(torch.equal(a[n], b[n]) for n in a) is same
    logits = torch.randn(3, 5)
    assert torch.equal(prediction_entropy(logits, torch.tensor([0, 1, 2])), prediction_entropy(logits, None))


def test_cohort_normalisation_and_reversal(clip):
    ctx, _ = _context(clip, "imp-reg")
    r = importance(ctx, max_samples=8)
    for kind in ("block", "layer", "global"):
        rbar = normalise(r, ctx.model, kind)
        assert list(rbar) == list(r)
        for members in cohorts(ctx.model, kind).values():
            peak = max(float(r[n].max()) for n in members)
            if peak == 0:
                assert all(torch.count_nonzero(rbar[n]) == 0 for n in members)
                continue
            assert max(float(rbar[n].max()) for n in members) == 1.0
            for n in members:
                torch.testing.assert_close(rbar[n], r[n] / peak)
    blocks = list(cohorts(ctx.model, "block"))
    assert blocks[:2] == ["stem", "block.0"] and blocks[-2:] == ["post", "head"]
    plain = ImportanceReg(ImportanceReg.Config(samples=8))
    reverse = ImportanceReg(ImportanceReg.Config(samples=8, reverse=True))
    plain.prepare(_context(clip, "imp-reg")[0])
    reverse.prepare(_context(clip, "imp-reg")[0])
    for n, v in plain.rbar.items():
        assert torch.equal(reverse.rbar[n], 1 - v)


# ---- imp-reg: the penalty and its gradient ---------------------------------------------------

def test_imp_reg_closed_form_gradient_matches_autograd_of_the_penalty(clip):
    ctx, instance, params, closed, auto = closed_form_and_autograd(clip, "imp-reg[lam=0.3,cohort=layer,samples=8]")
    for g, a in zip(closed, auto):                                        # θ ≠ θ0 everywhere
        torch.testing.assert_close(g, a, rtol=1e-6, atol=0)
    # λ·r̄·sign(θ − θ0); the head is penalised too (the paper regularises every trained weight)
    rbar = instance.rbar["head.weight"]
    head = ctx.model.head.weight
    head_grad = next(g for p, g in zip(params, closed) if p is head)
    expected = 0.3 * rbar * torch.sign(head.detach() - ctx.pretrained.head.weight)
    torch.testing.assert_close(head_grad, expected)
    assert torch.count_nonzero(head_grad) > 0
    total = sum(float(v.sum()) for v in instance.rbar.values())
    displaced = sum(float((instance.rbar[n] * (p.detach() - ctx.pretrained.get_parameter(n)).abs()).sum())
                    for n, p in image_parameters(ctx.model).items())
    assert total > 0 and float(instance.value(ctx)) == pytest.approx(0.3 * displaced, rel=1e-5)


# ---- optimizer state -------------------------------------------------------------------------

def _one_step(pretrained, method, overrides=()):
    """ctx after the method's preparation and one optimizer step (the state exists from the first step)."""
    ctx, instance = _context(pretrained, method, overrides)
    torch.manual_seed(0)
    optimizer = start_training(instance, ctx)
    split = ctx.train
    x = pretrained.preprocess(torch.from_numpy(split.images[:16]))
    y = torch.from_numpy(position_labels(split.labels[:16], split.class_mask))
    training_step(instance, ctx, optimizer, x, y, torch.as_tensor(split.class_mask))
    return ctx


def test_optimizer_state_is_proportional_to_the_mask(clip):
    ft_ctx = _one_step(clip, "ft")
    trained = sum(p.numel() for p in ft_ctx.model.parameters() if p.requires_grad)
    assert optimizer_state_bytes(ft_ctx.optimizer) == 4 * trained              # one fp32 momentum buffer per weight
    for method in ("saft", "imp-select[samples=8]"):
        ctx = _one_step(clip, method)
        sparse = ctx.state["sparse"]
        assert optimizer_state_bytes(ctx.optimizer) == 4 * sparse.count()      # one per masked weight
        assert len(ctx.optimizer.state) == len(sparse.optimized())
        assert sparse.overhead_bytes() == sum(12 * i.numel() for _, i, _ in sparse.sparse.values())
    ctx = _one_step(clip, "saft", ["optimizer=adamw"])
    sparse = ctx.state["sparse"]
    # AdamW: two fp32 moments per masked weight and one fp32 step count per optimized tensor
    assert optimizer_state_bytes(ctx.optimizer) == 8 * sparse.count() + 4 * len(sparse.optimized())


def test_stand_ins_scatter_only_their_entries():
    p = torch.nn.Parameter(torch.arange(6.0).view(2, 3))
    q = torch.nn.Parameter(torch.ones(2))
    sparse = SparseParameters({"p": p, "q": q, "r": torch.nn.Parameter(torch.zeros(3))},
                              {"p": torch.tensor([1, 4]), "q": torch.tensor([0, 1])})
    assert sparse.optimized()[1] is q and sparse.gradient_parameters() == [p, q]
    p.grad = torch.full((2, 3), 2.0)
    sparse.gather()
    standin = sparse.optimized()[0]
    assert standin.tolist() == [1.0, 4.0] and standin.grad.tolist() == [2.0, 2.0] and p.grad is None
    with torch.no_grad():
        standin.sub_(10)
    sparse.scatter()
    assert p.tolist() == [[0.0, -9.0, 2.0], [3.0, -6.0, 5.0]]


# ---- settings, combinations and wiseft -------------------------------------------------------

def test_settings_are_checked(tiny_suite, clip):
    with pytest.raises(ConfigError, match="alpha"):
        resolve("saft[alpha=2]", "rib-tiny", "mini-clip")
    with pytest.raises(ConfigError, match="bad value for k"):
        resolve("imp-select[k=-0.1]", "rib-tiny", "mini-clip")
    with pytest.raises(ConfigError, match="choose one of block, layer, global"):
        resolve("imp-reg[cohort=tensor]", "rib-tiny", "mini-clip")
    ctx, instance = _context(clip, "saft[alpha=0.000001]")
    with pytest.raises(ConfigError, match="mask is empty"):
        instance.prepare(ctx)


def test_imp_reg_combines_with_flyp_and_lpft(clip):
    assert method_class("ft+imp-reg") is method_class("imp-reg")
    assert method_class("flyp+imp-reg").name == "flyp+imp-reg"
    before = state(clip.model)
    model, ctx, combination = fit_method(clip, "flyp+imp-reg[samples=8]", overrides=["epochs=1"])
    after = model.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("clip.transformer."))
    (reg,) = combination.regs
    params, _, rbar = reg._terms(ctx)
    names = {id(p): n for n, p in ctx.model.named_parameters()}
    penalised = {names[id(p)] for p in params}
    assert penalised == {n for n in image_parameters(ctx.model) if n != "head.weight"}   # head not trained by flyp
    probe = {"head.weight": 2 * clip.model.head.weight.detach()}
    _, ctx, combination = fit_method(clip, "lpft+imp-reg[samples=8]", overrides=["epochs=1"],
                                     ingredients={"lp[fit=lbfgs]": probe})
    (reg,) = combination.regs
    assert torch.equal(reg.start["head.weight"], probe["head.weight"])   # W0: where training starts


def test_a_masked_base_takes_a_regularizer(clip):
    """`saft+imp-reg`: the combination trains the same masked entries, now under the penalty."""
    before = state(clip.model)
    plain, plain_ctx, _ = fit_method(clip, "saft[towers=image]", overrides=["epochs=1"])
    model, ctx, _ = fit_method(clip, "saft+imp-reg[samples=8,lam=1]", overrides=["epochs=1", "saft.towers=image"])
    sparse = ctx.state["sparse"]
    assert sparse.indices().keys() == plain_ctx.state["sparse"].indices().keys()
    after, other = model.state_dict(), plain.state_dict()
    for name, p in image_parameters(model).items():
        mask = sparse.mask(name, p)
        assert torch.equal(after[name][~mask], before[name][~mask])
    assert any(not torch.equal(after[n], other[n]) for n in image_parameters(model))


def test_wiseft_of_imp_reg_runs_through_the_runner(tmp_path, clip):
    store = Store(tmp_path / "r.sqlite")
    run = dict(datasets=["sketch"], seeds=[0])
    out = execute(resolve("wiseft", "rib-tiny", "mini-clip", overrides=["base=imp-reg", "alpha=1", "epochs=1"], **run),
                  store, clip, progress=False, log=lambda _: None)
    assert out["ran"] == 1
    cells = {c.label: c for c in store.cells()}
    base, derived = "imp-reg[epochs=1]", "wiseft[alpha=1.0,base=imp-reg,epochs=1]"   # off-protocol labels
    assert sorted(cells) == [base, derived]
    assert store.has_weights(cells[base].key)
    assert cells[derived].accuracies == cells[base].accuracies
    assert cells[derived].timings["steps"] == 0


def test_no_test_split_is_read(clip, monkeypatch):
    from ribench.catalog import SUITES

    def refuse(self, name):
        raise AssertionError(f"test split {name} read during training")

    monkeypatch.setattr(type(SUITES.get("rib-tiny")()), "test_split", refuse)
    for method in ("saft", "imp-select[samples=8]", "imp-reg[samples=8]", "flyp+imp-reg[samples=8]"):
        fit_method(clip, method, overrides=["epochs=1"])
