"""imagenet-rib on a generated ImageNet-style tree of real image files, with locally saved weights.

Nothing here reads real data or downloads weights: the tree is a few JPEG/PNG
files per class written to a temporary folder, and the pretrains are the real
presets' loading code fed randomly initialised weights of a tiny config.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ribench.catalog import PRETRAINS  # noqa: E402
from ribench.cli.main import main  # noqa: E402
from ribench.errors import DataError, MissingWeightsError, RibenchError  # noqa: E402
from ribench.data.images import ImageFiles, ImageGeometry  # noqa: E402
from ribench.pretrains import real  # noqa: E402
from ribench.pretrains.presets import PretrainPreset  # noqa: E402
from ribench.suites import imagenet_rib as R  # noqa: E402

SHIPPED = Path(R.manifest_dir()) / "imagenet-rib"
CLASSES_PER_DATASET, IMAGES_PER_CLASS = 2, 5
TINY_CLIP = dict(embed_dim=32,
                 vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


# ---------------------------------------------------------------------------- a fake tree


def _picture(rng, label, size=(44, 36)):
    from PIL import Image

    base = np.array([(label * 53) % 256, (label * 97) % 256, (label * 29) % 256], np.uint8)
    pixels = np.clip(base + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_tree(root: Path, manifests_out: Path | None = None, classes=CLASSES_PER_DATASET, per_class=IMAGES_PER_CLASS):
    """A small tree in every dataset's published layout; optionally manifests trimmed to exactly this tree."""
    rng = np.random.default_rng(0)
    if manifests_out is not None:
        manifests_out.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED / "imagenet-classes.json", manifests_out / "imagenet-classes.json")
    for name in R.DATASETS:
        m = json.loads((SHIPPED / f"{name}.json").read_text())
        folder = root / m["layout"]["folder"]
        chosen = m["classes"][:classes]
        val_named = m["split"]["key"] == "imagenet-val-id"
        ext = ".png" if name == "objectnet" else ".JPEG"
        variants = ([f"{c}/{s}" for c in m["corruptions"] for s in m["severities"]] if "corruptions" in m else [""])
        for k, entry in enumerate(chosen):
            for variant in variants:
                d = folder / variant / entry["folder"] if variant else folder / entry["folder"]
                d.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    stem = f"ILSVRC2012_val_{k * per_class + i + 1:08d}" if val_named else f"img_{i:03d}"
                    _picture(rng, entry["imagenet_index"]).save(d / (stem + ext))
        if manifests_out is not None:
            trimmed = dict(m, classes=chosen, class_mask=sorted({e["imagenet_index"] for e in chosen}))
            n_variants = len(variants) if "corruptions" in m else 1
            trimmed["expected"] = dict(m["expected"], images=classes * per_class * n_variants,
                                       images_per_class=per_class, class_folders=classes)
            if "corruptions" in m:
                trimmed["expected"]["images_per_variant"] = classes * per_class
            (manifests_out / f"{name}.json").write_text(json.dumps(trimmed))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("rib")
    make_tree(base / "data", base / "manifests")
    return base


def _suite(tree, geometry=ImageGeometry(32, 1.0)):
    suite = R.build(tree / "data", manifests=tree / "manifests")
    suite.geometry = geometry
    return suite


# ---------------------------------------------------------------------------- manifests


def test_class_counts_after_masking_and_objectnet_map():
    suite = R.build()
    assert suite.class_counts() == {"imagenet-v2": 1000, "imagenet-a": 200, "imagenet-r": 200,
                                    "imagenet-sketch": 1000, "objectnet": 113, "imagenet-cartoon": 1000,
                                    "imagenet-drawing": 1000, "imagenet-c": 1000, "imagenet-val": 1000}
    assert len(suite.class_names) == 1000 and len(suite.templates) == 80
    objectnet = suite.manifest("objectnet")
    groups = [set(c["imagenet_indices"]) for c in objectnet["classes"]]
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == 125     # each ImageNet class in one group
    assert len(objectnet["reference_code_mask"]) == 105
    # ImageNet-A/-R masks are timm's published index lists
    import timm
    info = Path(timm.__file__).parent / "data" / "_info"
    for name, file in (("imagenet-a", "imagenet_a_indices.txt"), ("imagenet-r", "imagenet_r_indices.txt")):
        assert suite.manifest(name)["class_mask"] == [int(i) for i in (info / file).read_text().split()]


