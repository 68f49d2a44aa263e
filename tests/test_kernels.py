"""ribench.kernels on CPU, under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
each kernel against its torch reference at sizes that are not multiples of its blocks, and the
methods that use them against their torch path."""

import pytest
import torch

from ribench.methods._importance import importance
from ribench.errors import ConfigError
from ribench.kernels import resolve_kernels
from ribench.toolkit.gradients import _hookable_layers, per_sample_gradient_means
from ribench.toolkit.layers import image_parameters

triton = pytest.importorskip("triton")
from ribench.kernels.sample_stats import linear_sample_stats_torch, linear_sample_stats_triton  # noqa: E402


@pytest.mark.parametrize("samples, tokens, n_in, n_out", [(3, 17, 33, 45), (5, 1, 20, 7), (2, 65, 130, 30)])
@pytest.mark.parametrize("statistics", [("sq", "abs"), ("abs",), ("sq",)])
def test_the_sample_statistics_kernel_matches_its_torch_reference(samples, tokens, n_in, n_out, statistics):
    generator = torch.Generator().manual_seed(samples * tokens)
    x = torch.randn(samples, tokens, n_in, generator=generator)
    g = torch.randn(samples, tokens, n_out, generator=generator)
    start = torch.rand(n_out, n_in, generator=generator)          # the kernel adds to what is there
    expected = {s: start.double().clone() for s in statistics}
    linear_sample_stats_torch(x, g, expected)
    found = {s: start.clone() for s in statistics}
    linear_sample_stats_triton(x, g, found)
    for s in statistics:
        assert torch.allclose(found[s].double(), expected[s], rtol=1e-5, atol=1e-5), s
    # not Σ_n G_n squared: the statistic is of each sample's gradient, which a batched gradient cannot give
    batched = torch.einsum("nto,nti->oi", g, x).pow(2)
    if "sq" in statistics:
        assert not torch.allclose(found["sq"] - start, batched, rtol=1e-2)


@pytest.mark.parametrize("pretrain", ["clip", "sup"])
def test_per_sample_statistics_with_kernels_equal_vmaps(pretrain, request):
    """On both pretrain models: the hooked layers' statistics (kernel) and the rest (vmap) equal
    vmap's for every weight; the layers vmap keeps are those that never run as modules."""
    pretrained = request.getfixturevalue(pretrain)
    split = request.getfixturevalue("tiny_suite").train_split("sketch")
    params = dict(image_parameters(pretrained.model))
    torch_path = per_sample_gradient_means(pretrained.model, params, split, pretrained.preprocess, ("sq", "abs"),
                                           max_samples=6)
    kernel_path = per_sample_gradient_means(pretrained.model, params, split, pretrained.preprocess,
                                            ("sq", "abs"), max_samples=6, kernels="triton")
    for s in ("sq", "abs"):
        for name, expected in torch_path[s].items():
            scale = expected.abs().max().clamp_min(1e-20)
            assert float((kernel_path[s][name] - expected).abs().max() / scale) < 1e-4, (s, name)
    hooked = {w for (w, _), _ in _hookable_layers(pretrained.model, params, split, pretrained.preprocess,
                                               "cpu").values()}
    linear = {n for n in params if n.endswith(".weight") and params[n].dim() in (2, 4)}
    assert len(hooked) >= len(linear) // 2                      # most weights went through the kernel
    if pretrain == "clip":                                       # open_clip's attention calls its weights
        assert not any("attn.out_proj" in n or "in_proj" in n for n in hooked)
    else:
        assert any("attn.qkv" in n for n in hooked) and any("patch_embed" in n for n in hooked)


def test_importance_and_its_mask_are_the_same_with_kernels(clip, tiny_suite):
    """imp-reg's importance r and the top weights imp-select would train do not depend on --kernels
    (EWC's Fisher is the same pass with Σ g²: the test above)."""
    split = tiny_suite.train_split("sketch")

    class Ctx:
        model, train, preprocess, device = clip.model, split, clip.preprocess, "cpu"

    scores = {}
    for kernels in ("torch", "triton"):
        Ctx.kernels = kernels
        scores[kernels] = importance(Ctx, max_samples=8)
    for name, r in scores["torch"].items():
        assert float((scores["triton"][name] - r).abs().max() / r.abs().max()) < 1e-4, name
    flat = {k: torch.cat([v.flatten() for v in s.values()]) for k, s in scores.items()}
    top = {k: set(torch.topk(v, 200).indices.tolist()) for k, v in flat.items()}
    assert len(top["torch"] & top["triton"]) >= 198              # the same 0.1%-style mask, up to near-ties


