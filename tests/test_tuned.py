"""The tuned protocol: recipes, selection on held-out train data (never a test split), tuned runs."""

import json
from pathlib import Path

import pytest

from helpers import run_cli
from ribench.engine.recipe import GRID_SIZE, Recipe
from ribench.errors import ConfigError
from ribench.run.spec import resolve
from ribench.store import Store

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")
FAST = ["--set", "epochs=1"]


def test_a_recipe_grid_is_log_spaced_around_its_centre_and_the_same_size_for_every_method():
    assert Recipe("sgd", 1e-3).grid() == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert Recipe("sgd", 1e-3, tune="lam", centre=0.1).grid() == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert len(Recipe("adamw", 5e-4).grid()) == GRID_SIZE
    protocol = Recipe("adamw", 5e-4, weight_decay=0.1).protocol(resolve("ft", "rib-tiny").suite.protocol, 2e-4)
    assert (protocol.optimizer, protocol.lr, protocol.weight_decay, protocol.epochs) == ("adamw", 2e-4, 0.1, 2)
    with pytest.raises(ValueError, match="needs its centre"):
        Recipe("sgd", 1e-3, tune="lam")


def test_the_grid_follows_a_best_value_at_its_edge_one_step_at_a_time():
    from ribench.run.selection import _beyond
    grid = Recipe("sgd", 1e-3).grid()
    assert _beyond(grid, 1e-5) == 1e-6 and _beyond(grid, 0.1) == 1.0
    assert _beyond(grid, 1e-3) is None and _beyond(grid + [1e-6], 1e-6) == 1e-7
    assert _beyond([0.4, 4.0, 40.0, 400.0, 4000.0], 0.4) == 0.04


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory):
    """ft tuned on the tiny suite's sketch split (5 selection cells), with the user's selections in a temp home."""
    home = tmp_path_factory.mktemp("home")
    store = home / "s.sqlite"
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(home))
    yield store, home, patch
    patch.undo()


def _tune(capsys, store, method, *extra):
    return run_cli(capsys, "tune", "--method", method, "--suite", "rib-tiny", "--include", TINY, "--datasets",
                   "sketch", "--store", str(store), "--no-progress", "--threads", "1", *FAST, *extra)


def test_tune_chooses_on_held_out_train_data_stores_and_resumes(capsys, tuned_store, monkeypatch):
    store, home, _ = tuned_store
    suite_cls = type(resolve("ft", "rib-tiny").suite)
    monkeypatch.setattr(suite_cls, "test_split", lambda self, name: pytest.fail("selection read a test split"))
    code, out, err = _tune(capsys, store, "ft")
    assert code == 0, err
    choice = json.loads((home / "ribench" / "selections" / "rib-tiny.json").read_text())["mini-clip"]["ft"]
    extended = choice["extended"]
    assert sorted(Recipe("sgd", 1e-3).grid() + extended) == choice["grid"] and choice["datasets"] == ["sketch"]
    scores = {float(v): a for v, a in choice["heldout_acc"].items()}
    best = [v for v in choice["grid"] if scores[v] == max(scores.values())]
    if not extended:                                                               # ties go to the recipe's value
        assert choice["value"] == min(best, key=lambda v: abs(choice["grid"].index(v) - 2))
    assert choice["value"] in best and choice["holdout"] == 0.25
    with Store(store) as db:
        cells = db.cells(status="selection")
        assert len(cells) == GRID_SIZE + len(extended) and db.cells() == []   # selection cells stay out of reports
        assert {c.identity["kind"] for c in cells} == {"selection"}
        assert sorted(c.identity["protocol"]["lr"] for c in cells) == choice["grid"]
        assert all(0 <= c.accuracies["heldout"] <= 1 and c.details["heldout"] > 0 for c in cells)
    assert f"ft: lr = {choice['value']:g}" in out
    code, out, err = _tune(capsys, store, "ft")       # resumes: nothing is trained again
    assert code == 0 and err.count("1 of 1 ft[epochs=1") == GRID_SIZE and "already in the store" in err


def test_a_tuned_run_trains_at_the_chosen_value_and_is_reported_apart(capsys, tuned_store):
    store, home, _ = tuned_store
    chosen = json.loads((home / "ribench" / "selections" / "rib-tiny.json").read_text())["mini-clip"]["ft"]["value"]
    spec = resolve("ft", "rib-tiny", overrides=["epochs=1"], protocol="tuned")
    assert (spec.protocol.lr, spec.protocol.optimizer, spec.label) == (chosen, "sgd", "ft[epochs=1]")
    code, out, err = run_cli(capsys, "run", "--method", "ft", "--suite", "rib-tiny", "--include", TINY, "--datasets",
                             "sketch", "--store", str(store), "--no-progress", "--threads", "1", *FAST,
                             "--protocol", "tuned")
    assert code == 0, err
    with Store(store) as db:
        (cell,) = db.cells()
    assert cell.identity["protocol_name"] == "tuned" and cell.identity["selection"] == {"ft": chosen}
    code, out, _ = run_cli(capsys, "results", "--suite", "rib-tiny", "--include", TINY, "--store", str(store),
                           "--protocol", "tuned")
    assert code == 0 and "== ft[epochs=1] ==" in out
    code, _, err = run_cli(capsys, "results", "--suite", "rib-tiny", "--include", TINY, "--store", str(store),
                           "--method", "ft[epochs=1]")
    assert code == 2 and "no stored cells" in err           # the reference view does not mix it in
    wiseft = resolve("wiseft", "rib-tiny", protocol="tuned")      # its ingredient trains under ft's choice
    assert wiseft.selection == {"ft": chosen}


