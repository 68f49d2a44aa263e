"""The `ribench` command: listing, results formats, user errors as one line and exit code 2."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


from helpers import OUTSIDE_METHOD, run_cli

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")
EXTERNAL_METHOD = OUTSIDE_METHOD.replace("{name}", "head-only-sgd")


def tiny_run(*extra):
    return ["run", "--include", TINY, "--suite", "rib-tiny", "--no-progress", *extra]


def test_list_methods_shows_descriptions_and_defaults(capsys):
    code, out, _ = run_cli(capsys, "list", "methods")
    assert code == 0
    for name in ("zeroshot", "ft", "lp", "lpft", "vpt", "lora", "l2sp", "ewc", "lwf", "wiseft", "soup", "flyp"):
        assert any(line.startswith(name + " ") for line in out.splitlines())
    for default in ('"fit": "protocol"', '"rank": 8, "alpha": 16.0', '"alpha": 1.0, "T": 2.0', '"lam": 0.01',
                    '"alpha": 0.5, "base": "ft"', '"ingredients": "pretrained,ft,ewc,lwf"', '"prompt_size": 30'):
        assert default in out
    assert "recipe: adamw lr 0.0005, weight decay 0.1; tunes lr" in out        # lora's, cited after it
    assert "recipe: sgd lr 40, weight decay 0, momentum 0.9; tunes lr" in out  # vpt's


def test_list_datasets_names_what_datasets_accepts(capsys):
    code, out, _ = run_cli(capsys, "list", "datasets")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert list(lines) == ["resample", "sketch", "cartoon", "drawing", "corrupt", "hard", "rendition", "photo"]
    assert "downstream" in lines["sketch"] and "8 classes" in lines["hard"]
    assert "pretraining domain" in lines["photo"]
    code, out, _ = run_cli(capsys, "list", "datasets", "--suite", "imagenet-rib")
    assert code == 0 and "imagenet-sketch" in out and "200 classes" in out
    code, _, err = run_cli(capsys, "list", "datasets", "--suite", "rib-mni")
    assert code == 2 and "did you mean 'rib-mini'?" in err and "Traceback" not in err


def test_list_suites_and_pretrains(capsys):
    assert "rib-mini" in run_cli(capsys, "list", "suites")[1]
    out = run_cli(capsys, "list", "pretrains")[1]
    assert "mini-clip" in out and "mini-sup" in out and "laion2b" in out


@pytest.mark.parametrize("argv, expected", [
    (["run", "--method", "ftt"], "unknown method 'ftt'; did you mean 'ft'?"),
    (["run", "--method", "ft", "--suite", "rib-mni"], "did you mean 'rib-mini'?"),
    (["run", "--method", "ft", "--pretrain", "mini-clp"], "did you mean 'mini-clip'?"),
    (["run", "--method", "ft", "--set", "lr=fast"], "bad value for lr: 'fast' is not a valid float"),
    (["run", "--method", "ft", "--set", "epoch=3"], "did you mean 'epochs'?"),
    (["run", "--method", "lp", "--set", "fit=sgd"], "choose one of protocol, lbfgs"),
    (["run", "--method", "ft", "--set", "epochs=0"], "bad value for epochs"),
    (["run", "--method", "ft", "--set", "epochs"], "expected key=value"),
    (["run", "--method", "ft", "--datasets", "sketchy"], "did you mean 'sketch'?"),
    (["run", "--method", "ft", "--datasets", "photo"], "pretraining-domain set"),
    (["run", "--method", "ft", "--pretrain", "laion2b", "--protocol", "reference"], "run offline with '--pretrain mini-clip'"),
    (["run", "--method", "ft", "--include", "/nonexistent/m.py"], "/nonexistent/m.py"),
    (["results", "--pretrain", "mini-sup"], "no results"),
    (["run", "--method", "flyp", "--pretrain", "mini-sup"], "needs a text tower; pretrain 'mini-sup' has none"),
    (["run", "--method", "lp+lwf"], "regularizers cannot join it"),
    (["run", "--method", "l2sp+ewc", "--set", "lam=1"], "'lam' is ambiguous"),
    (["run", "--method", "wiseft", "--set", "alpha=2"], "must be in [0, 1]"),
    (["run", "--method", "wiseft", "--set", "base=ftt"], "did you mean 'ft'?"),
    (["run", "--method", "lp[fit=lbfgs"], "bad method"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, argv, expected):
    store = tmp_path / "s.sqlite"
    code, out, err = run_cli(capsys, *argv, "--store", str(store))
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ribench: error: ")
    assert "Traceback" not in err


def test_missing_weights_names_the_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "ft", "--pretrain", "laion2b", "--protocol", "reference",
                           "--weights", str(tmp_path / "vit.bin"), "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and str(tmp_path / "vit.bin") in err and "laion2b_s34b_b88k" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_unwritable_store_is_an_error_and_existing_store_untouched(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", str(blocker / "s.sqlite")))
    assert code == 2 and "cannot write results store" in err
    # a bad --set against an existing store leaves its bytes unchanged
    store = tmp_path / "good.sqlite"
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--datasets", "sketch", "--store", str(store)))[0] == 0
    before = store.read_bytes()
    code, _, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=-", "--store", str(store)))
    assert code == 2 and store.read_bytes() == before


def test_external_method_runs_through_include(capsys, tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(EXTERNAL_METHOD)
    store = str(tmp_path / "s.sqlite")
    code, out, err = run_cli(capsys, *tiny_run("--include", str(plugin), "--method", "head-only-sgd",
                                                "--datasets", "sketch", "--set", "scale=0.5", "--store", store))
    assert code == 0, err
    assert "head-only-sgd[scale=0.5]" in out and "mRI" in out


def test_results_formats(capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", store))[0] == 0
    base = ["results", "--store", store, "--pretrain", "mini-clip", "--suite", "rib-tiny"]
    code, out, _ = run_cli(capsys, *base, "--format", "json")
    data = json.loads(out)
    assert code == 0 and "zeroshot" in json.dumps(data)
    code, out, _ = run_cli(capsys, *base, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("table,")
    code, out, _ = run_cli(capsys, *base, "--format", "markdown")
    assert code == 0 and "| " in out and "mRI" in out
    # zero-shot fine-tunes nothing: RI and mRI are exactly zero
    assert "+0.0 ±" in run_cli(capsys, *base)[1]


def _stored_cells(path):
    if not Path(path).exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    """SIGKILL while a cell trains: no half cell is stored; rerunning completes identical results."""
    env = dict(os.environ, RIBENCH_TEST_THREADS="1")
    args = [sys.executable, "-m", "ribench", *tiny_run("--method", "ft", "--datasets", "sketch,cartoon,drawing",
                                                       "--threads", "1", "--set", "epochs=3")]
    killed, clean = str(tmp_path / "killed.sqlite"), str(tmp_path / "clean.sqlite")
    proc = subprocess.Popen(args + ["--store", killed], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _stored_cells(killed) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)   # into the second cell's training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _stored_cells(killed)
    assert 1 <= partial < 3
    subprocess.run(args + ["--store", killed], env=env, check=True, capture_output=True)
    subprocess.run(args + ["--store", clean], env=env, check=True, capture_output=True)

    def table(path):
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT key, accuracies FROM cells ORDER BY key").fetchall()
        return [(k, json.loads(a)) for k, a in rows]

    assert table(killed) == table(clean) and len(table(clean)) == 3
    out = subprocess.run([sys.executable, "-m", "ribench", "results", "--include", TINY, "--suite", "rib-tiny",
                          "--format", "json", "--store", killed], env=env, capture_output=True, text=True)
    ref = subprocess.run([sys.executable, "-m", "ribench", "results", "--include", TINY, "--suite", "rib-tiny",
                          "--format", "json", "--store", clean], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ref.stdout


def test_pretrain_command_writes_weights_and_a_card_that_load_back(capsys, tmp_path):
    """`ribench pretrain` (a 2-step run) writes safetensors + card; the preset loads them."""
    import torch
    from safetensors.torch import load_file

    from ribench.pretrains.base import sha256_file
    from ribench.pretrains.mini import build_mini_sup
    from ribench.suites import rib_mini

    out = tmp_path / "w.safetensors"
    code, _, err = run_cli(capsys, "pretrain", "mini-sup", "--steps", "2", "--out", str(out))
    assert code == 0, err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_file(out) and card["recipe"]["steps"] == 2
    assert set(card["test_accuracy"]) == set(rib_mini.DATASETS)
    pre = build_mini_sup(rib_mini.build(), out)
    assert pre.weights_sha256 == card["sha256"]
    assert torch.equal(pre.model.head.weight, load_file(str(out))["head.weight"])


def test_a_protocol_override_gets_its_own_label(capsys, tmp_path):
    """`--set lr=...` beside a default run in one store: two labels, both reported, nothing refused."""
    store = str(tmp_path / "s.sqlite")
    for extra in ([], ["--set", "lr=0.05", "--set", "optimizer=adamw"]):
        code, out, err = run_cli(capsys, *tiny_run("--method", "lp", "--datasets", "sketch", "--store", store,
                                                    "--threads", "1", *extra))
        assert code == 0, err
    assert "lp[lr=0.05,optimizer=adamw]" in out
    code, out, err = run_cli(capsys, "results", "--store", store, "--suite", "rib-tiny", "--include", TINY)
    assert code == 0, err
    rows = {line.split()[0] for line in out.splitlines() if line.startswith("lp")}
    assert {"lp", "lp[lr=0.05,optimizer=adamw]"} <= rows
    # A label with commas inside its brackets is one method, not three (it used to find no cells).
    code, out, err = run_cli(capsys, "results", "--store", store, "--suite", "rib-tiny", "--include", TINY,
                             "--method", "lp[lr=0.05,optimizer=adamw]")
    assert code == 0, err
    assert "== lp[lr=0.05,optimizer=adamw] ==" in out and "== lp ==" not in out
    code, out, err = run_cli(capsys, "results", "--store", store, "--suite", "rib-tiny", "--include", TINY,
                             "--method", "lp,lp[lr=0.05,optimizer=adamw]", "--compare")
    assert code == 0, err
    assert {"lp", "lp[lr=0.05,optimizer=adamw]"} <= {line.split()[0] for line in out.splitlines()
                                                      if line.startswith("lp")}


def test_a_derived_method_off_protocol_looks_for_its_base_under_the_same_label():
    from ribench.run.runner import keeps_weights
    from ribench.run.spec import ingredient_spec, resolve

    spec = resolve("wiseft", suite="rib-tiny", overrides=["lr=0.05"])
    assert spec.label == "wiseft[lr=0.05]"
    base = ingredient_spec(spec, "ft")
    assert base.label == "ft[lr=0.05]" and base.protocol.lr == 0.05
    assert keeps_weights(base)          # an ingredient keeps its weights whatever the protocol
    tuned = resolve("ewc", "rib-mini", "mini-sup", protocol="tuned")
    assert tuned.method_config.lam != type(tuned.method_config)().lam     # the tuned choice, not the default
    assert keeps_weights(tuned)         # soup's ingredient keeps its weights at its chosen λ too


BROKEN_CONSTRUCTOR = '''
from dataclasses import dataclass
from ribench.catalog import METHODS
from ribench.engine.method import Method


@METHODS.register("broken-init")
class BrokenInit(Method):
    name = "broken-init"
    description = "a plugin whose constructor raises"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def __init__(self, config=None):
        raise ValueError("this plugin cannot be built")
'''


def test_a_plugin_whose_constructor_raises_does_not_break_other_runs(capsys, tmp_path):
    """Runs used to build every registered method to learn which cells keep weights."""
    from ribench.run.runner import _default_ingredient_labels

    plugin = tmp_path / "broken.py"
    plugin.write_text(BROKEN_CONSTRUCTOR)
    _default_ingredient_labels.cache_clear()
    try:
        code, out, err = run_cli(capsys, *tiny_run("--method", "lp", "--datasets", "sketch", "--include", str(plugin),
                                                    "--store", str(tmp_path / "s.sqlite"), "--threads", "1"))
    finally:
        _default_ingredient_labels.cache_clear()
    assert code == 0, err
    assert "1 cell(s) run" in out
