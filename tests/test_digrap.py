"""DiGraP: the projection, its hypergradient-learned strength ω, and the METHODS.md invariants."""

import math

import pytest
import torch
from torch import nn

from ribench.errors import ConfigError
from ribench.engine.context import Batch, FitContext
from ribench.pretrains.base import Classifier
from ribench.engine.protocol import Protocol
from ribench.run.spec import resolve
from ribench.engine.trainer import position_labels

from helpers import changed_keys, fit_method, state

from ribench.methods.digrap import DiGraP

EPOCH = ["epochs=1"]


@pytest.fixture(scope="module")
def pretrains(clip, sup):
    return {"mini-clip": clip, "mini-sup": sup}


# ---- a two-layer classifier in float64, driven by hand ----------------------------------

class Tiny(Classifier):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 3, bias=False)
        self.head = nn.Linear(3, 2, bias=False)

    def features(self, x):
        return self.body(x)


def _tiny_ctx(config, lr=0.1, momentum=0.9):
    torch.manual_seed(0)
    model = Tiny().double()
    pretrained = Tiny().double()
    pretrained.load_state_dict(model.state_dict())
    for p in pretrained.parameters():
        p.requires_grad_(False)
    ctx = FitContext(model, pretrained, None, None, None, Protocol(lr=lr, momentum=momentum), seed=0)
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return ctx, DiGraP(config)


def _set(ctx, body_theta, head_theta, body_grad, head_grad):
    """Place the weights at θ and their gradients at g (flattened 3x3 and 2x3 lists)."""
    with torch.no_grad():
        ctx.model.body.weight.copy_(torch.tensor(body_theta, dtype=torch.float64).view(3, 3))
        ctx.model.head.weight.copy_(torch.tensor(head_theta, dtype=torch.float64).view(2, 3))
    ctx.model.body.weight.grad = torch.tensor(body_grad, dtype=torch.float64).view(3, 3)
    ctx.model.head.weight.grad = torch.tensor(head_grad, dtype=torch.float64).view(2, 3)


def _flat(t):
    return t.detach().reshape(-1).tolist()


def test_projection_matches_a_hand_computation():
    ctx, method = _tiny_ctx(DiGraP.Config(omega_init=0.5, learn_omega=False))
    body0, head0 = _flat(ctx.pretrained.body.weight), _flat(ctx.pretrained.head.weight)
    # body: r = (1, 0, 2, 0, ...), g = (−1, 3, 0, 0, ...): ⟨g, r⟩ = −1 < 0, ‖r‖² = 5
    # → g̃ = g − 0.5·(−1/5)·r = g + 0.1·r = (−0.9, 3, 0.2, 0, ...)
    r_body = [1, 0, 2] + [0] * 6
    g_body = [-1, 3, 0] + [0] * 6
    # head: r = (1, 1, 0, 0, 0, 0), g = (2, −1, 5, 0, 0, 0): ⟨g, r⟩ = 1 > 0 → untouched
    r_head = [1, 1, 0, 0, 0, 0]
    g_head = [2, -1, 5, 0, 0, 0]
    _set(ctx, [a + b for a, b in zip(body0, r_body)], [a + b for a, b in zip(head0, r_head)], g_body, g_head)
    method.after_backward(ctx)
    assert _flat(ctx.model.body.weight.grad) == pytest.approx([-0.9, 3, 0.2] + [0] * 6, abs=1e-15)
    assert torch.equal(ctx.model.head.weight.grad, torch.tensor(g_head, dtype=torch.float64).view(2, 3))


