"""Layer-wise learning rates of the Automatic fine-tuning paper (Agarwala et al.): Auto-RGN (+Hessian, +Change),
layerwise surprise, module criticality."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ribench.catalog import SUITES
from ribench.engine.compose import method_class
from ribench.data.features import cached_features
from ribench.toolkit.layers import blocks, modules, transformer_blocks
from ribench.engine.context import FitContext
from ribench.methods._layerwise import labelled_batches
from ribench.methods._lbfgs import lbfgs_pairs, two_loop
from ribench.methods.auto_rgn import AutoRGN
from ribench.methods.criticality import criticality, reinitialised
from ribench.methods.surprise import ActivationTaps, histogram, kl_per_dimension, layer_surprise
from ribench.run.spec import resolve
from ribench.engine.trainer import position_labels

from helpers import changed_keys, fit_method, state

ONE_EPOCH = ["epochs=1"]
METHODS = ["auto-rgn", "auto-rgn[every=once]", "auto-rgn-hessian[iterations=2]",
           "auto-rgn-change[iterations=2]", "auto-rgn-change[hessian=false]", "surprise",
           "surprise-diff", "criticality-identity", "criticality-random"]


@pytest.fixture(scope="module")
def ft_states(clip, sup):
    return {"clip": state(fit_method(clip, "ft", overrides=ONE_EPOCH)[0]),
            "sup": state(fit_method(sup, "ft", overrides=ONE_EPOCH)[0])}


def prepared(pretrained, method, overrides=(), dataset="sketch", seed=0):
    """(ctx, method) after `prepare`, on a fresh copy of θ0, as a runner cell builds it."""
    spec = resolve(method, "rib-tiny", pretrained.name, datasets=[dataset], seeds=[seed], overrides=list(overrides))
    frozen = copy.deepcopy(pretrained.model).eval()
    split = spec.suite.train_split(dataset)
    ctx = FitContext(copy.deepcopy(pretrained.model), frozen, split, spec.suite.train_split(spec.suite.pretrain_eval),
                     pretrained.preprocess, spec.protocol, seed,
                     train_features=lambda: cached_features(pretrained, split, "train"))
    instance = spec.method_cls(spec.method_config)
    instance.prepare(ctx)
    return ctx, instance


def mean_gradient(model, split, preprocess):
    """{name: ∇ mean CE over the whole split} in one batch, eval mode, by plain autograd."""
    model = copy.deepcopy(model).eval()
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    x = preprocess(torch.from_numpy(split.images))
    y = torch.from_numpy(position_labels(split.labels, split.class_mask))
    loss = F.cross_entropy(model(x)[:, torch.as_tensor(split.class_mask)], y)
    return dict(zip(named, torch.autograd.grad(loss, list(named.values()))))


def source_loss(model, split, preprocess):
    x = preprocess(torch.from_numpy(split.images))
    y = torch.from_numpy(position_labels(split.labels, split.class_mask))
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x)[:, torch.as_tensor(split.class_mask)].float(), y))


def normalised(scores):
    top = max(scores.values())
    return {k: v / top for k, v in scores.items()}


def assert_used_lr(ctx, weights):
    """Each group's lr at the last step = protocol.lr × weight × schedule factor; weight-0 layers absent."""
    factor = ctx.protocol.lr_factor(ctx.step - 1, ctx.total_steps)
    groups = {g["name"]: g["lr"] for g in ctx.optimizer.param_groups}
    assert set(groups) == {k for k, w in weights.items() if w > 0}
    for name, lr in groups.items():
        assert lr == pytest.approx(ctx.protocol.lr * weights[name] * factor, rel=1e-6)


# ---- L-BFGS ------------------------------------------------------------------------------------

