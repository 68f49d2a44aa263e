"""Choose a suite's fine-tuning learning rate on held-out parts of the downstream TRAIN splits.

For every downstream dataset, a class-stratified 25% of its train split is held
out; `ft` trains on the remaining 75% at each candidate lr and is scored by its
accuracy on the held-out part (in-distribution accuracy, the quantity a
practitioner tunes). The chosen lr maximises the mean held-out accuracy over
datasets. No test split is read, and no robustness number enters the choice.

    python -m ribench.run.select_protocol --pretrain mini-clip --lrs 0.001,0.003,0.01,0.03
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from ribench.data.splits import holdout
from ribench.engine.evaluate import accuracy
from ribench.run.cell import load_pretrained
from ribench.run.spec import fit_context, resolve


def sweep(pretrain: str, lrs, suite: str = "rib-mini", seed: int = 0, fraction: float = 0.25, log=print):
    spec = resolve("ft", suite, pretrain)
    pretrained = load_pretrained(spec)
    rows = []
    for dataset in spec.suite.downstream:
        fit, val = holdout(spec.suite.train_split(dataset), fraction, seed)
        base = accuracy(pretrained.model, pretrained.preprocess, val)
        for lr in lrs:
            protocol = dataclasses.replace(spec.protocol, lr=lr)
            torch.manual_seed(seed)
            ctx = fit_context(spec, pretrained, dataset, seed, train=fit, protocol=protocol)
            spec.method_cls(spec.method_config).fit(ctx)
            acc = accuracy(ctx.model, pretrained.preprocess, val)
            rows.append({"dataset": dataset, "lr": lr, "pretrained": base, "heldout_acc": acc})
            log(f"{dataset:10s} lr {lr:<7g} held-out acc {acc:.3f} (pretrained {base:.3f})")
    means = {lr: float(np.mean([r["heldout_acc"] for r in rows if r["lr"] == lr])) for lr in lrs}
    gains = {lr: float(np.mean([r["heldout_acc"] - r["pretrained"] for r in rows if r["lr"] == lr])) for lr in lrs}
    best = max(lrs, key=lambda lr: means[lr])
    return {"pretrain": pretrain, "suite": suite, "protocol": spec.protocol.as_dict(), "holdout_fraction": fraction,
            "seed": seed, "mean_heldout_acc": means, "mean_heldout_gain": gains, "chosen_lr": best, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", default="mini-clip")
    parser.add_argument("--suite", default="rib-mini")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the full table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = sweep(args.pretrain, [float(x) for x in args.lrs.split(",")], args.suite)
    print(json.dumps({k: result[k] for k in ("mean_heldout_acc", "mean_heldout_gain", "chosen_lr")}, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