def test_full_projection_is_orthogonal_to_the_displacement_in_float64():
    ctx, method = _tiny_ctx(DiGraP.Config(omega_init=1.0, learn_omega=False))
    gen = torch.Generator().manual_seed(1)
    body0, head0 = ctx.pretrained.body.weight, ctx.pretrained.head.weight
    r_body, r_head = torch.randn(3, 3, generator=gen, dtype=torch.float64), torch.randn(2, 3, generator=gen,
                                                                                         dtype=torch.float64)
    g_body = -r_body + 0.3 * torch.randn(3, 3, generator=gen, dtype=torch.float64)   # conflicts
    g_head = r_head + 0.3 * torch.randn(2, 3, generator=gen, dtype=torch.float64)    # agrees
    assert (g_body * r_body).sum() < 0 < (g_head * r_head).sum()
    _set(ctx, _flat(body0 + r_body), _flat(head0 + r_head), _flat(g_body), _flat(g_head))
    method.after_backward(ctx)
    projected = ctx.model.body.weight.grad
    assert abs(float((projected * r_body).sum())) < 1e-14 * float(g_body.norm() * r_body.norm())
    # what is removed is exactly the component along r
    along = (g_body * r_body).sum() / (r_body * r_body).sum() * r_body
    assert torch.allclose(projected, g_body - along, rtol=0, atol=1e-15)
    assert torch.equal(ctx.model.head.weight.grad, g_head)


def test_hypergradient_updates_omega_as_computed_by_hand():
    """Three steps of the loop on the tiny model: ω_ℓ after steps 1 and 2 from a hand computation.

    h_t = cos(g_t, η_{t−1}·c_{t−1}·r_{t−1}) (the normalised ⟨g_t, ∂θ_t/∂ω⟩); Adam (β 0.9/0.999, ε 1e-8)
    then clip to [0, 1]. The lr changes every step, as a schedule does (set after after_backward,
    as the loop does).
    """
    mu, lr, omega0 = 0.1, 0.1, 0.5
    lrs = [0.1, 0.03, 0.05]
    ctx, method = _tiny_ctx(DiGraP.Config(omega_init=omega0, mu=mu), lr=lr)
    body0, head0 = _flat(ctx.pretrained.body.weight), _flat(ctx.pretrained.head.weight)
    body_r0 = [1, 0, 2] + [0] * 6           # body conflicts at step 0 (c0 = −1/5)
    head_r0 = [1, 1, 0, 0, 0, 0]            # head does not (c0 = 0)
    grads = [
        ([-1, 3, 0] + [0] * 6, [2, -1, 5, 0, 0, 0]),
        ([-2, 1, 0] + [0] * 6, [-1, 0, 0, 1, 0, 0]),     # step 1
        ([4, 0, -1] + [0] * 6, [3, 3, 0, 0, 0, 0]),      # step 2
    ]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    def cosine(a, b):
        norms = math.sqrt(dot(a, a) * dot(b, b))
        return dot(a, b) / norms if norms > 0 else 0.0

    def r_now():
        return ([x - y for x, y in zip(_flat(ctx.model.body.weight), body0)],
                [x - y for x, y in zip(_flat(ctx.model.head.weight), head0)])

    _set(ctx, [a + b for a, b in zip(body0, body_r0)], [a + b for a, b in zip(head0, head_r0)], *grads[0])
    omega = [omega0, omega0]
    m, v = [0.0, 0.0], [0.0, 0.0]
    expected, hypergradients = [], []
    prev = None
    for t, (g_body, g_head) in enumerate(grads):
        if t:
            ctx.model.body.weight.grad = torch.tensor(g_body, dtype=torch.float64).view(3, 3)
            ctx.model.head.weight.grad = torch.tensor(g_head, dtype=torch.float64).view(2, 3)
        r = r_now()
        g = (g_body, g_head)
        if prev is not None:                       # the hand computation of steps 1–2
            hs = []
            for i in range(2):
                d = [lrs[t - 1] * prev[1][i] * x for x in prev[0][i]]          # ∂θ_t/∂ω = η_{t−1}c_{t−1}r_{t−1}
                h = cosine(g[i], d)
                hs.append(h)
                m[i] = 0.9 * m[i] + 0.1 * h
                v[i] = 0.999 * v[i] + 0.001 * h * h
                m_hat, v_hat = m[i] / (1 - 0.9 ** t), v[i] / (1 - 0.999 ** t)
                omega[i] = min(1.0, max(0.0, omega[i] - mu * m_hat / (math.sqrt(v_hat) + 1e-8)))
            expected.append(list(omega))
            hypergradients.append(hs)
        c = [dot(g[i], r[i]) / dot(r[i], r[i]) if dot(g[i], r[i]) < 0 else 0.0 for i in range(2)]
        prev = (r, c)
        method.after_backward(ctx)
        if t:
            assert method.projection.omega.tolist() == pytest.approx(expected[-1], abs=1e-12)
        # the gradient the optimizer sees is the projection with the current ω
        want = [gi - omega[0] * c[0] * ri for gi, ri in zip(g_body, r[0])]
        assert _flat(ctx.model.body.weight.grad) == pytest.approx(want, abs=1e-12)
        for group in ctx.optimizer.param_groups:
            group["lr"] = lrs[t]
        ctx.optimizer.step()
        method.after_step(ctx)
    # body: projected at step 0 and g1 still conflicts with r0: d1 ∝ −r0, so h1 = −cos(g1, r0) > 0
    # and Adam's first step lowers ω by μ·|h|/(|h| + ε) ≈ μ. head: no projection at step 0
    # (d1 = 0, h1 = 0, ω stays), projected at step 1 while g2 points back along r1 (h2 < 0): ω rises.
    assert hypergradients[0][0] == pytest.approx(-cosine(grads[1][0], body_r0)) and hypergradients[0][0] > 0
    assert hypergradients[0][1] == 0.0 and hypergradients[1][1] < 0
    assert all(-1.0 <= h <= 1.0 for hs in hypergradients for h in hs)      # normalised: a cosine
    assert expected[0] == pytest.approx([omega0 - mu, omega0], rel=1e-6)
    assert expected[1][0] != expected[0][0] and expected[1][1] > omega0