def test_two_loop_is_the_exact_inverse_on_a_diagonal_quadratic():
    d = torch.tensor([0.5, 2.0, 3.0, 10.0, 0.1], dtype=torch.float64)
    S = [torch.eye(5, dtype=torch.float64)[i] * (i + 1) for i in range(5)]     # conjugate: coordinate axes
    Y = [d * s for s in S]
    g = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(two_loop(g, S, Y), g / d)


def test_two_loop_is_the_exact_inverse_with_conjugate_pairs_of_an_spd_matrix():
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    S = []
    for v in torch.randn(6, 6, generator=gen, dtype=torch.float64):   # Gram-Schmidt in the A inner product
        for s in S:
            v = v - (s @ A @ v) / (s @ A @ s) * s
        S.append(v)
    Y = [A @ s for s in S]
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(two_loop(g, S, Y), torch.linalg.solve(A, g))
    # fewer pairs: exact on their span (secant conditions H⁻¹y_i = s_i hold for conjugate pairs)
    for y, s in zip(Y[:3], S[:3]):
        torch.testing.assert_close(two_loop(y, S[:3], Y[:3]), s)


def test_lbfgs_run_gathers_true_curvature_pairs_on_a_quadratic():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    A, b = m @ m.T + torch.eye(8, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)

    def objective(x):
        return float(0.5 * x @ A @ x - b @ x), A @ x - b

    x0 = torch.zeros(8, dtype=torch.float64)
    g0, S, Y = lbfgs_pairs(objective, x0, iterations=6, history=4)
    torch.testing.assert_close(g0, -b)
    assert len(S) == 4
    for s, y in zip(S, Y):
        torch.testing.assert_close(y, A @ s)                       # y = g_{k+1} − g_k = A s
    torch.testing.assert_close(two_loop(Y[-1], S, Y), S[-1])       # the newest secant condition
    assert objective(x0 + sum(S))[0] < objective(x0)[0]


# ---- Auto-RGN ------------------------------------------------------------------------------------

def test_rgn_once_weights_are_gradient_over_weight_norm_and_set_the_used_lr(clip):
    model, ctx, method = fit_method(clip, "auto-rgn[every=once]", overrides=ONE_EPOCH)
    grads = mean_gradient(clip.model, ctx.train, clip.preprocess)    # 80 images < 512: the whole split
    params = dict(clip.model.named_parameters())
    expected = normalised({n: float(g.norm() / params[n].detach().norm()) for n, g in grads.items()})
    weights = method.layer_weights
    assert set(weights) == set(expected) and "head.weight" in weights
    for n in expected:
        assert weights[n] == pytest.approx(expected[n], rel=1e-4, abs=1e-7)
    assert max(weights.values()) == 1.0
    assert_used_lr(ctx, weights)


def test_rgn_per_step_sets_each_step_lr_from_that_step_gradient(sup, monkeypatch):
    records = []
    original = AutoRGN.after_backward

    def after_backward(self, ctx):
        norms = {g["name"]: (float(g["params"][0].grad.double().norm()), float(g["params"][0].detach().double().norm()))
                 for g in ctx.optimizer.param_groups}
        original(self, ctx)
        records.append((ctx.step, norms))

    def after_step(self, ctx):
        records[-1] += ({g["name"]: g["lr"] for g in ctx.optimizer.param_groups},)

    monkeypatch.setattr(AutoRGN, "after_backward", after_backward)
    monkeypatch.setattr(AutoRGN, "after_step", after_step)
    _, ctx, _ = fit_method(sup, "auto-rgn", overrides=ONE_EPOCH)
    assert len(records) == ctx.total_steps == 5
    previous = None
    for step, norms, used in records:
        weights = normalised({n: gn / tn for n, (gn, tn) in norms.items()})
        factor = ctx.protocol.lr_factor(step, ctx.total_steps)
        for name, lr in used.items():
            assert lr == pytest.approx(ctx.protocol.lr * weights[name] * factor, rel=1e-5)
        assert previous is None or weights != previous                 # recomputed every step
        previous = weights


