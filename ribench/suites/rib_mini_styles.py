"""The image styles of rib-mini.

The pretraining corpus mixes clean photos with light versions of other styles
(as LAION holds some sketches and cartoons); the downstream datasets are
stronger, narrower shifts of the same ten classes, each in the spirit of one
ImageNet-RIB dataset. Every style returns uint8 images and the palette index of
the shape's colour (for captions; -1 where the shape has no single colour).
"""

from __future__ import annotations

import numpy as np

from ribench.suites import rib_mini_render as R


def _shape_frame(rng, labels, radius=(7.0, 11.0)):
    """One shape per image: count, shape-frame coordinates u, v and the class masks."""
    n = len(labels)
    u, v = R.local_uv(R.geometry(rng, n, radius))
    return n, u, v, R.shape_masks(labels, u, v)


def _scene(rng, n, pairs, gradient_amp):
    """Background canvas and foreground colours from contrast-checked palette pairs."""
    pick = pairs[rng.integers(0, len(pairs), n)]
    fg_index, bg_index = pick[:, 0], pick[:, 1]
    canvas = R.solid(R.jittered_colors(rng, bg_index)) + R.gradient(rng, n, gradient_amp)
    return canvas, R.jittered_colors(rng, fg_index), fg_index


def _shade(rng, colors, u, v, strength):
    """Foreground canvas with a linear shading across the shape."""
    n = len(colors)
    a = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None]
    b = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None]
    factor = 1 + strength * (u * a + v * b) / 2
    return colors[:, None, None, :] * factor[..., None]


def photo(rng, labels, *, radius=(7.0, 11.0), pairs=None, blob_p=0.3, gradient_amp=40.0, noise=6):
    """The pretraining domain: a shaded shape on a ramped background, a little clutter."""
    n, u, v, mask = _shape_frame(rng, labels, radius)
    canvas, fg, fg_index = _scene(rng, n, R.CLEAR_PAIRS if pairs is None else pairs, gradient_amp)
    for blob, color in R.distractor_blobs(rng, n, 1):
        show = rng.random(n) < blob_p
        canvas = R.paint(canvas, blob & show[:, None, None], color)
    canvas = R.paint(canvas, mask, _shade(rng, fg, u, v, 0.3))
    return R.pixel_noise(rng, R.downsample(canvas), noise), fg_index


def resample(rng, labels):
    """IN-V2-like: the same process with shifted parameters (smaller, busier)."""
    return photo(rng, labels, radius=(5.5, 9.0), blob_p=0.8, gradient_amp=60.0, noise=10)


def gray_photo(rng, labels):
    """Corpus: black-and-white photos."""
    images, _ = photo(rng, labels)
    return _gray_u8(images), np.full(len(labels), -1)


def _gray_u8(images):
    x = images.astype(np.int32)
    g = (x[..., 0] * 299 + x[..., 1] * 587 + x[..., 2] * 114 + 500) // 1000
    return np.repeat(g[..., None], 3, axis=-1).astype(np.uint8)


def line_art(rng, labels):
    """Corpus: a clean coloured outline on a plain light background."""
    n, u, v, mask = _shape_frame(rng, labels)
    ink_index = R.SATURATED[rng.integers(0, len(R.SATURATED), n)]
    canvas = R.solid(np.full((n, 3), 235, np.float32) + rng.uniform(-15, 15, (n, 1)).astype(np.float32))
    canvas = R.paint(canvas, R.outline(mask, 3), R.jittered_colors(rng, ink_index))
    return R.downsample(canvas), ink_index


def flat(rng, labels):
    """Corpus: a flat colour shape on a flat background, no shading."""
    n, u, v, mask = _shape_frame(rng, labels)
    canvas, fg, fg_index = _scene(rng, n, R.CLEAR_PAIRS, 0.0)
    return R.downsample(R.paint(canvas, mask, fg)), fg_index


