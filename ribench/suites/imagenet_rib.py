"""imagenet-rib: the ImageNet-RIB datasets, read from the folder the user gives (--data-root).

ImageNet-V2, -A, -R, -Sketch, ObjectNet, -Cartoon, -Drawing and -C are the
downstream datasets; ImageNet-1K val is the pretraining-domain set. Everything
about a dataset — where it lives under the data root, its classes and their
ImageNet indices, its class mask, the expected image counts, where it is
published, how it is split — is in its manifest in `data_manifests/imagenet-rib/`;
this module only follows them. Images are decoded per batch with the pretrained
model's eval transform (`ribench.data.images`), never loaded whole.

Splits are deterministic and class-stratified by a hash of each image's key
(its ImageNet validation id for the four datasets made from ImageNet val, so
they put the same photographs in test), so train and test never share an
image; the reference code trains and tests on the same images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ribench.data.splits import TestSplit, TrainSplit
from ribench.errors import ConfigError, DataError, RibenchError
from ribench.data.images import ImageFiles, ImageGeometry, decode_threads, hash_names_and_sizes, is_image_file
from ribench.paths import manifest_dir
from ribench.engine.protocol import Protocol
from ribench.suites.base import DatasetInfo, Suite

SUITE = "imagenet-rib"
DATASETS = ("imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "objectnet",
            "imagenet-cartoon", "imagenet-drawing", "imagenet-c", "imagenet-val")
PRETRAIN_EVAL = "imagenet-val"
CLASSES_MANIFEST = "imagenet-classes"
VAL_ID = re.compile(r"ILSVRC2012_val_\d{8}")
TEMPLATE_SETS = ("openai", "simple")

# The reference code's protocol (SGD momentum 0.9, lr 1e-3, no weight decay, 196 warm-up steps
# then per-step cosine, 10 epochs, batch 64 as its README runs it); images at the model's 224 px.
IMAGENET_RIB_PROTOCOL = Protocol(
    optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0, warmup_steps=196,
    epochs=10, batch_size=64, schedule="cosine", eval_batch_size=500,
)


@functools.lru_cache(maxsize=None)
def _read_manifest(path: str) -> dict:
    return json.loads(Path(path).read_text())


def split_order_key(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def corruption_variants(n: int, class_index: int, fraction: float, n_variants: int = 75) -> list[int]:
    """Variant of each image of a class with n images, by hash rank (the split order).

    The test part (the first test_count(n) ranks) and the train part each cycle
    through the variants from an offset of (part size x class index), so both
    splits cover every (corruption, severity) evenly.
    """
    n_test = test_count(n, fraction)
    n_train = n - n_test
    return ([(t + n_test * class_index) % n_variants for t in range(n_test)]
            + [(u + n_train * class_index) % n_variants for u in range(n_train)])


def test_count(n: int, fraction: float) -> int:
    """Test images of a class with n images: floor(fraction*n + 0.5), at least 1 and at most n-1 when n >= 2."""
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


@dataclass
class Listing:
    """The images of one dataset found under the data root, in a fixed order."""

    dataset: str
    root: Path
    paths: list[str]                     # absolute
    relative: list[str]                  # relative to the dataset folder (what the data hash covers)
    labels: np.ndarray                   # ImageNet class index
    keys: list[str]                      # split keys
    details: dict[str, np.ndarray]
    missing_classes: list[str]           # class folders the manifest names that are absent
    train: np.ndarray = field(default=None)  # row indices
    test: np.ndarray = field(default=None)

    def digest(self) -> str:
        """Relative names and sizes of the files used: the same tree on another machine hashes the same."""
        return hash_names_and_sizes(hashlib.sha256(self.dataset.encode()), self.paths, self.relative)


def _image_files(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))
    except FileNotFoundError:
        return []


@dataclass
class ImageNetRIB(Suite):
    """The real ImageNet-RIB suite over a data root."""

    data_root: Path | None = None
    geometry: ImageGeometry = field(default_factory=ImageGeometry)
    template_set: str = "openai"

    # ------------------------------------------------------------------ setup

    def attach_data(self, data_root) -> None:
        root = data_root or os.environ.get("RIBENCH_DATA_ROOT")
        if not root:
            raise ConfigError(f"suite '{self.name}' reads its images from --data-root DIR (or $RIBENCH_DATA_ROOT); "
                              "see docs/imagenet-rib.md for the layout")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"--data-root {root} is not a directory")
        self.data_root = root
        missing = [name for name in self.datasets if self.dataset_dir(name, required=False) is None]
        if missing:
            where = ", ".join(f"{n} ({self.manifest(n)['layout']['folder']}/)" for n in missing)
            raise DataError(f"{root} lacks {where}; run 'ribench datasets verify --suite {self.name} "
                            f"--data-root {root}' for the layout each dataset needs")

    def adopt_eval_transform(self, pretrained) -> None:
        spec = (pretrained.info or {}).get("eval_transform")
        self.geometry = ImageGeometry(**spec) if spec else ImageGeometry()

    def manifest(self, dataset: str) -> dict:
        path = Path(self.manifest_dir) / f"{dataset}.json"
        if not path.is_file():
            raise RibenchError(f"missing manifest {path}; reinstall ribench")
        return _read_manifest(str(path))

    def manifest_hash(self) -> str:
        """The manifests, the zero-shot template set and the files found under the data root.

        The files are part of the identity (a subset tree gives other results than the full one), so
        there is no data-less variant: without a data root this attaches $RIBENCH_DATA_ROOT, as
        loading a split does, or refuses in one line.
        """
        if self.data_root is None:
            self.attach_data(None)
        key = (str(self.data_root), self.template_set)
        if self._cache.get("hash_key") != key:
            h = hashlib.sha256(super().manifest_hash().encode())
            h.update(f"templates={self.template_set}".encode())
            for name in self.datasets:
                h.update(self.listing(name).digest().encode())
            self._cache["hash_key"], self._cache["hash"] = key, h.hexdigest()
        return self._cache["hash"]

    def dataset_dir(self, dataset: str, required: bool = True) -> Path | None:
        if self.data_root is None:
            if not required:
                return None
            self.attach_data(None)
        layout = self.manifest(dataset)["layout"]
        for folder in [layout["folder"], *layout.get("also_accepted", [])]:
            if (self.data_root / folder).is_dir():
                return self.data_root / folder
        if required:
            m = self.manifest(dataset)
            raise DataError(f"{dataset}: no folder {self.data_root / layout['folder']} ({m['title']}, "
                            f"published at {m['published']['url']})")
        return None

    # ------------------------------------------------------------------ listing and splits

    def listing(self, dataset: str) -> Listing:
        cache_key = ("listing", dataset, str(self.data_root))
        if cache_key not in self._cache:
            listing = self._list(dataset)
            self._split(listing)
            self._warn_if_incomplete(listing)
            self._cache[cache_key] = listing
        return self._cache[cache_key]

    def _split_key(self, dataset: str, class_folder: str, filename: str) -> str:
        if self.manifest(dataset)["split"]["key"] == "imagenet-val-id":
            found = VAL_ID.search(filename)
            if found:
                return found.group(0)
        return f"{class_folder}/{filename}"

    def _list(self, dataset: str) -> Listing:
        m = self.manifest(dataset)
        root = self.dataset_dir(dataset)
        if "corruptions" in m:
            return self._list_corruptions(dataset, m, root)
        paths, relative, labels, keys, missing = [], [], [], [], []
        for entry in m["classes"]:
            names = _image_files(root / entry["folder"])
            if not (root / entry["folder"]).is_dir():
                missing.append(entry["folder"])
            for name in names:
                paths.append(str(root / entry["folder"] / name))
                relative.append(f"{entry['folder']}/{name}")
                labels.append(entry["imagenet_index"])
                keys.append(self._split_key(dataset, entry["folder"], name))
        return Listing(dataset, root, paths, relative, np.array(labels, dtype=np.int64), keys, {}, missing)

    def _list_corruptions(self, dataset: str, m: dict, root: Path) -> Listing:
        """One (corruption, severity) per ImageNet val image, as the manifest's variant rule says."""
        corruptions, severities = m["corruptions"], m["severities"]
        n_variants = len(corruptions) * len(severities)
        base = root / corruptions[0] / str(severities[0])
        salt = m["split"]["salt"]
        paths, relative, labels, keys, corruption, severity, missing = [], [], [], [], [], [], []
        for entry in m["classes"]:
            if not (base / entry["folder"]).is_dir():
                missing.append(entry["folder"])
            names = _image_files(base / entry["folder"])
            keyed = sorted((split_order_key(salt, self._split_key(dataset, entry["folder"], n)), n) for n in names)
            c = entry["imagenet_index"]
            variants = corruption_variants(len(keyed), c, m["split"]["test_fraction"], n_variants)
            for (_, name), v in zip(keyed, variants):
                corr, sev = corruptions[v // len(severities)], severities[v % len(severities)]
                rel = f"{corr}/{sev}/{entry['folder']}/{name}"
                paths.append(str(root / rel))
                relative.append(rel)
                labels.append(c)
                keys.append(self._split_key(dataset, entry["folder"], name))
                corruption.append(v // len(severities))
                severity.append(sev)
        details = {"corruption": np.array(corruption, dtype=np.int64), "severity": np.array(severity, dtype=np.int64)}
        return Listing(dataset, root, paths, relative, np.array(labels, dtype=np.int64), keys, details, missing)

    def _split(self, listing: Listing) -> None:
        rule = self.manifest(listing.dataset)["split"]
        order = [split_order_key(rule["salt"], k) for k in listing.keys]
        test = []
        for c in np.unique(listing.labels):
            rows = np.nonzero(listing.labels == c)[0]
            rows = sorted(rows, key=lambda r: order[r])
            test.extend(rows[:test_count(len(rows), rule["test_fraction"])])
        listing.test = np.array(sorted(test), dtype=np.int64)
        listing.train = np.setdiff1d(np.arange(len(listing.keys)), listing.test)

    def _warn_if_incomplete(self, listing: Listing) -> None:
        """A tree that differs from the manifest still runs (e.g. a subset), but never silently."""
        m = self.manifest(listing.dataset)
        if len(listing.paths) == 0:
            raise DataError(f"{listing.dataset}: no images under {listing.root}")
        if self._cache.get("quiet"):
            return
        expected = m["expected"]
        want = expected.get("images_per_variant") if "corruptions" in m else expected.get("images")
        if listing.dataset == "objectnet":
            want = None                      # the used classes' total is not published; verify counts all 313
        if listing.missing_classes or (want is not None and len(listing.paths) != want):
            sys.stderr.write(
                f"ribench: warning: {listing.dataset} under {listing.root} has {len(listing.paths)} images"
                + (f" (manifest: {want})" if want is not None else "")
                + (f", {len(listing.missing_classes)} of {len(m['classes'])} class folders missing"
                   if listing.missing_classes else "")
                + f"; results are not comparable to ImageNet-RIB. 'ribench datasets verify --suite {self.name} "
                  f"--data-root {self.data_root}' lists every difference\n")

    def _load(self, dataset: str, part: str):
        self.info(dataset)
        key = (dataset, part, self.geometry)
        if key not in self._cache:
            listing = self.listing(dataset)
            rows = listing.train if part == "train" else listing.test
            border = int(self.manifest(dataset)["layout"].get("border_crop_px", 0))
            images = ImageFiles([listing.paths[i] for i in rows], self.geometry, border)
            details = {k: v[rows] for k, v in listing.details.items()}
            cls = TrainSplit if part == "train" else TestSplit
            self._cache[key] = cls(dataset, images, listing.labels[rows],
                                   np.array(self.info(dataset).class_mask), details)
        return self._cache[key]

    def train_split(self, dataset: str) -> TrainSplit:
        return self._load(dataset, "train")

    def test_split(self, dataset: str) -> TestSplit:
        return self._load(dataset, "test")

    # ------------------------------------------------------------------ verification

    def verify(self, decode: bool = True, log=print) -> list[str]:
        """Check the data root against every manifest; returns the problems (also logged, one per line)."""
        problems = []
        self._cache["quiet"] = True          # verify reports differences itself
        for name in self.datasets:
            found = self._verify_dataset(name, decode)
            for line in found:
                log(f"  {name}: {line}")
            if not found:
                listing = self.listing(name)
                log(f"ok {name}: {len(listing.paths)} images in {len(np.unique(listing.labels))} classes "
                    f"(train {len(listing.train)}, test {len(listing.test)})")
            problems.extend(f"{name}: {line}" for line in found)
        return problems

    def _verify_dataset(self, name: str, decode: bool) -> list[str]:
        m = self.manifest(name)
        root = self.dataset_dir(name, required=False)
        if root is None:
            return [f"missing folder {self.data_root / m['layout']['folder']} ({m['title']}; published at "
                    f"{m['published']['url']}; expected layout {m['layout']['pattern']})"]
        problems = []
        expected = m["expected"]
        wanted = [e["folder"] for e in m["classes"]]
        if "corruptions" in m:
            per_variant = {}
            for corr in m["corruptions"]:
                for sev in m["severities"]:
                    folder = root / corr / str(sev)
                    if not folder.is_dir():
                        problems.append(f"missing folder {folder}")
                        continue
                    problems += self._check_class_folders(folder, wanted, expected.get("images_per_class"),
                                                          label=f"{corr}/{sev}")
                    per_variant[f"{corr}/{sev}"] = sum(len(_image_files(folder / w)) for w in wanted)
            want = expected.get("images_per_variant")
            wrong = {k: v for k, v in per_variant.items() if want is not None and v != want}
            if wrong:
                problems.append(f"{len(wrong)} of {len(per_variant)} corruption folders do not hold {want} images: "
                                + _first(f"{k} has {v}" for k, v in sorted(wrong.items())))
        elif name == "objectnet":
            present = sorted(e.name for e in os.scandir(root) if e.is_dir())
            lacking = [w for w in wanted if w not in present]
            if lacking:
                problems.append(f"{len(lacking)} of the {len(wanted)} ImageNet-overlap class folders missing: "
                                + _first(lacking))
            if expected.get("class_folders") is not None and len(present) != expected["class_folders"]:
                problems.append(f"{len(present)} class folders, expected {expected['class_folders']}")
            total = sum(len(_image_files(root / p)) for p in present)
            if expected.get("images") is not None and total != expected["images"]:
                problems.append(f"{total} images in all class folders, expected {expected['images']}")
        else:
            problems += self._check_class_folders(root, wanted, expected.get("images_per_class"))
            total = sum(len(_image_files(root / w)) for w in wanted)
            if expected.get("images") is not None and total != expected["images"]:
                problems.append(f"{total} images, expected {expected['images']}")
        if decode:
            problems += self._check_images(name)
        return problems

    def _check_class_folders(self, folder: Path, wanted: list[str], per_class, label: str = "") -> list[str]:
        where = f"{label}: " if label else ""
        present = {e.name for e in os.scandir(folder) if e.is_dir()}
        problems = []
        lacking = [w for w in wanted if w not in present]
        extra = sorted(present - set(wanted))
        if lacking:
            problems.append(f"{where}{len(lacking)} of {len(wanted)} class folders missing: " + _first(lacking))
        if extra:
            problems.append(f"{where}{len(extra)} unexpected folders: " + _first(extra))
        if per_class is not None:
            counts = {w: len(_image_files(folder / w)) for w in wanted if w in present}
            off = {w: n for w, n in counts.items() if n != per_class}
            if off:
                problems.append(f"{where}{len(off)} class folders do not hold {per_class} images: "
                                + _first(f"{w} has {n}" for w, n in off.items()))
        return problems

    def _check_images(self, name: str) -> list[str]:
        """Decode every image the suite uses; each unreadable file is named."""
        from PIL import Image

        def check(path):
            try:
                with Image.open(path) as image:
                    image.convert("RGB")
                return None
            except FileNotFoundError:
                return f"image file missing: {path}"
            except Exception as exc:  # noqa: BLE001 - any decoder failure is the finding
                return f"unreadable image {path}: {' '.join(str(exc).split())}"

        try:
            paths = self.listing(name).paths
        except DataError as exc:
            return [str(exc)]
        with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
            return [r for r in pool.map(check, paths) if r is not None]

    def class_counts(self) -> dict[str, int]:
        return {name: len(info.class_mask) for name, info in self.datasets.items()}


def _first(items, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" ... and {len(items) - n} more" if len(items) > n else "")


def templates_choice() -> str:
    """Zero-shot template set for CLIP pretrains: $RIBENCH_ZEROSHOT_TEMPLATES (openai: 80, default; simple: 7)."""
    choice = os.environ.get("RIBENCH_ZEROSHOT_TEMPLATES", "openai")
    if choice not in TEMPLATE_SETS:
        raise ConfigError(f"RIBENCH_ZEROSHOT_TEMPLATES must be one of {', '.join(TEMPLATE_SETS)}, got '{choice}'")
    return choice


def build(data_root=None, manifests=None) -> ImageNetRIB:
    """The suite over the shipped manifests (or another folder of them, e.g. for a subset)."""
    directory = Path(manifests) if manifests else manifest_dir() / SUITE
    labels = _read_manifest(str(directory / f"{CLASSES_MANIFEST}.json"))
    choice = templates_choice()
    datasets = {}
    for name in DATASETS:
        m = _read_manifest(str(directory / f"{name}.json"))
        datasets[name] = DatasetInfo(name, m["description"], m["title"], tuple(m["class_mask"]), m["role"])
    suite = ImageNetRIB(
        name=SUITE,
        description="the ImageNet-RIB datasets (ImageNet-V2, -A, -R, -Sketch, ObjectNet, -Cartoon, -Drawing, -C; "
                    "ImageNet val as the pretraining domain), read from --data-root",
        class_names=tuple(c["name"] for c in labels["classes"]),
        datasets=datasets,
        pretrain_eval=PRETRAIN_EVAL,
        protocol=IMAGENET_RIB_PROTOCOL,
        templates=tuple(labels["zero_shot_templates"][choice]),
        manifest_dir=directory,
        template_set=choice,
    )
    if data_root is not None:
        suite.attach_data(data_root)
    return suite

