"""Distances between a suite's datasets in a pretrain's feature space: the link from the
benchmark's suites and pretrains to the OTDD maths, through the shared feature cache."""

from __future__ import annotations

import time

import numpy as np

from ribench.data.features import cached_features
from ribench.distance.matrix import DistanceMatrix
from ribench.distance.options import DistanceOptions, LabelledFeatures
from ribench.distance.otdd import distance_matrix

__all__ = ["FEATURE_SPLIT", "suite_distances"]

FEATURE_SPLIT = "train"               # distances describe the data a model is fine-tuned on, never test data


def suite_distances(suite, pretrained, options: DistanceOptions | None = None, device="cpu",
                    batch_size: int = 500, log=None) -> DistanceMatrix:
    """OTDD² between all of a suite's datasets (downstream and pretraining-domain) in
    `pretrained`'s penultimate feature space, on their train splits.

    Train splits because the distance is meant to describe what a model is
    fine-tuned on; test splits stay for evaluation. Features come from the shared
    on-disk cache (`ribench.data.features`), so a second call computes no features.
    """
    start = time.perf_counter()
    datasets = []
    for name in [*suite.downstream, suite.pretrain_eval]:
        split = suite.train_split(name)
        features = cached_features(pretrained, split, FEATURE_SPLIT, batch_size, device)
        datasets.append(LabelledFeatures(name, features, np.asarray(split.labels)))
    feature_seconds = time.perf_counter() - start
    result = distance_matrix(datasets, options, device, log)
    result.context = {"suite": suite.name, "pretrain": pretrained.name,
                      "weights_sha256": pretrained.weights_sha256, "feature_split": FEATURE_SPLIT,
                      "pretrain_eval": suite.pretrain_eval, "feature_dim": int(datasets[0].features.shape[1])}
    result.seconds = {"features": feature_seconds, **result.seconds}
    return result
