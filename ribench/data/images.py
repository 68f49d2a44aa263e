"""Images read from files when a batch needs them, resized and cropped the way the model is evaluated.

Real datasets do not fit in memory as decoded arrays (ImageNet val alone is 7.5 GB
at 224 px), so a split can hold an `ImageFiles` instead of an array: it indexes
like a (n, size, size, 3) uint8 array and decodes only the rows asked for. The
next batch is decoded in background threads while the current one trains.
A file that cannot be decoded stops the run with its path; it is never skipped.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ribench.errors import DataError

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


def decode_threads() -> int:
    """Threads that decode images: $RIBENCH_DECODE_THREADS, else torch's CPU thread count."""
    if os.environ.get("RIBENCH_DECODE_THREADS"):
        return max(1, int(os.environ["RIBENCH_DECODE_THREADS"]))
    import torch

    return max(1, torch.get_num_threads())


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

    def prefetched(self, order: np.ndarray, batch_size: int):
        """Yield (indices, images) per batch of `order`; the next batch decodes while this one is used."""
        chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if not chunks:
            return
        pool = ThreadPoolExecutor(max_workers=decode_threads())
        try:
            pending = [pool.submit(self._decode, i) for i in chunks[0]]
            for k, idx in enumerate(chunks):
                images = np.stack([f.result() for f in pending])
                if k + 1 < len(chunks):
                    pending = [pool.submit(self._decode, i) for i in chunks[k + 1]]
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
