"""Images read from files when a batch needs them, resized and cropped the way the model is evaluated.

Real datasets do not fit in memory as decoded arrays (ImageNet val alone is 7.5 GB
at 224 px), so a split can hold an `ImageFiles` instead of an array: it indexes
like a (n, size, size, 3) uint8 array and decodes only the rows asked for. The
next batches are decoded in background threads or worker processes while the
current one trains (`Decoding`; on CUDA processes, so that the process driving
the GPU spends no time decoding). Either way the batches come in
the order asked for and hold the same bytes. A file that cannot be decoded stops
the run with its path; it is never skipped.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ribench.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def hash_names_and_sizes(h, paths, names) -> str:
    """Fold each file's name and size (-1 if unreadable) into `h`: a content proxy that reads no pixels."""
    for path, name in zip(paths, names):
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        h.update(f"{name}\0{size}\n".encode())
    return h.hexdigest()


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


@dataclass(frozen=True)
class ImageGeometry:
    """The model's eval transform up to normalisation: resize the short side, centre-crop a square.

    resize to floor(size / crop_pct) then crop `size`, as timm and open_clip evaluate
    (crop_pct 1.0 for CLIP towers, 0.9 for most supervised timm ViTs).
    """

    size: int = 224
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    @property
    def resize_to(self) -> int:
        return math.floor(self.size / self.crop_pct)

    def as_dict(self) -> dict:
        return asdict(self)


def decode_image(path: str, geometry: ImageGeometry, border: int = 0) -> np.ndarray:
    """One file -> (size, size, 3) uint8, or a DataError naming the file."""
    from PIL import Image
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")       # forces a full decode: truncated files fail here
    except FileNotFoundError:
        raise DataError(f"image file missing: {path} (run 'ribench datasets verify')") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    if border:
        width, height = image.size
        image = image.crop((border, border, width - border, height - border))
    image = TF.resize(image, geometry.resize_to, interpolation=InterpolationMode(geometry.interpolation))
    image = TF.center_crop(image, geometry.size)
    return np.asarray(image, dtype=np.uint8)


def decode_images(paths, geometry: ImageGeometry, border: int = 0) -> np.ndarray:
    """Files -> (len(paths), size, size, 3) uint8: one task of a decoding pool."""
    return np.stack([decode_image(path, geometry, border) for path in paths])


