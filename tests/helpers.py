"""Training one method on a tiny suite, the way a runner cell does, without evaluation."""

import torch

from ribench.run.spec import fit_context, resolve


def fit_method(pretrained, method, overrides=(), seed=0, dataset="sketch", ingredients=None,
               suite="rib-tiny", finish=True):
    """(model after fit, ctx, method instance) of one cell's training on `dataset`."""
    spec = resolve(method, suite, pretrained.name, datasets=[dataset], seeds=[seed], overrides=overrides)
    ctx = fit_context(spec, pretrained, dataset, seed, ingredients=ingredients)
    torch.manual_seed(seed)
    instance = spec.method_cls(spec.method_config)
    if not finish:
        instance.finish = lambda ctx: None
    instance.fit(ctx)
    return ctx.model, ctx, instance


def closed_form_and_autograd(pretrained, method):
    """(ctx, trained weights, their closed-form penalty gradients, autograd of `value`) at θ0 + noise.

    The model is trained briefly, moved off θ0 everywhere (so |θ − θ0| is differentiable),
    and the method's `after_backward` and `value(ctx).backward()` are read on zeroed grads.
    """
    _, ctx, instance = fit_method(pretrained, method, overrides=["epochs=1"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ctx.model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
                p.grad = torch.zeros_like(p)
    instance.after_backward(ctx)
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    closed = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    instance.value(ctx).backward()
    auto = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return ctx, instance, params, closed, auto


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_keys(before, after):
    return sorted(k for k in before if k in after and not torch.equal(before[k], after[k]))


# A method defined outside the repository (written to a file, or packaged with an entry point).
OUTSIDE_METHOD = '''
from dataclasses import dataclass
from ribench.catalog import METHODS
from ribench.engine.method import Method, ParamGroup


@METHODS.register("{name}", description="an outside method: trains only the head")
class HeadOnly(Method):
    name = "{name}"
    description = "an outside method: trains only the head"
    paper = "https://example.org/head-only"

    @dataclass
    class Config:
        scale: float = 1.0

    def param_groups(self, ctx):
        return [ParamGroup(list(ctx.model.head.parameters()), self.config.scale, "head")]
'''


# A method that raises on one dataset: its cell must be named, the others stored.
RAISING_METHOD = '''
from dataclasses import dataclass
from ribench.catalog import METHODS
from ribench.engine.method import Method


@METHODS.register("{name}")
class RaisesOnSketch(Method):
    name = "{name}"
    description = "fails on one dataset, to test that a failing cell is named and the others are stored"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def prepare(self, ctx):
        if ctx.train.dataset == "sketch":
            raise RuntimeError("boom in prepare")
'''


def run_cli(capsys, *argv):
    from ribench.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
