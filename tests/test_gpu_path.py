"""The GPU path's parts that run on CPU: --compile and the evaluation batch set by device memory.

Both change how a cell is computed, not what it is: they are in its provenance, never in its identity.
"""

import dataclasses

import pytest
import torch
import torch._dynamo

from ribench.cli.main import main
from ribench.engine import evaluate
from ribench.engine.evaluate import MAX_EVAL_BATCH, device_eval_batch_size, eval_batch_size
from ribench.run import cell as cell_module
from ribench.run.cell import run_cell
from ribench.run.spec import cell_for, resolve, resolve_request

MB, GB = 2 ** 20, 2 ** 30


def test_the_eval_batch_is_what_half_the_free_memory_holds():
    # a ViT-B/16-like forward: 200 MB fixed (autocast's bf16 weights), 5 MB an image
    assert eval_batch_size(140 * GB, 200 * MB, 5 * MB) == MAX_EVAL_BATCH     # an H200: the cap binds
    assert eval_batch_size(8 * GB, 200 * MB, 5 * MB) == 768                   # 779 fit: whole 64s
    assert eval_batch_size(1 * GB, 200 * MB, 5 * MB) == 62                    # under 64: as many as fit
    assert eval_batch_size(300 * MB, 200 * MB, 5 * MB) == 1                   # nothing fits: one at a time
    assert eval_batch_size(8 * GB, 0, 0) == MAX_EVAL_BATCH                    # a probe that measured nothing


def must_not_load():
    raise AssertionError("a test split was read off CUDA")


def test_cuda_asks_the_device_and_cpu_keeps_the_protocols(monkeypatch):
    monkeypatch.setattr(evaluate, "forward_memory", lambda model, preprocess, shape, device: (200 * MB, 5 * MB))
    monkeypatch.setattr(evaluate, "free_device_memory", lambda device: 8 * GB)
    assert device_eval_batch_size(None, None, lambda: (224, 224, 3), "cuda:0", 500) == 768
    assert device_eval_batch_size(None, None, must_not_load, "cpu", 500) == 500
    assert device_eval_batch_size(None, None, must_not_load, "mps", 500) == 500


def test_a_cpu_cell_reads_no_test_split_to_size_its_eval_batch(monkeypatch):
    monkeypatch.setattr(evaluate, "forward_memory", lambda model, preprocess, shape, device: (200 * MB, 5 * MB))
    monkeypatch.setattr(evaluate, "free_device_memory", lambda device: 8 * GB)
    spec = resolve("ft", "rib-tiny", "mini-sup", overrides=["eval_batch_size=123"])
    assert cell_module.eval_batch_size_of(spec, None, None, must_not_load) == 123

    class Split:
        images = torch.zeros(2, 224, 224, 3)
    on_cuda = dataclasses.replace(spec, device="cuda:0")
    assert cell_module.eval_batch_size_of(on_cuda, None, None, lambda: Split()) == 768


def test_compile_is_an_option_of_run_grid_and_tune(capsys):
    for command in ("run", "grid", "tune"):
        assert main([command, "--help"]) == 0
        assert "--compile" in capsys.readouterr().out, command


def test_compile_travels_with_the_request_and_leaves_the_identity(sup):
    plain = resolve("ft", "rib-tiny", "mini-sup", datasets=["sketch"])
    compiled = resolve("ft", "rib-tiny", "mini-sup", datasets=["sketch"], compile=True)
    assert compiled.compile and compiled.request.compile and not plain.compile
    assert resolve_request(compiled.request).compile                  # a worker rebuilds it from the request
    assert cell_for(compiled, sup, "sketch", 0).key == cell_for(plain, sup, "sketch", 0).key


def test_a_compiled_cell_at_another_eval_batch_is_the_same_cell(sup, monkeypatch):
    """ft on rib-tiny compiled and evaluated at batch 30 (as a GPU's memory might set it): the same
    accuracies and identity as the plain cell; provenance records both. The compiled graphs run on
    dynamo's eager backend: inductor's C++ compile of the cell takes minutes on a small CPU (see
    docs/performance.md), and what is tested here is that the model compiles in place and trains."""
    records = {}
    for compiled in (False, True):
        spec = resolve("ft", "rib-tiny", "mini-sup", datasets=["sketch"], overrides=["epochs=1"], compile=compiled)
        if compiled:
            original = torch.nn.Module.compile
            monkeypatch.setattr(torch.nn.Module, "compile", lambda self: original(self, backend="eager"))
            monkeypatch.setattr(cell_module, "eval_batch_size_of", lambda *args: 30)
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
        model, records[compiled] = run_cell(spec, sup, cell_for(spec, sup, "sketch", 0), {})
    assert model._compiled_call_impl is not None and torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    plain, compiled = records[False], records[True]
    assert compiled.identity == plain.identity and compiled.key == plain.key
    assert compiled.accuracies == pytest.approx(plain.accuracies, abs=1e-9)
    assert (plain.provenance["compile"], compiled.provenance["compile"]) == (False, True)
    assert (plain.provenance["eval_batch_size"], compiled.provenance["eval_batch_size"]) == (200, 30)
    assert plain.identity["protocol"]["eval_batch_size"] == 200        # the protocol's, as every cell had it