def _env_count(name: str, default: int) -> int:
    """A whole number of at least 1 from the environment variable `name`, else `default`."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"${name} must be a whole number of at least 1, got '{value}'")
    return number


def decode_threads() -> int:
    """How many images decode at once (threads or processes): $RIBENCH_DECODE_THREADS, else torch's CPU
    thread count (so --threads and a Ray cell's CPUs bound decoding too)."""
    import torch

    return _env_count("RIBENCH_DECODE_THREADS", max(1, torch.get_num_threads()))


DECODE_KINDS = ("threads", "processes")


@dataclass(frozen=True)
class Decoding:
    """How a split's files are decoded while batches are used: by whom, how many at once, how far ahead."""

    kind: str = "threads"       # "threads" or "processes"
    workers: int = 1
    ahead: int = 1              # batches decoding while the current one is used

    def task_size(self, batch: int) -> int:
        """Images per task: one each in threads (the finest balance), a worker's share of the batch in
        processes (each task is two messages between processes)."""
        return -(-batch // self.workers) if self.kind == "processes" else 1

    def pool(self):
        if self.kind == "processes":
            return ProcessPoolExecutor(self.workers, mp_context=_process_context(), initializer=_ignore_interrupts)
        return ThreadPoolExecutor(self.workers)


def decoding_for(device: str = "cpu") -> Decoding:
    """The decoding a batch bound for `device` gets. On CUDA: worker processes (the driver then spends
    ≈ 0.4 ms of CPU an image on the hand-over instead of ≈ 5 ms decoding it, and PIL holds the GIL
    in part), 4 batches ahead (a batch of large files does not stall the GPU). Elsewhere, as before: threads, one batch ahead, since decoding shares
    the cores that train. $RIBENCH_DECODE (threads|processes), $RIBENCH_DECODE_THREADS (how many) and
    $RIBENCH_PREFETCH (batches ahead) override."""
    on_gpu = str(device).startswith("cuda")
    kind = os.environ.get("RIBENCH_DECODE", "").strip() or ("processes" if on_gpu else "threads")
    if kind not in DECODE_KINDS:
        raise ConfigError(f"$RIBENCH_DECODE must be threads or processes, got '{kind}'")
    return Decoding(kind, decode_threads(), _env_count("RIBENCH_PREFETCH", 4 if on_gpu else 1))


def _process_context():
    """Workers forked from this process on Linux, as torch's DataLoader starts its own, so they start in
    milliseconds: they run only PIL and numpy, never torch's thread pool or CUDA, which a fork leaves
    behind. A fresh interpreter (spawn) would import torch again and re-run the main script first; it is
    used where forking is unsafe (macOS) or absent (Windows)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _ignore_interrupts() -> None:
    """Ctrl-C is the driver's to handle: it stops the pool; workers print no traceback of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _gathered(futures) -> np.ndarray:
    """One batch from its images' futures, in order; a decoding process that died is a one-line error."""
    try:
        return np.concatenate([future.result() for future in futures])
    except BrokenExecutor:
        raise DataError("an image-decoding worker process died (out of memory?); "
                        "set RIBENCH_DECODE=threads to decode in threads instead") from None


class ImageFiles:
    """An array-like (n, size, size, 3) uint8 view of image files, decoded when indexed."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, geometry: ImageGeometry = ImageGeometry(), border: int = 0):
        self.paths = np.asarray(list(paths), dtype=object)
        self.geometry = geometry
        self.border = border

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.geometry.size, self.geometry.size, 3)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, {self.geometry})"

    def _decode(self, i) -> np.ndarray:
        return decode_image(self.paths[i], self.geometry, self.border)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._decode(int(index))
        rows = np.arange(len(self))[index]
        return self._decode_rows(rows)

    def __array__(self, dtype=None, copy=None):
        """Every image decoded: only for small splits; batches are the way to read large ones."""
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def _decode_rows(self, rows) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0,) + self.shape[1:], np.uint8)
        with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
            return np.stack(list(pool.map(self._decode, rows)))

    def prefetched(self, order: np.ndarray, batch_size: int, decoding: Decoding | None = None):
        """Yield (indices, images) per batch of `order`; `decoding.ahead` next batches decode while one is used.

        Closing the generator (or dropping it midway) stops its pool: queued images are cancelled."""
        decoding = decoding or decoding_for("cpu")
        chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if not chunks:
            return
        pool = decoding.pool()
        upcoming, pending = iter(chunks), collections.deque()

        def submit_until(batches: int) -> None:
            for idx in itertools.islice(upcoming, max(0, batches - len(pending))):
                step = decoding.task_size(len(idx))
                pending.append([pool.submit(decode_images, list(self.paths[idx[s:s + step]]), self.geometry,
                                            self.border) for s in range(0, len(idx), step)])

        try:
            submit_until(decoding.ahead)
            for idx in chunks:
                images = _gathered(pending.popleft())
                submit_until(decoding.ahead)
                yield idx, images
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def subset(self, rows) -> "ImageFiles":
        return ImageFiles(self.paths[rows], self.geometry, self.border)

    def with_geometry(self, geometry: ImageGeometry) -> "ImageFiles":
        return ImageFiles(self.paths, geometry, self.border)

    def digest(self) -> str:
        """Names, sizes and the transform: changes when a file or the geometry changes, without reading pixels."""
        h = hashlib.sha256(repr((self.geometry.as_dict(), self.border)).encode())
        return hash_names_and_sizes(h, self.paths, self.paths)
