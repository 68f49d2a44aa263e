import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from ribench.errors import ConfigError
from ribench.report.format import format_summary
from ribench.report.metrics import accuracy_frame, bootstrap_interval, summarize
from ribench.store import CellRecord, cell_key

DOWNSTREAM = ["a", "b", "c"]
PRE = "pre"  # the pretraining-domain evaluation set
A_PRE = {"a": 0.50, "b": 0.40, "c": 0.30, PRE: 0.80}

# ACC[seed][trained_on] = accuracies on every evaluated set after fine-tuning.
ACC = {
    0: {
        "a": {"a": 0.90, "b": 0.45, "c": 0.20, PRE: 0.70},
        "b": {"a": 0.40, "b": 0.80, "c": 0.36, PRE: 0.75},
        "c": {"a": 0.56, "b": 0.50, "c": 0.70, PRE: 0.60},
    },
    1: {
        "a": {"a": 0.80, "b": 0.35, "c": 0.30, PRE: 0.80},
        "b": {"a": 0.50, "b": 0.70, "c": 0.40, PRE: 0.70},
        "c": {"a": 0.46, "b": 0.38, "c": 0.60, PRE: 0.60},
    },
}

# Hand computation, RI_i = mean over j in downstream, j != i, of A_i^(j) - A_pre^(j):
# seed 0: RI_a = ((.45-.40) + (.20-.30)) / 2 = (.05 - .10) / 2 = -.025
#         RI_b = ((.40-.50) + (.36-.30)) / 2 = (-.10 + .06) / 2 = -.020
#         RI_c = ((.56-.50) + (.50-.40)) / 2 = (.06 + .10) / 2  =  .080
#         mRI = (-.025 - .020 + .080) / 3 = .035 / 3 = .011667
#         ID = (.90 + .80 + .70) / 3 = .80; ID_gain = ((.90-.50) + (.80-.40) + (.70-.30)) / 3 = .40
#         pretrain_acc = (.70 + .75 + .60) / 3 = .683333; forgetting = .80 - .683333 = .116667
# seed 1: RI_a = ((.35-.40) + (.30-.30)) / 2 = -.025
#         RI_b = ((.50-.50) + (.40-.30)) / 2 =  .050
#         RI_c = ((.46-.50) + (.38-.40)) / 2 = (-.04 - .02) / 2 = -.030
#         mRI = (-.025 + .050 - .030) / 3 = -.005 / 3 = -.001667
#         ID = (.80 + .70 + .60) / 3 = .70; ID_gain = (.30 + .30 + .30) / 3 = .30
#         pretrain_acc = (.80 + .70 + .60) / 3 = .70; forgetting = .80 - .70 = .10
# across seeds: mRI mean = (.011667 - .001667) / 2 = .005, std = |.011667 + .001667| / sqrt(2) = .013333 / 1.414214
RI_SEED = {0: {"a": -0.025, "b": -0.020, "c": 0.080}, 1: {"a": -0.025, "b": 0.050, "c": -0.030}}
MRI_SEED = {0: 0.035 / 3, 1: -0.005 / 3}
PER_SEED = {
    "mRI": MRI_SEED,
    "ID": {0: 0.80, 1: 0.70},
    "ID_gain": {0: 0.40, 1: 0.30},
    "pretrain_acc": {0: 2.05 / 3, 1: 0.70},
    "forgetting": {0: 0.80 - 2.05 / 3, 1: 0.10},
}


def make_cell(label, trained, seed, accuracies, method=None):
    identity = {"label": label, "dataset": trained, "seed": seed}
    return CellRecord(
        key=cell_key(identity),
        suite="toy",
        pretrain="toy-pre",
        method=method or label,
        label=label,
        dataset=trained,
        seed=seed,
        identity=identity,
        accuracies=dict(accuracies),
    )


def toy_cells(label="ft", seeds=(0, 1), skip=()):
    return [
        make_cell(label, trained, seed, ACC[seed][trained])
        for seed in seeds
        for trained in DOWNSTREAM
        if (trained, seed) not in skip
    ]