def patterned(rng, labels):
    """Corpus: a striped shape on a plain background."""
    n, u, v, mask = _shape_frame(rng, labels)
    canvas, fg, fg_index = _scene(rng, n, R.CLEAR_PAIRS, 20.0)
    direction = np.stack([np.ones(n, np.float32), np.zeros(n, np.float32)], 1)
    fill = R.stripes(u, v, 0.35, direction)
    canvas = R.paint(canvas, mask & fill, fg)
    canvas = R.paint(canvas, R.outline(mask, 2), fg)
    return R.downsample(canvas), fg_index


def sketch(rng, labels):
    """IN-Sketch-like: grey pencil outlines, doubled and broken, on paper."""
    n, u, v, mask = _shape_frame(rng, labels)
    paper = rng.uniform(215, 250, (n, 1)).astype(np.float32)
    canvas = R.solid(np.repeat(paper, 3, axis=1)) + R.gradient(rng, n, 20.0)
    stroke = R.outline(mask, 2)
    dy, dx = rng.integers(-3, 4, 2)
    stroke |= R.shift(R.outline(mask, 1), int(dy), int(dx))
    dashes = R.stripes(u, v, 0.5, np.stack([np.full(n, 0.6, np.float32), np.full(n, 0.8, np.float32)], 1))
    keep = dashes | (rng.random((n, 1, 1)) < 0.5)
    lead = rng.uniform(30, 110, (n, 1)).astype(np.float32)
    canvas = R.paint(canvas, stroke & keep, np.repeat(lead, 3, axis=1))
    scribble = R.occluding_bars(rng, n, (0.5, 1.0)) & (rng.random((n, 1, 1)) < 0.6)
    canvas = R.paint(canvas, scribble, np.repeat(lead + 60, 3, axis=1))
    return R.pixel_noise(rng, R.downsample(canvas), 5), np.full(n, -1)


def cartoon(rng, labels):
    """IN-Cartoon-like: flat bright shape, thick black outline, two-tone scene, eyes."""
    n, u, v, mask = _shape_frame(rng, labels)
    fg_index = R.SATURATED[rng.integers(0, len(R.SATURATED), n)]
    sky = R.jittered_colors(rng, rng.integers(0, len(R.PALETTE), n), 30.0) * 0.5 + 127
    ground = R.jittered_colors(rng, rng.integers(0, len(R.PALETTE), n), 30.0) * 0.5 + 100
    horizon = rng.uniform(14, 28, n).astype(np.float32)[:, None, None]
    canvas = R.paint(R.solid(sky), R.GRID_Y[None] > horizon, ground)
    canvas = R.paint(canvas, mask, R.jittered_colors(rng, fg_index, 10.0))
    canvas = R.paint(canvas, R.outline(mask, 4), np.zeros((n, 3), np.float32))
    eyes = (R._disk(u, v, -0.3, -0.15, 0.02) | R._disk(u, v, 0.3, -0.15, 0.02)) & mask
    eyes &= (rng.random(n) < 0.6)[:, None, None]
    canvas = R.paint(canvas, eyes, np.full((n, 3), 255, np.float32))
    return R.downsample(canvas), fg_index


def drawing(rng, labels):
    """IN-Drawing-like: coloured-ink hatching inside a thin outline, on beige paper."""
    n, u, v, mask = _shape_frame(rng, labels)
    ink_index = np.array([2, 9, 0, 1, 5])[rng.integers(0, 5, n)]
    ink = R.jittered_colors(rng, ink_index, 25.0)
    paper = np.array([235, 222, 195], np.float32) + rng.uniform(-15, 15, (n, 3)).astype(np.float32)
    canvas = R.solid(paper) + R.gradient(rng, n, 25.0)
    t = rng.uniform(-1, 1, n).astype(np.float32)
    direction = np.stack([(1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)], 1)
    hatch = ~R.stripes(u, v, rng.uniform(0.18, 0.3), direction)
    canvas = R.paint(canvas, mask & hatch, ink)
    canvas = R.paint(canvas, R.outline(mask, 1), ink)
    return R.pixel_noise(rng, R.downsample(canvas), 8), ink_index