@pytest.mark.parametrize("layers", ["module", "tensor"])
def test_rgn_change_is_the_norm_of_the_gradient_difference_per_layer(sup, layers):
    ctx, method = prepared(sup, f"auto-rgn-change[hessian=false,layers={layers}]")
    g_tgt = mean_gradient(sup.model, ctx.train, sup.preprocess)
    g_src = mean_gradient(sup.model, ctx.source, sup.preprocess)
    params = dict(sup.model.named_parameters())
    grouped = modules(sup.model) if layers == "module" else {n: [n] for n in g_tgt}

    def norm(tensors):
        return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))

    # ‖g_tgt,ℓ − g_src,ℓ‖ / ‖θ_ℓ‖ over all of θ_ℓ's tensors
    expected = normalised({layer: norm([g_tgt[n] - g_src[n] for n in names]) / norm([params[n].detach() for n in names])
                           for layer, names in grouped.items()})
    assert set(method.layer_weights) == set(expected)
    for layer, w in method.layer_weights.items():
        assert w == pytest.approx(expected[layer], rel=1e-3, abs=1e-6)
    groups = {g.name: g.params for g in method.param_groups(ctx)}
    if layers == "module":
        assert {"vit.embedding", "vit.blocks.0.attn.qkv", "head"} <= set(expected)
        assert len(groups["head"]) == 2 and len(groups["vit.embedding"]) == 4    # weight + bias; E, b, x_class, E_pos


def test_rgn_hessian_without_curvature_pairs_is_plain_rgn_and_with_pairs_differs(clip):
    _, plain = prepared(clip, "auto-rgn[every=once,layers=module]")
    _, no_pairs = prepared(clip, "auto-rgn-hessian[iterations=0]")
    _, newton = prepared(clip, "auto-rgn-hessian[iterations=3]")
    for n, w in plain.layer_weights.items():
        assert no_pairs.layer_weights[n] == pytest.approx(w, rel=1e-6, abs=1e-9)
    weights = newton.layer_weights
    assert all(np.isfinite(w) and 0 <= w <= 1 for w in weights.values()) and max(weights.values()) == 1.0
    assert weights != pytest.approx(plain.layer_weights, rel=1e-2)


# ---- layerwise surprise ------------------------------------------------------------------------

def test_histogram_kl_matches_a_hand_computation():
    src = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [2.9, 1.0]])
    tgt = torch.tensor([[2.9, 1.0], [2.5, 1.0], [0.2, 1.0]])
    lo, hi = torch.cat([src, tgt]).min(0).values, torch.cat([src, tgt]).max(0).values
    eps = 1e-3
    kl = kl_per_dimension(histogram(tgt, lo, hi, 8), histogram(src, lo, hi, 8), eps)
    # by hand: joint range [0, 2.9], 8 bins; dimension 1 is constant
    cs, _ = np.histogram(src[:, 0].numpy(), bins=8, range=(0.0, 2.9))
    ct, _ = np.histogram(tgt[:, 0].numpy(), bins=8, range=(0.0, 2.9))
    assert cs.tolist() == [1, 0, 1, 0, 0, 1, 0, 1] and ct.tolist() == [1, 0, 0, 0, 0, 0, 1, 1]
    p, q = (ct / 3 + eps) / (1 + 8 * eps), (cs / 4 + eps) / (1 + 8 * eps)
    assert float(kl[0]) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    assert float(kl[1]) == 0.0
    assert float(kl_per_dimension(histogram(src, lo, hi, 8), histogram(src, lo, hi, 8), eps).abs().sum()) == 0.0


def test_surprise_is_zero_when_source_is_target(clip, tiny_suite):
    split = tiny_suite.train_split("cartoon")
    idx = np.arange(len(split))
    s = layer_surprise(clip.model, split, split, idx, idx, clip.preprocess, "cpu", 32)
    assert list(s) == list(blocks(clip.model)) and all(v == 0.0 for v in s.values())


