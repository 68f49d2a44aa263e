"""rib-mini: a generated, offline miniature of ImageNet-RIB.

Ten shape classes. A broad pretraining corpus (photos plus light versions of
other styles, with captions) and seven narrow downstream datasets, each a style
shift of the same label space in the spirit of one ImageNet-RIB dataset, plus a
pretraining-domain evaluation set (this suite's "ImageNet-1K val").

Everything is generated from fixed seeds, identical on every machine (see
`rib_mini_render`), cached under the ribench cache directory, and checked
against the content hashes recorded in `data_manifests/rib-mini/`.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np

from ribench.data.splits import TestSplit, TrainSplit
from ribench.errors import RibenchError
from ribench.cachefile import load_arrays, save_arrays
from ribench.paths import cache_dir, manifest_dir
from ribench.engine.protocol import Protocol
from ribench.suites import rib_mini_render as R
from ribench.suites import rib_mini_styles as S
from ribench.suites.base import DatasetInfo, Suite

GENERATOR_VERSION = "1"
ROOT_SEED = 20261123
CHUNK = 1000
ALL = tuple(range(len(R.CLASS_NAMES)))

# name: (style function, ImageNet-RIB counterpart, description, class mask)
DATASETS = {
    "resample": (S.resample, "ImageNet-V2", "photos from shifted generator parameters: smaller shapes, more clutter", ALL),
    "sketch": (S.sketch, "ImageNet-Sketch", "grey pencil outlines, doubled and broken, on paper", ALL),
    "cartoon": (S.cartoon, "ImageNet-Cartoon", "flat bright shapes with thick outlines in two-tone scenes", ALL),
    "drawing": (S.drawing, "ImageNet-Drawing", "coloured-ink hatching on beige paper", ALL),
    "corrupt": (S.corrupt, "ImageNet-C", "photos under six corruptions at severities 1-5", ALL),
    "hard": (S.hard, "ImageNet-A", "small low-contrast shapes in clutter, often occluded (8 of 10 classes)",
             tuple(range(8))),
    "rendition": (S.rendition, "ImageNet-R", "textured and inverted renditions", ALL),
    "photo": (S.photo, "ImageNet-1K val", "the pretraining domain: shaded shapes on ramped backgrounds", ALL),
}
PRETRAIN_EVAL = "photo"
SPLIT_SIZES = {"train": 200, "test": 100}     # images per class
CORPUS_SIZE = 50_000

# Corpus mixture (style, caption noun phrase, share): broad like web data.
CORPUS_STYLES = (
    (S.photo, "photo", 0.6),
    (S.gray_photo, "black and white photo", 0.1),
    (S.line_art, "line drawing", 0.1),
    (S.flat, "flat illustration", 0.1),
    (S.patterned, "striped pattern", 0.1),
)
CAPTION_FORMS = (
    "a {style} of a {color}{shape}.",
    "a {color}{shape}.",
    "{style} of a {shape}.",
    "a {size} {color}{shape}.",
)
TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a drawing of a {}.",
    "a sketch of a {}.",
    "a cartoon of a {}.",
    "a picture of a {}.",
)


def _seed(*parts) -> np.random.Generator:
    """A PCG64 stream keyed by names, independent of generation order."""
    keys = [ROOT_SEED] + [zlib.crc32(str(p).encode()) for p in parts]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(keys)))


def _balanced_labels(rng, n, classes):
    labels = np.asarray(classes)[np.arange(n) % len(classes)]
    return labels[rng.permutation(n)].astype(np.int64)


def generate(dataset: str, split: str, per_class: int | None = None):
    """Images, labels and per-sample details of one split, rendered in fixed chunks."""
    style, _, _, classes = DATASETS[dataset]
    n = (per_class or SPLIT_SIZES[split]) * len(classes)
    labels = _balanced_labels(_seed(dataset, split, "labels"), n, classes)
    images, details = [], {}
    for c, start in enumerate(range(0, n, CHUNK)):
        out = style(_seed(dataset, split, c), labels[start:start + CHUNK])
        images.append(out[0])
        for key, value in (out[2] if len(out) > 2 else {}).items():
            details.setdefault(key, []).append(value)
    return np.concatenate(images), labels, {k: np.concatenate(v) for k, v in details.items()}


def generate_corpus(size: int = CORPUS_SIZE):
    """The pretraining corpus: images, labels, captions."""
    rng = _seed("corpus", "plan")
    labels = _balanced_labels(rng, size, ALL)
    shares = np.array([s for _, _, s in CORPUS_STYLES])
    style_of = rng.choice(len(CORPUS_STYLES), size=size, p=shares / shares.sum())
    form = rng.integers(0, len(CAPTION_FORMS), size)
    images = np.zeros((size, R.IMAGE_SIZE, R.IMAGE_SIZE, 3), np.uint8)
    color = np.full(size, -1)
    for c, start in enumerate(range(0, size, CHUNK)):
        sl = slice(start, min(start + CHUNK, size))
        for k, (style, _, _) in enumerate(CORPUS_STYLES):
            idx = np.nonzero(style_of[sl] == k)[0] + start
            if idx.size:
                images[idx], color[idx] = style(_seed("corpus", c, k), labels[idx])[:2]
    captions = [
        _caption(CAPTION_FORMS[f], CORPUS_STYLES[s][1], int(col), R.CLASS_NAMES[y], i)
        for i, (f, s, col, y) in enumerate(zip(form, style_of, color, labels))
    ]
    return images, labels, captions


def _caption(form, style, color_index, shape, i):
    color = "" if color_index < 0 else R.COLOR_NAMES[color_index] + " "
    size = ("small", "large")[i % 2]
    return form.format(style=style, color=color, shape=shape, size=size)


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels.astype("<i8")).tobytes())
    return h.hexdigest()




class RibMini(Suite):
    """rib-mini with on-disk caching and manifest checks."""

    def cache_root(self) -> Path:
        return cache_dir() / "rib-mini" / f"v{GENERATOR_VERSION}"

    def manifest(self, dataset: str) -> dict:
        path = Path(self.manifest_dir) / f"{dataset}.json"
        if not path.exists():
            raise RibenchError(f"missing manifest {path}; reinstall ribench")
        return json.loads(path.read_text())

    def test_size(self, dataset: str) -> int:
        """From the manifest, so that a report does not generate images."""
        return int(self.manifest(dataset)["splits"]["test"]["images"])

    def _load(self, dataset: str, split: str):
        key = (dataset, split)
        if key in self._cache:
            return self._cache[key]
        info = self.info(dataset)
        expected = self.manifest(dataset)["splits"][split]["sha256"]
        path = self.cache_root() / f"{dataset}-{split}.npz"
        arrays = load_arrays(path)          # None when missing or damaged (its own hash)
        if arrays is not None and ("images" not in arrays or "labels" not in arrays
                                   or content_hash(arrays["images"], arrays["labels"]) != expected):
            arrays = None                   # stale: regenerate
        if arrays is None:
            images, labels, details = generate(dataset, split)
            got = content_hash(images, labels)
            if got != expected:
                raise RibenchError(
                    f"rib-mini {dataset}/{split} generated with hash {got[:12]}, manifest says "
                    f"{expected[:12]}: this machine renders differently; please report it")
            arrays = dict(images=images, labels=labels, **{f"detail_{k}": v for k, v in details.items()})
            save_arrays(path, arrays, "rib-mini cache")
        details = {k[len("detail_"):]: v for k, v in arrays.items() if k.startswith("detail_")}
        cls = TrainSplit if split == "train" else TestSplit
        out = cls(dataset, arrays["images"], arrays["labels"], np.array(info.class_mask), details)
        self._cache[key] = out
        return out

    def train_split(self, dataset: str) -> TrainSplit:
        return self._load(dataset, "train")

    def test_split(self, dataset: str) -> TestSplit:
        return self._load(dataset, "test")

    def corpus(self):
        """(images, labels, captions) of the pretraining corpus, cached."""
        path = self.cache_root() / "corpus.npz"
        found = load_arrays(path)
        if found is not None and {"images", "labels", "captions"} <= set(found):
            return found["images"], found["labels"], [str(c) for c in found["captions"]]
        images, labels, captions = generate_corpus()
        save_arrays(path, {"images": images, "labels": labels, "captions": np.array(captions)}, "rib-mini cache")
        return images, labels, captions


# ImageNet-RIB's optimizer and schedule; lr chosen on held-out 25% of the downstream
# train splits (python -m ribench.run.select_protocol; docs/rib-mini.md, docs/protocol/).
RIB_MINI_PROTOCOL = Protocol(
    optimizer="sgd", lr=3e-3, momentum=0.9, weight_decay=0.0,
    warmup_steps=10, epochs=5, batch_size=64, schedule="cosine", eval_batch_size=500,
)


# The tuned protocol chooses on three of the seven downstream sets, one seed, to fit a 2-core
# budget: a resample (IN-V2's spirit), a style shift (sketch) and corruptions (IN-C's).
SELECTION_DATASETS = ("resample", "sketch", "corrupt")


def build() -> RibMini:
    datasets = {
        name: DatasetInfo(name, desc, spirit, classes, "pretrain-eval" if name == PRETRAIN_EVAL else "downstream")
        for name, (_, spirit, desc, classes) in DATASETS.items()
    }
    return RibMini(
        name="rib-mini",
        description="generated 32px shapes: a broad captioned corpus and 7 style-shifted downstream datasets",
        class_names=R.CLASS_NAMES,
        datasets=datasets,
        pretrain_eval=PRETRAIN_EVAL,
        protocol=RIB_MINI_PROTOCOL,
        templates=TEMPLATES,
        manifest_dir=manifest_dir() / "rib-mini",
        selection_datasets=SELECTION_DATASETS,
    )


def write_manifests(directory: Path | None = None) -> None:
    """Regenerate every split and record its description and content hash."""
    directory = Path(directory or manifest_dir() / "rib-mini")
    directory.mkdir(parents=True, exist_ok=True)
    for name, (_, spirit, desc, classes) in DATASETS.items():
        splits = {}
        for split in ("train", "test"):
            images, labels, _ = generate(name, split)
            splits[split] = {"images": int(len(labels)), "per_class": SPLIT_SIZES[split],
                             "sha256": content_hash(images, labels)}
        manifest = {
            "suite": "rib-mini", "dataset": name, "generator_version": GENERATOR_VERSION,
            "role": "pretrain-eval" if name == PRETRAIN_EVAL else "downstream",
            "in_the_spirit_of": spirit, "description": desc,
            "classes": [R.CLASS_NAMES[c] for c in classes], "class_mask": list(classes),
            "image_size": R.IMAGE_SIZE,
            "split_rule": ("train and test are drawn independently from the same generator under "
                           "different seeds (root seed {}, keys: dataset, split, chunk), class-balanced"
                           ).format(ROOT_SEED),
            "splits": splits,
        }
        (directory / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    images, labels, captions = generate_corpus()
    (directory / "corpus.json").write_text(json.dumps({
        "suite": "rib-mini", "dataset": "corpus", "generator_version": GENERATOR_VERSION,
        "role": "pretraining corpus (images with captions)", "images": len(labels),
        "styles": {label: share for _, label, share in CORPUS_STYLES},
        "sha256": content_hash(images, labels),
        "captions_sha256": hashlib.sha256("\n".join(captions).encode()).hexdigest(),
    }, indent=2) + "\n")