CORRUPTIONS = ("noise", "blur", "contrast", "pixelate", "brightness", "saltpepper")


def corrupt(rng, labels):
    """IN-C-like: photos under one of six corruptions at severity 1-5."""
    n = len(labels)
    images, fg_index = photo(rng, labels)
    kind = rng.integers(0, len(CORRUPTIONS), n)
    severity = rng.integers(1, 6, n)
    out = images.copy()
    sel = kind == 0
    out[sel] = R.pixel_noise(rng, images[sel], 20 + 14 * severity[sel])
    for s in range(1, 6):
        sel = (kind == 1) & (severity == s)
        out[sel] = R.box_blur(images[sel], s)
    sel = kind == 2
    f = (10 - 1.5 * severity[sel]).astype(np.int32)[:, None, None, None]
    x = images[sel].astype(np.int32)
    out[sel] = (128 + (x - 128) * f // 20).astype(np.uint8)
    for s in range(1, 6):
        sel = (kind == 3) & (severity == s)
        block = (2, 3, 4, 4, 6)[s - 1]
        x = images[sel]
        ys = (np.arange(R.IMAGE_SIZE) // block) * block
        out[sel] = x[:, ys][:, :, ys]
    sel = kind == 4
    x = images[sel].astype(np.int32) + (30 * severity[sel])[:, None, None, None]
    out[sel] = np.clip(x, 0, 255).astype(np.uint8)
    sel = kind == 5
    x = images[sel].copy()
    draw = rng.integers(0, 1000, x.shape[:3])
    rate = (30 * severity[sel])[:, None, None]
    x[draw < rate // 2] = 0
    x[(draw >= rate // 2) & (draw < rate)] = 255
    out[sel] = x
    return out, fg_index, dict(corruption=kind, severity=severity)


def hard(rng, labels):
    """IN-A-like: small, low-contrast shapes in clutter, often crossed by a bar."""
    n, u, v, mask = _shape_frame(rng, labels, radius=(5.0, 7.5))
    canvas, fg, fg_index = _scene(rng, n, R.FAINT_PAIRS, 80.0)
    for blob, color in R.distractor_blobs(rng, n, 4, radius=(1.5, 4.0)):
        canvas = R.paint(canvas, blob, color)
    canvas = R.paint(canvas, mask, _shade(rng, fg, u, v, 0.4))
    bar = R.occluding_bars(rng, n) & (rng.random(n) < 0.6)[:, None, None]
    canvas = R.paint(canvas, bar, R.jittered_colors(rng, rng.integers(0, len(R.PALETTE), n)))
    return R.pixel_noise(rng, R.downsample(canvas), 12), fg_index


def rendition(rng, labels):
    """IN-R-like: renditions with textures: checkered or dotted fills, inverted silhouettes."""
    n, u, v, mask = _shape_frame(rng, labels)
    canvas, fg, fg_index = _scene(rng, n, R.CLEAR_PAIRS, 30.0)
    second = R.jittered_colors(rng, rng.integers(0, len(R.PALETTE), n))
    bg_texture = R.checker(3.0) & (rng.random((n, 1, 1)) < 0.5)
    canvas = R.paint(canvas, bg_texture, canvas[:, 0, 0, :] * 0.7 + 40)
    kind = rng.integers(0, 3, n)[:, None, None]
    dots = (np.floor(u / 0.3) % 2 == 0) & (np.floor(v / 0.3) % 2 == 0)
    fill = np.where(kind == 0, dots, np.where(kind == 1, R.checker(1.5), True))
    canvas = R.paint(canvas, mask & fill, fg)
    canvas = R.paint(canvas, mask & ~fill, second)
    canvas = R.paint(canvas, R.outline(mask, 2) & (kind == 2), second)
    images = R.downsample(canvas)
    invert = rng.random(n) < 0.3
    images[invert] = 255 - images[invert]
    return R.pixel_noise(rng, images, 6), fg_index