# ---------------------------------------------------------------------------- splits and verification


def test_splits_are_disjoint_stratified_and_shared_across_val_derived_sets(tree):
    suite = _suite(tree)
    for name in R.DATASETS:
        listing = suite.listing(name)
        assert len(set(listing.train) & set(listing.test)) == 0
        assert len(listing.train) + len(listing.test) == CLASSES_PER_DATASET * IMAGES_PER_CLASS
        for c in np.unique(listing.labels):      # floor(0.2 * 5 + 0.5) = 1 test image per class
            assert np.sum(listing.labels[listing.test] == c) == 1
    test_ids = {name: sorted(suite.listing(name).keys[i] for i in suite.listing(name).test)
                for name in ("imagenet-val", "imagenet-c", "imagenet-cartoon", "imagenet-drawing")}
    assert len({tuple(v) for v in test_ids.values()}) == 1
    again = _suite(tree)
    assert list(again.listing("imagenet-r").test) == list(suite.listing("imagenet-r").test)
    c = suite.test_split("imagenet-c")
    assert set(c.details) == {"corruption", "severity"} and c.details["severity"].min() >= 1
    assert R.test_count(50, 0.2) == 10 and R.test_count(1, 0.2) == 0 and R.test_count(2, 0.2) == 1


def test_imagenet_c_variants_are_balanced_within_each_split():
    m = json.loads((SHIPPED / "imagenet-c.json").read_text())
    assert len(m["corruptions"]) * len(m["severities"]) == 75
    per_class = [R.corruption_variants(50, c, 0.2) for c in range(1000)]
    test = np.bincount([v for vs in per_class for v in vs[:10]], minlength=75)
    train = np.bincount([v for vs in per_class for v in vs[10:]], minlength=75)
    assert (test.min(), test.max()) == (133, 134) and (train.min(), train.max()) == (533, 534)


def test_verify_accepts_a_matching_tree_and_names_each_defect(tree, tmp_path, capsys):
    assert _suite(tree).verify(log=lambda line: None) == []
    broken = tmp_path / "broken"
    shutil.copytree(tree / "data", broken)
    shutil.rmtree(broken / "imagenet-r")                                       # missing dataset folder
    a_class = json.loads((tree / "manifests" / "imagenet-a.json").read_text())["classes"][0]["folder"]
    shutil.rmtree(broken / "imagenet-a" / a_class)                             # missing class folder
    (broken / "imagenet-sketch" / "n99999999").mkdir()                        # unexpected folder
    sketch = sorted((broken / "imagenet-sketch").glob("n0*/*.JPEG"))
    sketch[0].unlink()                                                         # wrong count
    bad = sorted((broken / "imagenet-v2" / "imagenetv2-matched-frequency-format-val").glob("*/*.JPEG"))[0]
    bad.write_bytes(bad.read_bytes()[:60])                                     # truncated JPEG
    (broken / "imagenet-c" / "fog" / "3").rename(broken / "imagenet-c" / "fog" / "9")   # missing variant
    suite = R.build(manifests=tree / "manifests")
    suite.data_root = broken
    problems = suite.verify(log=lambda line: None)
    text = "\n".join(problems)
    assert "imagenet-r: missing folder" in text and "https://github.com/hendrycks/imagenet-r" in text
    assert f"imagenet-a: 1 of 2 class folders missing: {a_class}" in text
    assert "imagenet-sketch: 1 unexpected folders: n99999999" in text
    assert "imagenet-sketch: 1 class folders do not hold 5 images" in text
    assert f"imagenet-v2: unreadable image {bad}" in text
    assert "imagenet-c: missing folder" in text and "fog/3" in text
    assert not any(p.startswith(("imagenet-val", "objectnet", "imagenet-drawing")) for p in problems)