def overall_row(summary, label, metric):
    frame = summary.overall
    (row,) = frame[(frame["label"] == label) & (frame["metric"] == metric)].to_dict("records")
    return row


def test_accuracy_frame_long_format():
    frame = accuracy_frame(toy_cells())
    assert list(frame.columns) == ["label", "method", "dataset", "seed", "evaluated", "accuracy"]
    assert len(frame) == 2 * 3 * 4
    row = frame[(frame.seed == 1) & (frame.dataset == "c") & (frame.evaluated == "b")]
    assert row["accuracy"].item() == pytest.approx(0.38)
    assert accuracy_frame([]).empty


def test_hand_computed_metrics():
    summary = summarize(toy_cells(), A_PRE, DOWNSTREAM, PRE)
    for metric, by_seed in PER_SEED.items():
        values = [by_seed[0], by_seed[1]]
        row = overall_row(summary, "ft", metric)
        assert row["mean"] == pytest.approx(np.mean(values)), metric
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2)), metric
        assert row["n_seeds"] == 2 and row["complete"]
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert overall_row(summary, "ft", "mRI")["mean"] == pytest.approx(0.005)
    assert overall_row(summary, "ft", "ID_gain")["mean"] == pytest.approx(0.35)
    assert overall_row(summary, "ft", "forgetting")["mean"] == pytest.approx((0.80 - 2.05 / 3 + 0.10) / 2)

    ri = summary.ri.set_index("dataset")
    for trained in DOWNSTREAM:
        values = [RI_SEED[0][trained], RI_SEED[1][trained]]
        assert ri.loc[trained, "mean"] == pytest.approx(np.mean(values))
        assert ri.loc[trained, "std"] == pytest.approx(np.std(values, ddof=1))
    assert ri.loc["a", "std"] == pytest.approx(0.0)

    per_seed = summary.per_seed.set_index(["seed", "metric"])["value"]
    assert per_seed[(0, "mRI")] == pytest.approx(MRI_SEED[0])
    assert per_seed[(1, "mRI")] == pytest.approx(MRI_SEED[1])

    matrix = summary.matrix_for("ft")
    assert list(matrix.columns) == [*DOWNSTREAM, PRE]
    assert list(matrix.index) == ["pretrained", *DOWNSTREAM]
    assert matrix.loc["pretrained", "b"] == pytest.approx(0.40)
    assert matrix.loc["c", "a"] == pytest.approx((0.56 + 0.46) / 2)
    assert matrix.loc["a", PRE] == pytest.approx((0.70 + 0.80) / 2)


def test_ri_excludes_trained_dataset_and_pretraining_set():
    cells = toy_cells(seeds=(0,))
    changed = []
    for cell in cells:
        if cell.dataset == "a":
            cell.accuracies = {**cell.accuracies, "a": 0.01, PRE: 0.01, "extra": 0.99}
        changed.append(cell)
    summary = summarize(changed, A_PRE, DOWNSTREAM, PRE)
    ri = summary.ri.set_index("dataset")
    assert ri.loc["a", "mean"] == pytest.approx(-0.025)  # unaffected by A_a^(a), A_a^(P) and unknown sets
    assert "extra" not in summary.matrix.columns