def test_auto_chooses_torch_on_cpu_and_triton_is_refused_there_without_the_interpreter(monkeypatch):
    assert resolve_kernels("auto", "cpu") == "torch"
    assert resolve_kernels("triton", "cpu") == "triton"          # the interpreter is on in tests
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ConfigError, match="on CPU only under TRITON_INTERPRET=1"):
        resolve_kernels("triton", "cpu")
    assert resolve_kernels("triton", "cuda", check=False) == "triton"   # a driver planning for GPU workers
    with pytest.raises(ConfigError, match="unknown --kernels"):
        resolve_kernels("fast", "cpu")


def _optimizer_reference(kind, theta, grads, anchor, weight, lam, penalty):
    """torch.optim's own SGD / AdamW on θ, with the penalty gradient added to g before each step."""
    p = torch.nn.Parameter(theta.clone())
    opt = (torch.optim.SGD([p], lr=0.05, momentum=0.9) if kind == "sgd"
           else torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1))
    for g in grads:
        pull = (p.detach() - anchor) if penalty == "quadratic" else torch.sign(p.detach() - anchor)
        extra = 0 if penalty == "none" else lam * (pull if weight is None else weight * pull)
        p.grad = g + extra
        opt.step()
    return p.detach()


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("penalty, weighted", [("none", False), ("quadratic", False), ("quadratic", True),
                                               ("sign", True)])
def test_the_fused_penalised_step_follows_torch_optim(kind, penalty, weighted):
    """l2sp (quadratic), ewc (quadratic, Fisher-weighted), imp-reg (sign, importance-weighted) and plain
    steps: the torch path equals torch.optim's step on the penalised gradient, and the kernel equals it,
    over 3 steps on 2,500 weights (not a multiple of the 1,024-wide block)."""
    from ribench.kernels import penalised_step as fused

    generator = torch.Generator().manual_seed(7)
    n = 2500
    theta = torch.randn(n, generator=generator)
    anchor = theta + 0.1 * torch.randn(n, generator=generator)
    weight = torch.rand(n, generator=generator) if weighted else None
    grads = [torch.randn(n, generator=generator) for _ in range(3)]
    lam = 0.3
    expected = _optimizer_reference(kind, theta, grads, anchor, weight, lam, penalty)
    for step_fn in ((fused.penalised_sgd_torch, fused.penalised_sgd_triton) if kind == "sgd"
                    else (fused.penalised_adamw_torch, fused.penalised_adamw_triton)):
        found = theta.clone()
        state = [torch.zeros(n) for _ in range(1 if kind == "sgd" else 2)]
        for step, g in enumerate(grads, start=1):
            if kind == "sgd":
                step_fn(found, g, *state, anchor, weight, lr=0.05, lam=lam, momentum=0.9, penalty=penalty,
                        first=step == 1)
            else:
                step_fn(found, g, *state, anchor, weight, lr=0.01, lam=lam, betas=(0.9, 0.999), eps=1e-8,
                        weight_decay=0.1, step=step, penalty=penalty)
        assert torch.allclose(found, expected, rtol=1e-5, atol=1e-6), step_fn.__name__
    assert not torch.allclose(found, theta)                     # it moved


def _gpu_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_its_code_on_a_tiny_vit_on_cpu(tmp_path, capsys):
    """The script a GPU session runs, on CPU: every measurement is made and written (the numbers are
    CPU's and mean nothing); without CUDA its default says so and exits 0."""
    import json

    bench = _gpu_benchmark()
    assert bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--repeats", "1"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["flops_per_training_image"] > 0 and all(r["images_per_s"] > 0 for r in result["ft"])
    assert result["kernels"] == "triton"                         # interpreted: the kernel rows are measured
    assert all("fused_ms" in result["penalties"][m] for m in ("l2sp", "ewc", "imp-reg"))
    assert {"torch_s", "triton_s", "torch_in_ft_images"} <= set(result["sample_statistics"])
    assert result["decoding"]["images"] == 32 and result["decoding"]["over_ft_training"] > 0
    steps = result["methods"]
    assert steps["ft (sgd)"]["torch_over_ft"] == 1.0 and all(
        row["triton_ms"] > 0 for label, row in steps.items() if not label.startswith("ft "))
    assert "triton_ms" in result["kernel"] and (tmp_path / "results.md").read_text().startswith("GPU benchmark")
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert bench.main(["--out", str(tmp_path / "none")]) == 0
        assert "no CUDA device here" in capsys.readouterr().out and not (tmp_path / "none").exists()