def test_verify_cli_reports_and_exits_2(tree, capsys):
    code = main(["datasets", "verify", "--data-root", str(tree / "data"), "--no-decode"])
    out, err = capsys.readouterr()
    # the shipped manifests expect the full datasets: every one is reported as short
    assert code == 2 and "imagenet-val: 998 of 1000 class folders missing" in out
    assert err.startswith("ribench: error: ") and len(err.strip().splitlines()) == 1


def test_a_corrupt_image_stops_evaluation_with_its_path(tree, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tree / "data", data)
    suite = R.build(data, manifests=tree / "manifests")
    suite.geometry = ImageGeometry(32, 1.0)
    split = suite.test_split("imagenet-a")
    target = Path(split.images.paths[0])
    target.write_bytes(b"not an image")
    with pytest.raises(DataError, match=str(target)):
        list(split.batches(4))


def test_image_files_decode_like_the_eval_transform(tmp_path):
    from PIL import Image
    import torchvision.transforms as T

    path = tmp_path / "x.png"
    _picture(np.random.default_rng(1), 3, size=(70, 50)).save(path)
    files = ImageFiles([str(path)] * 3, ImageGeometry(32, 0.9, "bicubic"))
    expected = T.Compose([T.Resize(35, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32)])(
        Image.open(path).convert("RGB"))
    assert files.shape == (3, 32, 32, 3)
    assert np.array_equal(files[0], np.asarray(expected))
    idx, batch = next(iter(files.prefetched(np.array([2, 0]), 2)))
    assert batch.shape == (2, 32, 32, 3) and list(idx) == [2, 0]
    assert files.subset([0]).digest() != files.with_geometry(ImageGeometry(32, 1.0)).subset([0]).digest()


# ---------------------------------------------------------------------------- pretrains from local files


def _tiny_clip_file(path: Path, architecture="ViT-B-16") -> Path:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(architecture, **TINY_CLIP)
    torch.save(model.state_dict(), path)
    return path


def _tiny_vit_file(path: Path, model_name="vit_base_patch16_224.augreg_in1k") -> tuple[Path, torch.Tensor]:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = timm.create_model(model_name.split(".")[0], **TINY_VIT)
    save_file(vit.state_dict(), str(path))
    return path, vit.head.weight.detach().clone()