def test_bootstrap_degenerate_for_one_seed_and_contains_mean():
    summary = summarize(toy_cells(seeds=(0,)), A_PRE, DOWNSTREAM, PRE)
    row = overall_row(summary, "ft", "mRI")
    assert row["mean"] == pytest.approx(MRI_SEED[0])
    assert row["ci_low"] == row["ci_high"] == row["mean"]
    assert math.isnan(row["std"]) and row["n_seeds"] == 1

    values = [0.1, 0.4, 0.2, 0.35, 0.3]
    low, high = bootstrap_interval(values)
    assert min(values) <= low < np.mean(values) < high <= max(values)
    assert bootstrap_interval(values) == (low, high)  # seeded: reproducible
    assert bootstrap_interval([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_intervals_carry_the_test_sets_sampling_error():
    """One seed has no seed spread; its interval is then the test sets' binomial error alone."""
    sizes = {"a": 100, "b": 400, "c": 2500, PRE: 1000}
    summary = summarize(toy_cells(seeds=(0,)), A_PRE, DOWNSTREAM, PRE, sizes)
    acc = ACC[0]
    # ID over three independent test sets: se = sqrt(sum p(1-p)/N) / 3
    se_id = math.sqrt(sum(acc[i][i] * (1 - acc[i][i]) / sizes[i] for i in DOWNSTREAM)) / 3
    row = overall_row(summary, "ft", "ID")
    assert row["test_se"] == pytest.approx(se_id)
    assert row["ci_high"] - row["mean"] == pytest.approx(1.959964 * se_id)
    assert row["mean"] - row["ci_low"] == pytest.approx(1.959964 * se_id)
    # forgetting: every cell meets the one pretraining-domain test set, so the errors are averaged
    se_pre = sum(math.sqrt(acc[i][PRE] * (1 - acc[i][PRE]) / sizes[PRE]) for i in DOWNSTREAM) / 3
    assert overall_row(summary, "ft", "forgetting")["test_se"] == pytest.approx(se_pre)
    # RI_a over b and c
    se_ri_a = math.sqrt(acc["a"]["b"] * (1 - acc["a"]["b"]) / 400 + acc["a"]["c"] * (1 - acc["a"]["c"]) / 2500) / 2
    ri = summary.ri.set_index(["label", "dataset"]).loc[("ft", "a")]
    assert ri["test_se"] == pytest.approx(se_ri_a)
    # with two seeds the seed interval widens by the test error in quadrature, never shrinks
    seeds_only = overall_row(summarize(toy_cells(), A_PRE, DOWNSTREAM, PRE), "ft", "ID_gain")
    both = overall_row(summarize(toy_cells(), A_PRE, DOWNSTREAM, PRE, sizes), "ft", "ID_gain")
    assert math.isnan(seeds_only["test_se"])
    assert both["ci_low"] < seeds_only["ci_low"] and both["ci_high"] > seeds_only["ci_high"]
    half = seeds_only["ci_high"] - seeds_only["mean"]
    assert both["ci_high"] - both["mean"] == pytest.approx(math.sqrt(half ** 2 + (1.959964 * both["test_se"]) ** 2))


def test_missing_cell_marks_incomplete_and_uses_present_cells():
    summary = summarize(toy_cells(skip={("c", 1)}), A_PRE, DOWNSTREAM, PRE)
    row = overall_row(summary, "ft", "mRI")
    assert not row["complete"]
    seed1 = (-0.025 + 0.050) / 2  # RI_a and RI_b only
    assert row["mean"] == pytest.approx((MRI_SEED[0] + seed1) / 2)
    ri_c = summary.ri.set_index("dataset").loc["c"]
    assert ri_c["n_seeds"] == 1 and ri_c["mean"] == pytest.approx(0.080)
    per_seed = summary.per_seed
    assert per_seed[per_seed.seed == 0]["complete"].all() and not per_seed[per_seed.seed == 1]["complete"].any()


def test_several_labels_are_kept_apart():
    other = [make_cell("l2sp[lam=0.1]", cell.dataset, cell.seed, A_PRE, method="l2sp") for cell in toy_cells()]
    summary = summarize(toy_cells() + other, A_PRE, DOWNSTREAM, PRE)
    assert summary.labels == ["ft", "l2sp[lam=0.1]"]
    row = overall_row(summary, "l2sp[lam=0.1]", "mRI")
    assert row["mean"] == pytest.approx(0.0) and row["std"] == pytest.approx(0.0)
    assert overall_row(summary, "l2sp[lam=0.1]", "forgetting")["mean"] == pytest.approx(0.0)
    assert overall_row(summary, "ft", "mRI")["mean"] == pytest.approx(0.005)


def test_input_errors():
    with pytest.raises(ConfigError, match="no pretrained accuracy for c"):
        summarize(toy_cells(), {"a": 0.5, "b": 0.4, PRE: 0.8}, DOWNSTREAM, PRE)
    with pytest.raises(ConfigError, match="two results for label 'ft'"):
        summarize(toy_cells() + toy_cells(seeds=(0,))[:1], A_PRE, DOWNSTREAM, PRE)
    with pytest.raises(ConfigError, match="also listed as a downstream"):
        summarize(toy_cells(), A_PRE, [*DOWNSTREAM, PRE], PRE)


def test_formats():
    summary = summarize(toy_cells(), A_PRE, DOWNSTREAM, PRE)

    table = format_summary(summary, "table")
    # mRI: mean .005, std .009428, CI over 2 seeds = [-.001667, .011667], in percentage points.
    assert "+0.5 ± 0.9 [-0.2, +1.2] (2 seeds)" in table
    assert "== ft ==" in table and "pretrained" in table and "\n" in table
    matrix_lines = [line for line in table.splitlines() if line.startswith(("pretrained", "a ", "b ", "c "))]
    assert len({len(line) for line in matrix_lines[:4]}) == 1  # aligned columns

    markdown = format_summary(summary, "markdown")
    assert "### ft" in markdown and "| trained on \\ evaluated | a | b | c | pre |" in markdown

    frame = pd.read_csv(io.StringIO(format_summary(summary, "csv")))
    mri = frame[(frame["table"] == "overall") & (frame["metric"] == "mRI")]
    assert mri["mean"].item() == pytest.approx(0.005)
    assert mri["n_seeds"].item() == 2
    assert (frame["units"] == "fraction").all()
    cell = frame[(frame["table"] == "matrix") & (frame["trained_on"] == "c") & (frame["evaluated"] == "a")]
    assert cell["mean"].item() == pytest.approx(0.51)

    document = json.loads(format_summary(summary, "json"))
    assert document["units"].startswith("fraction")
    assert document["labels"]["ft"]["overall"]["mRI"]["mean"] == pytest.approx(0.005)
    assert document["labels"]["ft"]["overall"]["mRI"]["complete"] is True
    assert document["labels"]["ft"]["ri"]["b"]["mean"] == pytest.approx(0.015)
    assert document["labels"]["ft"]["matrix"]["pretrained"]["pre"] == pytest.approx(0.80)

    one_seed = json.loads(format_summary(summarize(toy_cells(seeds=(0,)), A_PRE, DOWNSTREAM, PRE), "json"))
    assert one_seed["labels"]["ft"]["overall"]["mRI"]["std"] is None  # NaN becomes null, JSON stays valid

    with pytest.raises(ConfigError, match="unknown report format 'xml'"):
        format_summary(summary, "xml")


def test_empty_summary_formats():
    summary = summarize([], A_PRE, DOWNSTREAM, PRE)
    assert summary.overall.empty
    assert format_summary(summary, "table") == "no results to report\n"
    assert json.loads(format_summary(summary, "json"))["labels"] == {}
    assert pd.read_csv(io.StringIO(format_summary(summary, "csv"))).empty


def test_methods_side_by_side_best_mri_first():
    worse = {s: {t: {k: v - 0.1 for k, v in accs.items()} for t, accs in ACC[s].items()} for s in ACC}
    other = [make_cell("lwf", t, s, worse[s][t]) for s in (0, 1) for t in DOWNSTREAM]
    summary = summarize(toy_cells() + other, A_PRE, DOWNSTREAM, PRE)
    table = format_summary(summary, "table", compare_only=True)
    assert "== ft ==" not in table                      # only the comparison
    rows = [line for line in table.splitlines() if line.startswith(("ft ", "lwf "))]
    assert [r.split()[0] for r in rows] == ["ft", "lwf", "ft", "lwf"]   # headline, then per-dataset RI
    # ft: mRI +0.5 ± 0.9 [-0.2, +1.2]; lwf is every accuracy 10 points lower -> mRI 0.5 - 10 = -9.5
    assert "+0.5 ± 0.9 [-0.2, +1.2]" in rows[0] and rows[0].rstrip().endswith("2")
    assert "-9.5 ± 0.9" in rows[1]
    assert rows[2].split()[1:] == ["-2.5", "+1.5", "+2.5", "+0.5"]     # mean RI per dataset, then mRI
    full = format_summary(summary, "markdown")
    assert full.index("### Methods side by side") < full.index("### ft")


def test_a_method_whose_id_gain_is_not_above_zero_is_marked_did_not_adapt():
    """mRI alone ranks standing still first (mRI 0 here): the comparison marks it."""
    still = [make_cell(m, t, s, dict(A_PRE)) for m in ("lora", "zeroshot") for s in (0, 1) for t in DOWNSTREAM]
    summary = summarize(toy_cells() + still, A_PRE, DOWNSTREAM, PRE)
    overall = summary.overall.set_index(["label", "metric"])
    assert overall.loc[("lora", "ID_gain"), "ci_low"] == 0 and overall.loc[("ft", "ID_gain"), "ci_low"] > 0
    table = format_summary(summary, "table", compare_only=True)
    marked = {line.split()[0] for line in table.splitlines() if "(did not adapt)" in line}
    assert marked == {"lora"}        # zeroshot evaluates the pretrained model by design: not marked


def test_the_results_page_merge_keeps_the_methods_a_store_lacks_and_sorts_by_mri():
    """docs/results/make.sh regenerates a pretrain's section from a store holding only some of its
    methods' cells; merge_section.py must keep the other methods' rows and sections."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "merge_section.py"
    spec = importlib.util.spec_from_file_location("merge_section", path)
    merge_section = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_section)

    def section(rows: dict[str, float]) -> list[str]:
        lines = ["## p", "", "note", "", "### Methods side by side", "", "caption", "| method | mRI | seeds |",
                 "|---|---:|---:|"]
        lines += [f"| {m} | {v:+.1f} ± 0.1 [x, y] | 3 |" for m, v in sorted(rows.items(), key=lambda r: -r[1])]
        for m in sorted(m.replace(" (did not adapt)", "") for m in rows):   # headings carry no adapt mark
            lines += ["", f"### {m}", "", f"matrix of {m.removesuffix(' (superseded)')}"]
        return lines

    old = section({"ft": -6.2, "vpt (did not adapt)": -11.2, "saft": 0.3})
    new = section({"ft": -5.0, "imp-reg": -4.1})
    merged = merge_section.merge(old, new)
    rows = [line.split("|")[1].strip() for line in merged if line.startswith("| ") and "method" not in line]
    assert rows == ["saft", "imp-reg", "ft", "vpt (did not adapt)"]            # best mRI first
    assert "| ft | -5.0 ± 0.1 [x, y] | 3 |" in merged                           # the store's row replaces
    headings = [line for line in merged if line.startswith("### ")]
    assert headings == ["### Methods side by side", "### ft", "### imp-reg", "### saft", "### vpt"]
    assert merged.count("matrix of ft") == 1 and "matrix of vpt" in merged
    assert merge_section.merge(old, old) == old                                # idempotent

    # rows measured by older code keep their mark until the store holds the method again
    old = section({"ft (superseded)": -6.2, "lora (did not adapt) (superseded)": -0.1, "saft (superseded)": 0.3})
    merged = merge_section.merge(old, section({"ft": -5.0, "lora": -1.0}))
    rows = [line.split("|")[1].strip() for line in merged if line.startswith("| ") and "method" not in line]
    assert rows == ["saft (superseded)", "lora", "ft"]
    headings = [line for line in merged if line.startswith("### ")]
    assert headings == ["### Methods side by side", "### ft", "### lora", "### saft (superseded)"]
    assert merged.count("matrix of ft") == 1 and merged.count("matrix of lora") == 1