def test_digraps_segmented_projection_matches_its_per_layer_torch_reference():
    """Five sums per layer and step 4 over layers of odd sizes (one smaller than a block, one spanning
    three): two launches equal the per-tensor torch code."""
    from ribench.kernels import projection

    generator = torch.Generator().manual_seed(3)
    sizes = [5, 2500, 1024, 77]
    n = sum(sizes)
    theta, anchor, grad, prev = (torch.randn(n, generator=generator) for _ in range(4))
    starts, owners = projection.layer_blocks(sizes)
    assert owners.tolist() == [0, 1, 1, 1, 2, 3]               # no block straddles two layers
    expected = projection.layer_sums_torch(theta, anchor, grad, prev, starts)
    found = projection.layer_sums_triton(theta, anchor, grad, prev, starts, owners)
    assert torch.allclose(found, expected, rtol=1e-4, atol=1e-3)
    coef = torch.tensor([0.5, -0.25, 0.0, 2.0])
    g_ref, r_ref = grad.clone(), torch.empty(n)
    projection.project_torch(theta, anchor, g_ref, r_ref, coef, starts)
    g_new, r_new = grad.clone(), torch.empty(n)
    projection.project_triton(theta, anchor, g_new, r_new, coef, starts, owners)
    assert torch.allclose(r_new, theta - anchor) and torch.allclose(g_new, g_ref, atol=1e-6)
    assert torch.equal(g_new[5 + 2500:5 + 2500 + 1024], grad[5 + 2500:5 + 2500 + 1024])   # coef 0: untouched


def _fit_with(pretrained, method, kernels, overrides=()):
    from ribench.run.spec import fit_context, resolve

    spec = resolve(method, "rib-tiny", pretrained.name, datasets=["sketch"], seeds=[0],
                   overrides=["epochs=1", *overrides], kernels=kernels)
    ctx = fit_context(spec, pretrained, "sketch", 0)
    torch.manual_seed(0)
    instance = spec.method_cls(spec.method_config)
    instance.fit(ctx)
    return ctx, instance


def _largest_update_difference(a, b) -> float:
    """max over trained tensors of ‖θ_a − θ_b‖ / ‖θ_a − θ0‖: how far apart two runs' updates are."""
    start = dict(a.pretrained.named_parameters())
    found = dict(b.model.named_parameters())
    worst = 0.0
    for name, p in a.model.named_parameters():
        if p.requires_grad and name in start:
            moved = float((p - start[name]).norm())
            worst = max(worst, float((p - found[name]).norm()) / max(moved, 1e-12))
    return worst


@pytest.mark.parametrize("method, overrides", [
    ("l2sp", ["lam=0.5"]),                                   # quadratic, backbone only (head weight 0)
    ("ewc-rib", []),                                         # quadratic on every weight, w ≡ 1
    ("ewc", ["fisher_samples=4", "lam=0.5"]),                # quadratic, Fisher-weighted
    ("imp-reg", ["samples=4", "lam=0.5"]),                   # sign, importance-weighted
    ("digrap", ["mu=0.1"]),                                  # the segmented projection
])
def test_methods_train_alike_through_the_fused_flat_step(clip, method, overrides):
    """With --kernels triton the loop lays the weights out flat and the penalty (or DiGraP's projection)
    runs in the kernels; one epoch ends where the torch path ends, to float tolerance, and the
    penalty was added once (folded, not also after backward). imp-reg's sign(θ − θ0) turns rounding
    into a full λ·r̄ where a weight sits at its anchor (one weight in 37k flipped once), so its
    tolerance is looser than the quadratic penalties' and the projection's (measured ≤ 2e-5)."""
    from ribench.kernels.fused_optimizer import FusedPenalisedOptimizer

    torch_ctx, torch_method = _fit_with(clip, method, "torch", overrides)
    kernel_ctx, kernel_method = _fit_with(clip, method, "triton", overrides)
    assert isinstance(kernel_ctx.optimizer, FusedPenalisedOptimizer)
    assert not isinstance(torch_ctx.optimizer, FusedPenalisedOptimizer)
    assert _largest_update_difference(torch_ctx, kernel_ctx) < (2e-2 if method == "imp-reg" else 1e-4)
    if method == "digrap":
        omega_torch, omega_kernel = (m.learned(c)["omega"] for m, c in ((torch_method, torch_ctx),
                                                                         (kernel_method, kernel_ctx)))
        assert omega_kernel.keys() == omega_torch.keys() and max(omega_torch.values()) > 0   # ω learned
        assert max(abs(omega_kernel[k] - omega_torch[k]) for k in omega_torch) < 1e-3
    else:
        assert kernel_method.weight_penalty(kernel_ctx).folded
        assert not torch_method.weight_penalty(torch_ctx).folded
    # the trained weights own their storage again (a saved state dict holds only them)
    p = next(p for p in kernel_ctx.model.parameters() if p.requires_grad)
    assert p.untyped_storage().nbytes() == p.numel() * 4 and p.grad is None