def test_a_strength_is_tuned_at_its_base_methods_chosen_lr(capsys, tuned_store):
    store, home, _ = tuned_store
    selections = home / "ribench" / "selections" / "rib-tiny.json"
    ft_lr = json.loads(selections.read_text())["mini-clip"]["ft"]["value"]
    code, out, err = _tune(capsys, store, "l2sp")
    assert code == 0, err
    choice = json.loads(selections.read_text())["mini-clip"]["l2sp"]
    assert choice["tune"] == "lam" and choice["grid"] == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert choice["recipe"]["lr"] == ft_lr
    spec = resolve("l2sp", "rib-tiny", overrides=["epochs=1"], protocol="tuned")
    assert spec.method_config.lam == choice["value"] and spec.protocol.lr == ft_lr
    assert spec.label == "l2sp[epochs=1]"          # the chosen strength is not a change from the protocol


def test_tuned_without_a_choice_says_how_to_get_one(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no tuned choice for 'lwf' on rib-tiny/mini-clip; run 'ribench tune"):
        resolve("lwf", "rib-tiny", protocol="tuned")
    assert resolve("zeroshot", "rib-tiny", protocol="tuned").protocol == resolve("zeroshot", "rib-tiny").protocol
    # a probe solved by L-BFGS has no lr: tuned runs it as it is (lpft's first stage), lp itself needs a choice
    assert resolve("lp[fit=lbfgs]", "rib-tiny", protocol="tuned").selection == {}
    with pytest.raises(ConfigError, match="no tuned choice for 'lp' on rib-tiny"):
        resolve("lp", "rib-tiny", protocol="tuned")
    code, _, err = run_cli(capsys, "run", "--method", "l2sp", "--suite", "rib-tiny", "--include", TINY,
                           "--protocol", "tuned", "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and "trains at ft's chosen lr" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "tune", "--method", "wiseft", "--suite", "rib-tiny", "--include", TINY,
                           "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and "nothing to tune" in err


def test_lpft_at_any_lr_shares_one_probe_and_wiseft_keeps_the_lr_of_its_ft():
    """The L-BFGS probe has no lr, so lpft's selection grid fits it once, not once per lr value; an
    ingredient that trains under the protocol (ft of wiseft) keeps the user's settings."""
    from ribench.run.spec import ingredient_spec

    probes = {ingredient_spec(resolve("lpft", "rib-tiny", overrides=[f"lr={lr}"]), "lp[fit=lbfgs]").label
              for lr in (1e-4, 1e-3, 0.05)}
    assert probes == {"lp[fit=lbfgs]"}
    ft = ingredient_spec(resolve("wiseft", "rib-tiny", overrides=["lr=0.05"]), "ft")
    assert ft.label == "ft[lr=0.05]" and ft.protocol.lr == 0.05


def test_a_best_value_at_the_grid_edge_extends_the_grid_beyond_it(tmp_path, monkeypatch):
    """Scores that keep rising towards small lrs: two values past the low edge are trained and scored."""
    import ribench.run.selection as selection
    from ribench.registry import include
    from ribench.run.executor import LocalExecutor

    include(TINY)
    monkeypatch.setattr(selection, "_score", lambda store, spec, pretrained: -spec.protocol.lr)
    with Store(tmp_path / "s.sqlite") as store:
        choice = selection.tune("ft", "rib-tiny", "mini-clip", store, LocalExecutor(), overrides=["epochs=1"],
                                datasets=["sketch"], progress=False, log=lambda m: None)
        assert len(store.cells(status="selection")) == GRID_SIZE + selection.EDGE_STEPS
    assert choice["extended"] == [1e-6, 1e-7] and choice["value"] == 1e-7 and choice["at_grid_edge"]
    assert choice["grid"] == [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def test_tune_show_prints_the_shipped_choices_with_the_chosen_value_in_bold(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))          # no user choices: the shipped ones only
    shipped = json.loads((Path(__file__).resolve().parents[1] / "ribench" / "suites" / "selections"
                          / "rib-mini.json").read_text())
    code, out, _ = run_cli(capsys, "tune", "--show", "markdown")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| mini-")]
    assert len(rows) == sum(len(choices) for choices in shipped.values())
    ft = shipped["mini-clip"]["ft"]
    row = next(r for r in rows if r.startswith("| mini-clip | ft |")).split(" | ")
    assert row[4] == f"{ft['value']:g}" and f"**{100 * ft['heldout_acc'][repr(ft['value'])]:.1f}**" in row[6]
    code, _, err = run_cli(capsys, "tune")
    assert code == 2 and "--methods" in err and len(err.strip().splitlines()) == 1