def test_the_step_on_omega_does_not_depend_on_the_gradient_scale():
    """The cosine makes ω's update scale-free: g and 1000·g (a loss 1000× larger) give the same ω."""
    omegas = []
    for scale in (1.0, 1000.0):
        ctx, method = _tiny_ctx(DiGraP.Config(omega_init=0.5, mu=0.1), lr=0.1, momentum=0.0)
        body0, head0 = _flat(ctx.pretrained.body.weight), _flat(ctx.pretrained.head.weight)
        _set(ctx, [a + b for a, b in zip(body0, [1, 0, 2] + [0] * 6)], [a + b for a, b in zip(head0, [1] * 6)],
             [scale * x for x in [-1, 3, 0] + [0] * 6], [scale * x for x in [-1, -1, 0, 0, 0, 0]])
        method.after_backward(ctx)
        for group in ctx.optimizer.param_groups:
            group["lr"] = 0.1 / scale                    # the same weight step: only the gradient's scale differs
        ctx.optimizer.step()
        method.after_step(ctx)
        ctx.model.body.weight.grad = scale * torch.tensor([-2.0, 1, 0] + [0] * 6, dtype=torch.float64).view(3, 3)
        ctx.model.head.weight.grad = scale * torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=torch.float64).view(2, 3)
        method.after_backward(ctx)
        omegas.append(method.projection.omega.tolist())
    assert omegas[0] == pytest.approx(omegas[1], abs=1e-12)
    assert omegas[0][0] < 0.5 < omegas[0][1]                 # body: still conflicting; head: points back


def test_config_is_checked(tiny_suite):
    with pytest.raises(ConfigError, match="omega_init"):
        resolve("digrap[omega_init=1.5]", "rib-tiny", "mini-clip")
    with pytest.raises(ConfigError, match="mu"):
        DiGraP(DiGraP.Config(mu=-1.0))
    assert DiGraP.defaults() == {"omega_init": 0.0, "mu": 1e-2, "learn_omega": True, "project_head": True}


# ---- invariants on the tiny suite --------------------------------------------------------

