"""Trainer, methods zeroshot/ft/lp, runner and store working together on real mini models."""

import numpy as np
import pytest
import torch

from ribench.data.splits import TestSplit, TrainSplit, holdout
from ribench.engine.context import FitContext
from ribench.engine.protocol import Protocol
from ribench.run.cell import load_pretrained
from ribench.run.runner import execute
from ribench.run.spec import resolve
from ribench.store import Store

from helpers import fit_method, state as _state


@pytest.fixture(scope="module")
def clip_spec(tiny_suite):
    import tiny_suite as _  # noqa: F401  (registers rib-tiny)

    return resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"], seeds=[0])


@pytest.fixture(scope="module")
def clip_pretrained(clip_spec):
    return load_pretrained(clip_spec)


def _train_model(spec, pretrained, method_name, seed=0, overrides=()):
    model, ctx, _ = fit_method(pretrained, method_name, overrides, seed)
    return model, ctx


def test_ft_changes_backbone_and_head(clip_spec, clip_pretrained):
    before = _state(clip_pretrained.model)
    model, ctx = _train_model(clip_spec, clip_pretrained, "ft")
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "head.weight" in changed
    assert any(k.startswith("clip.visual.") for k in changed)
    # ft trains the image classifier only: the frozen text tower is untouched
    assert not any(k.startswith("clip.transformer.") for k in changed)
    assert ctx.step == ctx.total_steps == 2 * int(np.ceil(80 / 16))
    # the pretrained model itself is never modified
    assert all(torch.equal(before[k], v) for k, v in clip_pretrained.model.state_dict().items())


def test_ft_is_deterministic_under_a_seed(clip_spec, clip_pretrained):
    a, _ = _train_model(clip_spec, clip_pretrained, "ft", seed=3)
    b, _ = _train_model(clip_spec, clip_pretrained, "ft", seed=3)
    c, _ = _train_model(clip_spec, clip_pretrained, "ft", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_lp_leaves_backbone_bit_identical_and_trains_head(clip_spec, clip_pretrained):
    before = _state(clip_pretrained.model)
    model, _ = _train_model(clip_spec, clip_pretrained, "lp")
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["head.weight"]


def test_lp_lbfgs_fits_the_train_split_better_than_protocol(clip_spec, clip_pretrained):
    from ribench.engine.evaluate import accuracy

    proto, _ = _train_model(clip_spec, clip_pretrained, "lp")
    conv, _ = _train_model(clip_spec, clip_pretrained, "lp", overrides=["fit=lbfgs"])
    split = clip_spec.suite.train_split("sketch")
    as_test = TestSplit(split.dataset, split.images, split.labels, split.class_mask)
    assert accuracy(conv, clip_pretrained.preprocess, as_test) >= accuracy(proto, clip_pretrained.preprocess, as_test)
    assert accuracy(conv, clip_pretrained.preprocess, as_test) > 0.9


def test_fit_context_refuses_test_splits(tiny_suite):
    test = tiny_suite.test_split("sketch")
    train = tiny_suite.train_split("sketch")
    with pytest.raises(TypeError):
        FitContext(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), test, train, None, Protocol(), 0)
    # and the ctx of a real cell holds no TestSplit anywhere among its fields
    ctx = FitContext(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), train, train, None, Protocol(), 0)
    assert not any(isinstance(v, TestSplit) for v in vars(ctx).values())


def test_holdout_is_stratified_and_stays_a_train_split(tiny_suite):
    fit, val = holdout(tiny_suite.train_split("cartoon"), 0.25, seed=0)
    assert isinstance(fit, TrainSplit) and isinstance(val, TrainSplit)
    assert len(fit) + len(val) == 80 and np.bincount(val.labels).tolist() == [2] * 10
    assert not set(map(bytes, fit.images)) & set(map(bytes, val.images))