@pytest.mark.parametrize("which", ["clip", "sup"])
def test_surprise_taps_read_the_layers_they_name(which, clip, sup, tiny_suite):
    """cls tokens of the last block, through the model's own final norm/pooling, give its features."""
    pretrained = {"clip": clip, "sup": sup}[which]
    model = pretrained.model.eval()
    x = pretrained.preprocess(torch.from_numpy(tiny_suite.train_split("sketch").images[:6]))
    taps = ActivationTaps(model, "cls")
    out = taps(x)
    taps.close()
    assert list(out) == list(blocks(model))
    with torch.no_grad():
        torch.testing.assert_close(out["post"], model.features(x))
        torch.testing.assert_close(out["head"], model(x))
        last = out[f"block.{len(transformer_blocks(model)) - 1}"]
        if which == "sup":
            torch.testing.assert_close(model.vit.norm(last), model.features(x))
        else:
            visual = model.clip.visual
            torch.testing.assert_close(F.normalize(visual.ln_post(last) @ visual.proj, dim=-1), model.features(x))


def test_sequence_first_open_clip_gives_the_same_activations_and_criticality(clip, tiny_suite):
    """Older open_clip runs its blocks on (tokens, batch, width): taps and identity removal must not care."""
    seq = copy.deepcopy(clip.model).eval()
    seq.clip.visual.transformer.batch_first = False
    for block in seq.clip.visual.transformer.resblocks:
        block.attn.batch_first = False
    split = tiny_suite.train_split("photo")
    x = clip.preprocess(torch.from_numpy(split.images[:6]))
    with torch.no_grad():
        torch.testing.assert_close(seq(x), clip.model.eval()(x))
    for tokens in ("cls", "mean"):
        a, b = ActivationTaps(clip.model, tokens), ActivationTaps(seq, tokens)
        ours, theirs = a(x), b(x)
        a.close(), b.close()
        for name in ours:
            torch.testing.assert_close(theirs[name], ours[name])
    batches = list(labelled_batches(split, np.arange(24), 8, clip.preprocess, "cpu"))
    base, removed = criticality(clip.model, batches, "identity", 0)
    base_seq, removed_seq = criticality(seq, batches, "identity", 0)
    assert base_seq == pytest.approx(base, rel=1e-5)
    assert removed_seq == pytest.approx(removed, rel=1e-5)
    assert all(v != pytest.approx(base) for v in removed.values())


def test_surprise_weights_and_diff_weights(clip):
    _, ctx, method = fit_method(clip, "surprise", overrides=ONE_EPOCH)
    s = method.layer_surprise
    assert method.layer_weights == pytest.approx(normalised(s))
    assert_used_lr(ctx, method.layer_weights)
    _, ctx, method = fit_method(clip, "surprise-diff", overrides=ONE_EPOCH)
    assert method.layer_surprise == s                                # same seeded samples
    names = list(s)
    diff = {n: max(0.0, s[n] - (s[names[i - 1]] if i else 0.0)) for i, n in enumerate(names)}
    assert method.layer_scores == pytest.approx(diff)
    weights = method.layer_weights
    assert all(w >= 0 for w in weights.values()) and max(weights.values()) == 1.0
    assert_used_lr(ctx, weights)


# ---- module criticality ----------------------------------------------------------------------------

