"""rib-mini is deterministic and identical on every machine: content hashes match the manifests."""

import json

import numpy as np
import pytest

from ribench.paths import manifest_dir
from ribench.suites import rib_mini
from ribench.suites import rib_mini_render as R

MANIFESTS = manifest_dir() / "rib-mini"


@pytest.mark.parametrize("dataset", sorted(rib_mini.DATASETS))
def test_every_split_matches_its_manifest_hash(dataset):
    manifest = json.loads((MANIFESTS / f"{dataset}.json").read_text())
    for split in ("train", "test"):
        images, labels, _ = rib_mini.generate(dataset, split)
        assert rib_mini.content_hash(images, labels) == manifest["splits"][split]["sha256"]
        assert len(labels) == manifest["splits"][split]["images"]
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)


def test_corpus_matches_manifest_and_has_captions():
    manifest = json.loads((MANIFESTS / "corpus.json").read_text())
    images, labels, captions = rib_mini.generate_corpus()
    assert rib_mini.content_hash(images, labels) == manifest["sha256"]
    assert len(captions) == len(labels) == manifest["images"]
    # every caption names its image's class
    assert all(R.CLASS_NAMES[y] in c for y, c in zip(labels[:2000], captions[:2000]))


def test_generation_is_independent_of_order_and_repeatable():
    a = rib_mini.generate("cartoon", "test", per_class=3)
    rib_mini.generate("sketch", "train", per_class=3)
    b = rib_mini.generate("cartoon", "test", per_class=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_train_and_test_differ_and_classes_balanced():
    tr, ytr, _ = rib_mini.generate("drawing", "train", per_class=5)
    te, yte, _ = rib_mini.generate("drawing", "test", per_class=5)
    assert not np.array_equal(tr, te)
    assert np.bincount(ytr).tolist() == [5] * 10


def test_class_mask_restricts_labels():
    _, labels, _ = rib_mini.generate("hard", "test", per_class=4)
    assert set(labels.tolist()) == set(rib_mini.DATASETS["hard"][3])
    assert len(rib_mini.DATASETS["hard"][3]) < len(R.CLASS_NAMES)


def test_seven_downstream_datasets_one_label_space():
    suite = rib_mini.build()
    assert len(suite.downstream) >= 7 and suite.pretrain_eval == "photo"
    assert len(suite.class_names) >= 10


def test_cache_round_trip_and_damaged_cache_regenerates(tmp_path, monkeypatch):
    monkeypatch.setenv("RIBENCH_CACHE", str(tmp_path))
    suite = rib_mini.build()
    split = suite.test_split("corrupt")
    path = tmp_path / "rib-mini" / f"v{rib_mini.GENERATOR_VERSION}" / "corrupt-test.npz"
    assert path.exists()
    assert set(split.details) == {"corruption", "severity"}
    np.savez(path, images=np.zeros_like(split.images), labels=split.labels)   # damage it
    again = rib_mini.build().test_split("corrupt")
    assert np.array_equal(again.images, split.images)