def test_clip_preset_loads_a_local_file_and_caches_an_exact_head(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("RIBENCH_CACHE", str(tmp_path / "cache"))
    spec = dataclasses.replace(real.CLIP_SPECS["laion2b"], model_kwargs=TINY_CLIP)
    weights = _tiny_clip_file(tmp_path / "open_clip_pytorch_model.bin")
    suite = _suite(tree)
    suite.templates = suite.templates[:3]
    pre = spec.build(suite, weights)
    assert pre.info["eval_transform"] == {"size": 32, "crop_pct": 1.0, "interpolation": "bicubic"}
    # the trimmed, batched head equals ClipClassifier's own per-class computation
    from ribench.pretrains.base import ClipClassifier
    reference = ClipClassifier.zeroshot_weights(pre.model)
    assert torch.allclose(pre.model.head.weight, reference, atol=1e-5)
    assert len(list((tmp_path / "cache" / "zeroshot-heads").glob("*.npz"))) == 1
    again = spec.build(suite, tmp_path)            # a folder holding the expected file name works too
    assert torch.equal(again.model.head.weight, pre.model.head.weight)
    # the OpenAI preset builds the QuickGELU tower
    openai = dataclasses.replace(real.CLIP_SPECS["openai"], model_kwargs=TINY_CLIP)
    quick = openai.build(suite, _tiny_clip_file(tmp_path / "openai.bin", "ViT-B-16-quickgelu"))
    assert type(quick.model.clip.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_weights_are_found_in_the_weights_dir_and_the_hf_cache(tmp_path, monkeypatch):
    spec = real.CLIP_SPECS["laion2b"]
    monkeypatch.setenv("RIBENCH_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(MissingWeightsError) as missing:
        spec.locate()
    message = str(missing.value)
    assert str(tmp_path / "w" / "laion2b" / "open_clip_pytorch_model.bin") in message
    assert "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message and "\n" not in message
    (tmp_path / "w" / "laion2b").mkdir(parents=True)
    (tmp_path / "w" / "laion2b" / "open_clip_model.safetensors").write_bytes(b"x")
    assert spec.locate().name == "open_clip_model.safetensors"
    monkeypatch.delenv("RIBENCH_WEIGHTS")
    from huggingface_hub import constants
    snapshot = tmp_path / "hf" / "models--timm--vit_base_patch16_224.augreg_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"x")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert real.TIMM_SPECS["in1k-augreg"].locate() == snapshot / "model.safetensors"


def test_timm_preset_keeps_the_saved_head_and_its_eval_transform(tree, tmp_path):
    spec = dataclasses.replace(real.TIMM_SPECS["in1k-augreg"], model_kwargs=TINY_VIT)
    weights, head = _tiny_vit_file(tmp_path / "model.safetensors")
    suite = _suite(tree)
    pre = spec.build(suite, weights)
    assert torch.equal(pre.model.head.weight, head)           # not re-initialised
    assert pre.info["eval_transform"] == {"size": 32, "crop_pct": 0.9, "interpolation": "bicubic"}
    suite.adopt_eval_transform(pre)
    assert suite.test_split("imagenet-r").images.shape[1:] == (32, 32, 3)
    with pytest.raises(RibenchError, match="is not a vit_base_patch16_224.augreg_in1k checkpoint"):
        spec.build(suite, _tiny_clip_file(tmp_path / "clip.bin"))


def test_real_presets_say_which_file_is_missing(tree, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RIBENCH_WEIGHTS", raising=False)
    code = main(["run", "--protocol", "reference", "--method", "ft", "--pretrain", "in21k", "--suite", "imagenet-rib",
                 "--data-root", str(tmp_path), "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "lacks imagenet-v2 (imagenet-v2/imagenetv2-matched-frequency-format-val/)" in err
    code = main(["run", "--protocol", "reference", "--method", "ft", "--pretrain", "in21k", "--suite", "imagenet-rib",
                 "--data-root", str(tree / "data"), "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("ribench: error: pretrain 'in21k' needs")
    assert "timm/vit_base_patch16_224.orig_in21k_ft_in1k/blob/main/model.safetensors" in err[-1]
    code = main(["run", "--protocol", "reference", "--method", "ft", "--pretrain", "openai", "--weights", str(tmp_path / "nope.bin"),
                 "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "nope.bin") in err and "vit_base_patch16_clip_224.openai" in err


# ---------------------------------------------------------------------------- end to end


def test_run_and_results_end_to_end_on_the_fake_tree(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RIBENCH_ZEROSHOT_TEMPLATES", "simple")
    weights = _tiny_clip_file(tmp_path / "w.bin")
    spec = dataclasses.replace(real.CLIP_SPECS["laion2b"], name="laion2b-tiny", model_kwargs=TINY_CLIP)
    if "laion2b-tiny" not in PRETRAINS.names():
        PRETRAINS.register("laion2b-tiny", PretrainPreset("laion2b-tiny", "tests", spec.build, True, False,
                                                          spec.locate))
    store = tmp_path / "s.sqlite"
    code = main(["run", "--protocol", "reference", "--method", "ft", "--pretrain", "laion2b-tiny", "--suite", "imagenet-rib",
                 "--data-root", str(tree / "data"), "--weights", str(weights), "--datasets",
                 "imagenet-r,imagenet-c", "--set", "epochs=1", "--set", "batch_size=4", "--threads", "1",
                 "--no-progress", "--store", str(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warning: imagenet-r" in err            # the fake tree is not the full dataset, and says so
    assert "imagenet-c" in out and "mRI" in out
    code = main(["results", "--protocol", "reference", "--suite", "imagenet-rib", "--pretrain", "laion2b-tiny",
                 "--store", str(store)])
    out = capsys.readouterr().out
    assert code == 0 and "imagenet-r" in out and "mRI" in out
    from ribench.store import Store
    with Store(store) as db:
        cells = db.cells(suite="imagenet-rib", pretrain="laion2b-tiny")
    assert len(cells) == 2
    assert set(cells[0].details["imagenet-c"]) == {"corruption", "severity"}


# ---------------------------------------------------------------------------- a leaderboard entry


def _store_as_run_writes_it(path, suite, pretrain="laion2b-fake", seeds=(0, 1, 2)):
    """Pretrained accuracies and a complete grid of ft cells, under the identity `ribench run` gives them."""
    from ribench.store import CellRecord, Store, cell_key

    columns = [*suite.downstream, suite.pretrain_eval]
    tag = {"suite": suite.name, "manifests": suite.manifest_hash(), "pretrain": pretrain, "weights_sha256": "ab" * 32}
    with Store(path) as store:
        identity = {"kind": "pretrained", **tag}
        store.put_pretrained(cell_key(identity), suite.name, pretrain, identity,
                             {name: 0.5 + 0.01 * k for k, name in enumerate(columns)}, {"ribench": "0.1.0"})
        for seed in seeds:
            for k, dataset in enumerate(suite.downstream):
                cell = {**tag, "method": "ft", "config": {}, "protocol": suite.protocol.as_dict(),
                        "dataset": dataset, "seed": seed}
                accuracies = {name: 0.4 + 0.02 * ((k + j + seed) % 5) for j, name in enumerate(columns)}
                store.put(CellRecord(key=cell_key(cell), suite=suite.name, pretrain=pretrain, method="ft",
                                     label="ft", dataset=dataset, seed=seed, identity=cell, accuracies=accuracies,
                                     provenance={"ribench": "0.1.0", "git_commit": "d" * 40}))
    return path


def test_leaderboard_submit_reads_imagenet_rib_cells_with_their_data_root(tree, tmp_path, capsys, monkeypatch):
    """The suite's identity covers its data: submit attaches --data-root (or $RIBENCH_DATA_ROOT) as run does."""
    monkeypatch.delenv("RIBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("RIBENCH_ZEROSHOT_TEMPLATES", raising=False)
    data = str(tree / "data")
    ran = R.build(data)                                   # the suite as `ribench run --data-root` builds it
    ran._cache["quiet"] = True
    store = _store_as_run_writes_it(tmp_path / "s.sqlite", ran)
    base = ["leaderboard", "submit", "--protocol", "reference", "--suite", "imagenet-rib", "--pretrain", "laion2b-fake", "--method", "ft",
            "--store", str(store), "--root", str(tmp_path / "lb")]

    code = main(base)                                     # no data root anywhere: one clear line, no entry
    err = capsys.readouterr().err
    assert code == 2 and "--data-root" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "lb").exists()

    code = main([*base, "--data-root", data])
    out, err = capsys.readouterr()
    assert code == 0, err
    path = tmp_path / "lb" / "imagenet-rib" / "laion2b-fake" / "ft.json"
    assert out.startswith(f"written {path}")
    assert json.loads(path.read_text())["provenance"]["manifests_sha256"] == ran.manifest_hash()

    monkeypatch.setenv("RIBENCH_DATA_ROOT", data)          # the default of --data-root, as for `ribench run`
    code = main(base)
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith(f"unchanged {path}"), err


def test_imagenet_rib_identity_never_leaves_out_its_data(tree, monkeypatch):
    """Without a data root the hash is not some other, data-less identity: it is the run's, or refused."""
    monkeypatch.delenv("RIBENCH_DATA_ROOT", raising=False)
    attached = R.build(tree / "data", manifests=tree / "manifests")
    bare = R.build(manifests=tree / "manifests")
    with pytest.raises(RibenchError, match="--data-root"):
        bare.manifest_hash()
    monkeypatch.setenv("RIBENCH_DATA_ROOT", str(tree / "data"))
    assert R.build(manifests=tree / "manifests").manifest_hash() == attached.manifest_hash()