@pytest.mark.parametrize("method, overrides", [("l2sp", ["lam=0"]),
                                               ("digrap", ["learn_omega=false", "omega_init=0"])])
def test_the_ft_identities_hold_with_kernels(clip, method, overrides):
    """METHODS.md: l2sp with λ = 0 and DiGraP with ω ≡ 0 are ft bit for bit; with --kernels triton too
    (nothing to fold or project, so the loop keeps torch's optimizer)."""
    ft_ctx, _ = _fit_with(clip, "ft", "triton")
    other_ctx, _ = _fit_with(clip, method, "triton", overrides)
    found = dict(other_ctx.model.named_parameters())
    assert all(torch.equal(p, found[n]) for n, p in ft_ctx.model.named_parameters())


def test_two_penalties_are_not_folded_into_one_step(clip):
    """The step folds one penalty; `l2sp+ewc` keeps both after backward and torch's optimizer."""
    ctx, method = _fit_with(clip, "l2sp+ewc", "triton", ["fisher_samples=4"])
    assert isinstance(ctx.optimizer, torch.optim.SGD) and method.weight_penalty(ctx) is None
    assert not any(reg.weight_penalty(ctx).folded for reg in method.regs)


def test_flat_weights_are_views_that_train_in_place_and_are_given_back():
    from ribench.kernels.flat import FlatWeights

    layer = torch.nn.Linear(5, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    flat = FlatWeights(list(layer.parameters()))
    assert len(flat) == 18 and flat.span([layer.bias]) == (15, 18)
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before))
    layer(torch.ones(2, 5)).sum().backward()                   # autograd adds into the flat gradient
    assert torch.equal(flat.grad[15:], torch.full((3,), 2.0))
    layer.bias.grad = torch.full((3,), 7.0)                     # a hook that replaces a gradient
    flat.collect_gradients()
    assert torch.equal(flat.grad[15:], torch.full((3,), 7.0)) and layer.bias.grad.data_ptr() == flat.grad[15:].data_ptr()
    flat.data.add_(1.0)                                         # a step on the buffer moves the weights
    assert torch.equal(layer.bias, before[1] + 1)
    assert torch.equal(flat.gather({id(layer.bias): torch.zeros(3)}, fill=5.0),
                       torch.cat([torch.full((15,), 5.0), torch.zeros(3)]))
    with pytest.raises(ValueError, match="not consecutive"):
        flat.span([layer.bias, layer.weight])
    flat.release()
    assert layer.weight.untyped_storage().nbytes() == 15 * 4 and layer.weight.grad is None


def test_the_python_api_takes_kernels_and_compile_as_the_cli_does(tmp_path):
    """ribench.api.run(kernels=..., compile=...) reaches the cell: its provenance records both."""
    import ribench.api as rb
    from ribench.store import Store

    store = tmp_path / "results.sqlite"
    rb.run("l2sp", suite="rib-tiny", datasets=["sketch"], overrides=["epochs=1"], store=store, kernels="triton",
           log=lambda *a: None)
    with Store(store, readonly=True) as db:
        (cell,) = db.cells(method="l2sp")
    assert cell.provenance["kernels"] == "triton" and cell.provenance["compile"] is False