class Skip(torch.nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


@pytest.mark.parametrize("which", ["clip", "sup"])
def test_identity_criticality_is_the_source_loss_increase(which, clip, sup):
    pretrained = {"clip": clip, "sup": sup}[which]
    ctx, method = prepared(pretrained, "criticality-identity")
    base = source_loss(pretrained.model, ctx.source, pretrained.preprocess)   # 80 images < 512: all
    stack = (lambda m: m.clip.visual.transformer.resblocks) if which == "clip" else (lambda m: m.vit.blocks)
    for i in range(len(stack(pretrained.model))):
        model = copy.deepcopy(pretrained.model)
        stack(model)[i] = Skip()
        increase = source_loss(model, ctx.source, pretrained.preprocess) - base
        assert method.layer_scores[f"block.{i}"] == pytest.approx(max(0.0, increase), rel=1e-4, abs=1e-6)
    assert method.layer_weights == pytest.approx(normalised(method.layer_scores))


def test_random_criticality_is_seeded_and_leaves_the_model_alone(clip):
    theta0 = state(clip.model)
    ctx, method = prepared(clip, "criticality-random")
    _, again = prepared(clip, "criticality-random")
    _, other = prepared(clip, "criticality-random", seed=1)
    assert method.criticality_losses == again.criticality_losses
    assert method.criticality_losses != other.criticality_losses
    assert changed_keys(theta0, ctx.model.state_dict()) == []
    # by hand: block 2 with its re-initialised weights loaded
    block = transformer_blocks(clip.model)["block.2"]
    fresh = reinitialised(block, int(np.random.SeedSequence([0, 41, 2]).generate_state(1)[0]))
    model = copy.deepcopy(clip.model)
    model.clip.visual.transformer.resblocks[2].load_state_dict(fresh)
    assert any(not torch.equal(fresh[n], p) for n, p in block.named_parameters())
    loss = source_loss(model, ctx.source, clip.preprocess)
    assert method.criticality_losses["block.2"] == pytest.approx(loss, rel=1e-5)


def test_zero_weight_layers_stay_bit_identical(sup):
    theta0 = state(sup.model)
    model, ctx, method = fit_method(sup, "criticality-identity[top_k=2,others=0]", overrides=ONE_EPOCH)
    weights = method.layer_weights
    assert sorted(w > 0 for w in weights.values()) == [False, False, True, True]
    changed = set(changed_keys(theta0, model.state_dict()))
    owner = {n: b for b, names in blocks(model).items() for n in names}
    for name in theta0:
        frozen = owner[name] in ("stem", "post") or weights.get(owner[name], 1.0) == 0
        assert (name not in changed) == frozen, name
    assert_used_lr(ctx, {**weights, "head": 1.0})


# ---- invariants: all weights 1 is ft; no test split ----------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_weights_forced_to_one_give_ft_and_no_test_split_is_read(method, clip, sup, ft_states, monkeypatch):
    suite_cls = type(SUITES.get("rib-tiny")())

    def refuse(self, name):
        raise AssertionError(f"test split {name} read during training")

    monkeypatch.setattr(suite_cls, "test_split", refuse)
    name = method.split("[")[0]
    monkeypatch.setattr(method_class(name), "weights_from_scores",
                        lambda self, scores: {k: 1.0 for k in scores})
    which = "sup" if name in ("surprise", "criticality-random") else "clip"   # one timm run of hooks/reinit
    model, ctx, _ = fit_method({"clip": clip, "sup": sup}[which], method, overrides=ONE_EPOCH)
    reference, after = ft_states[which], model.state_dict()
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    assert len(ctx.optimizer.param_groups) > 5                    # really per layer / per block


def test_the_cell_records_its_layer_weights(tmp_path, sup):
    from ribench.run.runner import execute
    from ribench.store import Store

    store = Store(tmp_path / "r.sqlite")
    spec = resolve("criticality-identity[samples=32]", "rib-tiny", "mini-sup", datasets=["sketch"], seeds=[0],
                   overrides=["epochs=1"])
    assert execute(spec, store, sup, progress=False, log=lambda _: None)["ran"] == 1
    (cell,) = store.cells()
    weights = cell.details["method"]["layer_weights"]
    assert list(weights) == list(transformer_blocks(sup.model))     # measured: the transformer blocks
    assert max(weights.values()) == 1.0 and all(0.0 <= w <= 1.0 for w in weights.values())
