"""One cell's work, wherever it runs: the pretrained evaluation, one fine-tune and its evaluation.

Nothing here writes the store; the driver does (see ribench.run.runner).
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import time
from pathlib import Path

import torch

from ribench import __version__
from ribench.data.features import cached_features
from ribench.data.splits import holdout, test_splits_sealed
from ribench.engine.evaluate import accuracy, device_eval_batch_size, evaluate_all
from ribench.engine.trainer import Diverged, check_finite_weights
from ribench.run.spec import Cell, RunSpec, fit_context
from ribench.store import CellRecord


PACKAGE_DIR = Path(__file__).resolve().parent.parent        # the installed ribench package


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ribench source, only when ribench runs from its own git checkout: the repository's
    top level holds this package and tracks it. ribench installed inside another repository (a vendored
    copy, a virtualenv in a project) records no commit rather than that repository's."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_DIR.parent:
        return None
    if _git("ls-files", "--error-unmatch", "--", "__init__.py") is None:      # relative to the package
        return None
    return _git("rev-parse", "HEAD")


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 of the package's Python files (relative path and bytes, in path order): the code that ran,
    however it was installed."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def provenance(spec: RunSpec, pretrained, eval_batch_size: int | None = None) -> dict:
    """How a cell was computed, beside what it is (its identity): code, device, kernels, compile, batch sizes."""
    record = {
        "ribench": __version__, "git_commit": git_commit(), "code_sha256": code_sha256(), "torch": torch.__version__,
        "python": platform.python_version(), "device": spec.device, "kernels": spec.kernels,
        "compile": spec.compile, "threads": torch.get_num_threads(),
        "manifests_sha256": spec.suite.manifest_hash(), "weights_sha256": pretrained.weights_sha256,
    }
    if eval_batch_size is not None:
        record["eval_batch_size"] = eval_batch_size
    return record


def eval_batch_size_of(spec: RunSpec, model, preprocess, load_split) -> int:
    """The batch `model` is evaluated at on the run's device: the protocol's eval_batch_size on CPU, what
    free memory holds on CUDA for images shaped as those of `load_split()` (called, and a split read,
    only on CUDA)."""
    return device_eval_batch_size(model, preprocess, lambda: load_split().images.shape[1:], spec.device,
                                  spec.protocol.eval_batch_size)


def first_test_split(spec: RunSpec):
    """A loader of the first evaluated test split, whose image shape sizes the evaluation batch on CUDA."""
    return lambda: spec.suite.test_split(spec.suite.evaluated[0])


def compile_model(ctx) -> None:
    """--compile: the model's forward through torch.compile, in place, so parameter names (which methods
    look weights up by) and the module the method holds stay the same."""
    if ctx.compile:
        ctx.model.compile()


def pretrained_identity(spec: RunSpec, pretrained) -> dict:
    """What A_pre depends on: one evaluation per (suite, manifests, pretrain, weights)."""
    return {"kind": "pretrained", "suite": spec.suite.name, "manifests": spec.suite.manifest_hash(),
            "pretrain": spec.preset.name, "weights_sha256": pretrained.weights_sha256}


def evaluate_pretrained(spec: RunSpec, pretrained) -> dict:
    """A_pre on every test split."""
    size = eval_batch_size_of(spec, pretrained.model, pretrained.preprocess, first_test_split(spec))
    accuracies, _ = evaluate_all(pretrained.model, pretrained.preprocess, spec.suite, size, spec.device)
    return accuracies


FAILED = "failed"     # a diverged cell: stored so it is not silently recomputed, never reported as a result


def _fit(spec: RunSpec, method, ctx) -> dict:
    """method.fit with every test split sealed, then a check that the fitted weights are finite (Diverged)."""
    with test_splits_sealed(f"method '{spec.label}'"):
        timings = method.fit(ctx)
    check_finite_weights(ctx.model, ctx.step)
    return timings


def failed_record(spec: RunSpec, pretrained, cell: Cell, error: Diverged, started: float) -> CellRecord:
    """The row of a cell whose training diverged: no accuracies, the step and what became non-finite."""
    return CellRecord(
        key=cell.key, suite=spec.suite.name, pretrain=spec.preset.name, method=spec.method_cls.name,
        label=spec.label, dataset=cell.dataset, seed=cell.seed, identity=cell.identity, accuracies={},
        status=FAILED, details={"diverged": {"step": error.step, "what": error.what, "detail": error.detail}},
        timings={"total_s": time.perf_counter() - started}, provenance=provenance(spec, pretrained))


def run_cell(spec: RunSpec, pretrained, cell: Cell, pretrained_acc: dict, ingredients=None):
    """Fine-tune a fresh copy of the pretrained model on one downstream train split, evaluate all.

    Returns the record and the trained model."""
    if spec.holdout is not None:
        return run_selection_cell(spec, pretrained, cell, ingredients)
    start = time.perf_counter()
    torch.manual_seed(cell.seed)
    ctx = fit_context(spec, pretrained, cell.dataset, cell.seed, ingredients=ingredients)
    compile_model(ctx)
    method = spec.method_cls(spec.method_config)
    try:
        timings = _fit(spec, method, ctx)
    except Diverged as error:
        return ctx.model, failed_record(spec, pretrained, cell, error, start)
    learned = method.learned(ctx)
    model = ctx.model      # a method may wrap the model (e.g. a visual prompt)
    t_eval = time.perf_counter()
    size = None
    if spec.method_cls.uses_pretrained_eval:
        accuracies, details = dict(pretrained_acc), {}
    else:
        size = eval_batch_size_of(spec, model, pretrained.preprocess, first_test_split(spec))
        test_features = None
        if spec.method_cls.frozen_backbone:
            def test_features(name):
                return cached_features(pretrained, spec.suite.test_split(name), "test", size, spec.device)
        accuracies, details = evaluate_all(model, pretrained.preprocess, spec.suite, size, spec.device,
                                           test_features)
    if learned:
        details = {**details, "method": learned}
    timings["eval_s"] = time.perf_counter() - t_eval
    timings["total_s"] = time.perf_counter() - start
    return model, CellRecord(
        key=cell.key, suite=spec.suite.name, pretrain=spec.preset.name, method=spec.method_cls.name,
        label=spec.label, dataset=cell.dataset, seed=cell.seed, identity=cell.identity,
        accuracies=accuracies, status="done", details=details, timings=timings,
        provenance=provenance(spec, pretrained, size),
    )


def run_selection_cell(spec: RunSpec, pretrained, cell: Cell, ingredients=None):
    """A selection cell: fine-tune on the fit part of a downstream *train* split, score ID accuracy on its
    held-out part (class-stratified, `spec.holdout` of it). No test split is read."""
    start = time.perf_counter()
    fit, held_out = holdout(spec.suite.train_split(cell.dataset), spec.holdout, cell.seed)
    torch.manual_seed(cell.seed)
    ctx = fit_context(spec, pretrained, cell.dataset, cell.seed, train=fit, ingredients=ingredients)
    compile_model(ctx)
    method = spec.method_cls(spec.method_config)
    try:
        timings = _fit(spec, method, ctx)
    except Diverged as error:
        return ctx.model, failed_record(spec, pretrained, cell, error, start)
    t_eval = time.perf_counter()
    size = eval_batch_size_of(spec, ctx.model, pretrained.preprocess, lambda: held_out)
    accuracies = {"heldout": accuracy(ctx.model, pretrained.preprocess, held_out, size, spec.device),
                  "pretrained_heldout": accuracy(pretrained.model, pretrained.preprocess, held_out, size,
                                                 spec.device)}
    timings["eval_s"] = time.perf_counter() - t_eval
    timings["total_s"] = time.perf_counter() - start
    return ctx.model, CellRecord(
        key=cell.key, suite=spec.suite.name, pretrain=spec.preset.name, method=spec.method_cls.name,
        label=spec.label, dataset=cell.dataset, seed=cell.seed, identity=cell.identity,
        accuracies=accuracies, status="selection", details={"fit": len(fit), "heldout": len(held_out)},
        timings=timings, provenance=provenance(spec, pretrained, size),
    )


def load_pretrained(spec: RunSpec, device: str | None = None):
    """Build the pretrained classifier (fails with the missing file's name before any work).

    `device` overrides the run's: a driver that only plans cells keeps the model on its CPU."""
    pretrained = spec.preset.load(spec.suite, spec.weights)
    pretrained.model.to(device or spec.device).eval()
    spec.suite.adopt_eval_transform(pretrained)
    return pretrained