def test_lr_schedule_warmup_then_cosine():
    p = Protocol(lr=1.0, warmup_steps=4)
    factors = [p.lr_factor(s, 20) for s in range(20)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == pytest.approx(1.0)
    assert factors[12] == pytest.approx(0.5 * (1 + np.cos(np.pi * 8 / 16)))
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_rerun_trains_nothing_and_new_settings_make_new_cells(tmp_path, clip_pretrained):
    store = Store(tmp_path / "r.sqlite")
    spec = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch", "cartoon"], seeds=[0])
    first = execute(spec, store, clip_pretrained, progress=False, log=lambda m: None)
    assert first["ran"] == 2
    rows = {c.key: c.accuracies for c in store.cells()}
    again = execute(resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch", "cartoon"], seeds=[0]),
                    store, clip_pretrained, progress=False, log=lambda m: None)
    assert again["ran"] == 0
    changed = execute(resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"], seeds=[0],
                              overrides=["lr=0.001"]), store, clip_pretrained, progress=False, log=lambda m: None)
    assert changed["ran"] == 1
    after = {c.key: c.accuracies for c in store.cells()}
    assert len(after) == 3 and all(after[k] == v for k, v in rows.items())


def test_zeroshot_cells_equal_the_pretrained_evaluation(tmp_path, clip_pretrained):
    store = Store(tmp_path / "z.sqlite")
    spec = resolve("zeroshot", "rib-tiny", "mini-clip", datasets=["sketch"], seeds=[0])
    out = execute(spec, store, clip_pretrained, progress=False, log=lambda m: None)
    (cell,) = store.cells()
    assert cell.accuracies == out["pretrained"]


def test_mini_sup_head_is_its_pretrained_classifier(tiny_suite):
    spec = resolve("ft", "rib-tiny", "mini-sup", datasets=["sketch"], seeds=[0])
    pre = load_pretrained(spec)
    from safetensors.torch import load_file
    from ribench.pretrains.mini import weights_file

    state = load_file(str(weights_file("mini-sup")))
    assert torch.equal(pre.model.head.weight, state["head.weight"])
    assert not pre.has_text_tower


def test_clip_head_is_built_from_the_text_tower(clip_pretrained):
    model = clip_pretrained.model
    weights = model.zeroshot_weights()
    assert torch.allclose(model.head.weight, weights)                 # Û: the class directions
    norms = weights.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert torch.equal(model.head.scale, model.clip.logit_scale.exp())   # s, fixed


def test_lp_evaluated_on_cached_features_equals_full_forward(clip_spec, clip_pretrained):
    from ribench.engine.evaluate import evaluate_all
    from ribench.data.features import cached_features

    model, _ = _train_model(clip_spec, clip_pretrained, "lp")
    suite = clip_spec.suite
    full, _ = evaluate_all(model, clip_pretrained.preprocess, suite, batch_size=500)
    via_features, _ = evaluate_all(model, clip_pretrained.preprocess, suite, batch_size=500,
                                   test_features=lambda n: cached_features(clip_pretrained,
                                                                           suite.test_split(n), "test"))
    assert via_features == full


def test_torchs_fused_optimizer_step_is_recorded_and_trains_like_the_plain_one(clip_spec, clip_pretrained):
    """`fused` (the default on CUDA) is part of a cell's protocol record only when on, so CPU identities
    stay as they were; on CPU it can be asked for, and it trains ft to the plain path's weights within
    float tolerance, under SGD and AdamW."""
    plain = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"])
    fused = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"], overrides=["fused=true"])
    assert "fused" not in plain.protocol.as_dict() and fused.protocol.as_dict()["fused"] is True
    assert fused.label == "ft[fused=True]"
    for optimizer, lr in (("sgd", 1e-2), ("adamw", 1e-4)):
        settings = [f"optimizer={optimizer}", f"lr={lr}", "epochs=1"]
        a, _ = _train_model(clip_spec, clip_pretrained, "ft", overrides=settings)
        b, ctx = _train_model(clip_spec, clip_pretrained, "ft", overrides=[*settings, "fused=true"])
        assert all(group.get("fused") for group in ctx.optimizer.param_groups)
        sa, sb, s0 = a.state_dict(), b.state_dict(), clip_pretrained.model.state_dict()
        moved = [k for k in sa if sa[k].dim() >= 2 and not torch.equal(sa[k], s0[k])]
        assert moved
        # weight matrices agree within 1% of their update (biases are left out: attention's key bias has
        # an exactly-zero gradient, whose rounding noise AdamW normalises to full-size steps either way)
        worst = max(float((sa[k] - sb[k]).abs().max() / (sa[k] - s0[k]).abs().max()) for k in moved)
        assert worst < 1e-2, (optimizer, worst)