@pytest.mark.parametrize("pretrain", ["mini-clip", "mini-sup"])
def test_fixed_zero_strength_is_ft_bit_for_bit(pretrains, pretrain):
    ft, _, _ = fit_method(pretrains[pretrain], "ft", overrides=EPOCH)
    model, ctx, method = fit_method(pretrains[pretrain], "digrap[omega_init=0,learn_omega=false]", overrides=EPOCH)
    expected, after = state(ft), model.state_dict()
    assert all(torch.equal(expected[k], after[k]) for k in expected)
    assert set(method.learned(ctx)["omega"].values()) == {0.0}


@pytest.mark.parametrize("pretrain", ["mini-clip", "mini-sup"])
def test_training_moves_the_weights_ft_moves_and_keeps_omega_in_range(pretrains, pretrain):
    pretrained = pretrains[pretrain]
    before = state(pretrained.model)
    ft, _, _ = fit_method(pretrained, "ft", overrides=EPOCH)
    model, ctx, method = fit_method(pretrained, "digrap", overrides=EPOCH)
    assert changed_keys(before, model.state_dict()) == changed_keys(before, state(ft))
    omega = method.projection.omega
    assert bool(((omega >= 0) & (omega <= 1)).all())
    learned = method.learned(ctx)["omega"]                          # what the cell stores in its details
    assert set(learned) == set(method.projection.names) and learned == method.omega
    assert any(n.startswith("head.") for n in learned)             # the head is projected by default
    # from ω0 = 0 the normalised hypergradient lifts ω off its floor within one epoch (5 steps)
    assert method.config.omega_init == 0.0
    assert sum(w > 0 for w in learned.values()) >= 5, learned
    # fully projected from the start: weights differ from ft, ω relaxes but stays in [0, 1]
    model1, ctx1, method1 = fit_method(pretrained, "digrap[omega_init=1]", overrides=EPOCH)
    assert not all(torch.equal(v, model1.state_dict()[k]) for k, v in state(ft).items())
    relaxed = method1.learned(ctx1)["omega"].values()
    assert all(0.0 <= w <= 1.0 for w in relaxed) and min(relaxed) < 1.0


def test_full_projection_on_a_real_gradient(clip):
    """ω ≡ 1 after a short run: on a fresh mini-batch, conflicting layers end orthogonal to
    θ − θ0 and the others keep their gradient bit for bit."""
    _, ctx, method = fit_method(clip, "digrap[omega_init=1,learn_omega=false]", overrides=EPOCH)
    st = method.projection
    split = ctx.train
    idx = torch.arange(16).numpy()
    x = ctx.preprocess(torch.from_numpy(split.images[idx]))
    y = torch.from_numpy(position_labels(split.labels, split.class_mask)[idx])
    ctx.model.train()
    ctx.model.zero_grad(set_to_none=True)
    loss = method.compute_loss(ctx, Batch(x, y, torch.as_tensor(split.class_mask), ctx.model))
    loss.backward()
    raw = [p.grad.clone() for p in st.params]
    method.after_backward(ctx)
    conflicting = agreeing = 0
    for p, a, g in zip(st.params, st.anchors, raw):
        r = (p - a).detach()
        dot = float((g.double() * r.double()).sum())
        if dot < 0:
            conflicting += 1
            after = float((p.grad.double() * r.double()).sum())
            assert abs(after) <= 1e-5 * float(g.norm() * r.norm())
        else:
            agreeing += 1
            assert torch.equal(p.grad, g)
    assert conflicting > 0 and agreeing > 0
    assert not any(n.startswith("clip.transformer.") for n in st.names)   # the text tower is not trained


def test_the_runner_stores_the_learned_strengths_with_the_cell(tmp_path, clip):
    from ribench.run.runner import execute
    from ribench.store import Store

    store = Store(tmp_path / "r.sqlite")
    spec = resolve("digrap", "rib-tiny", "mini-clip", datasets=["sketch"], seeds=[0], overrides=["epochs=1"])
    assert execute(spec, store, clip, progress=False, log=lambda _: None)["ran"] == 1
    (cell,) = store.cells()
    omega = cell.details["method"]["omega"]
    assert "head.weight" in omega and all(0.0 <= w <= 1.0 for w in omega.values())
    assert all(isinstance(v, (int, float)) for v in cell.timings.values())   # timings stay numbers
