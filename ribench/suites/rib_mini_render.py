"""Deterministic renderer for the rib-mini images.

Identical bytes on every machine: random numbers come only from numpy's PCG64
integer/uniform streams, and pixels use only +, -, *, /, comparisons and floor,
which IEEE 754 rounds the same everywhere (no per-pixel sin/cos/exp, whose last
bit differs between SIMD implementations). Rotations use the rational
parametrisation cos = (1 - t^2)/(1 + t^2), sin = 2t/(1 + t^2).
Images are drawn at 2x resolution and averaged down, which anti-aliases edges.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 32
SUPERSAMPLE = 2
GRID = IMAGE_SIZE * SUPERSAMPLE

CLASS_NAMES = (
    "circle", "square", "triangle", "cross", "ring",
    "diamond", "bowtie", "tee", "pair", "crescent",
)

COLOR_NAMES = (
    "red", "green", "blue", "yellow", "orange", "purple",
    "pink", "cyan", "white", "black", "gray", "brown",
)
PALETTE = np.array(
    [
        (220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 220, 40),
        (245, 140, 30), (140, 50, 180), (245, 150, 200), (40, 210, 220),
        (245, 245, 245), (20, 20, 20), (128, 128, 128), (130, 80, 40),
    ],
    dtype=np.float32,
)
_LUMA = PALETTE @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
SATURATED = np.array([0, 1, 2, 3, 4, 5, 6, 7, 11])


def _pairs(low: float, high: float) -> np.ndarray:
    """(foreground, background) palette pairs whose luminance differs by [low, high)."""
    diff = np.abs(_LUMA[:, None] - _LUMA[None, :])
    fg, bg = np.nonzero((diff >= low) & (diff < high))
    return np.stack([fg, bg], axis=1)


CLEAR_PAIRS = _pairs(70.0, 1e9)
FAINT_PAIRS = _pairs(25.0, 70.0)

_coords = (np.arange(GRID, dtype=np.float32) + 0.5) / SUPERSAMPLE
GRID_Y, GRID_X = np.meshgrid(_coords, _coords, indexing="ij")


# ---------------------------------------------------------------- geometry

def geometry(rng, n, radius=(7.0, 11.0), max_tan_half_angle=0.22, margin=1.0):
    """Centre, radius and rotation of one shape per image (|angle| <= ~25 deg)."""
    r = rng.uniform(radius[0], radius[1], n).astype(np.float32)
    lo = r * margin
    cx = (lo + rng.random(n).astype(np.float32) * (IMAGE_SIZE - 2 * lo)).astype(np.float32)
    cy = (lo + rng.random(n).astype(np.float32) * (IMAGE_SIZE - 2 * lo)).astype(np.float32)
    t = rng.uniform(-max_tan_half_angle, max_tan_half_angle, n).astype(np.float32)
    cos = (1 - t * t) / (1 + t * t)
    sin = 2 * t / (1 + t * t)
    return dict(cx=cx, cy=cy, r=r, cos=cos, sin=sin)


def local_uv(geom):
    """Shape-frame coordinates in units of the radius, shape (n, GRID, GRID)."""
    dx = GRID_X[None] - geom["cx"][:, None, None]
    dy = GRID_Y[None] - geom["cy"][:, None, None]
    c, s, r = (geom[k][:, None, None] for k in ("cos", "sin", "r"))
    return (c * dx + s * dy) / r, (c * dy - s * dx) / r


def _disk(u, v, cu=0.0, cv=0.0, rad2=1.0):
    return (u - cu) * (u - cu) + (v - cv) * (v - cv) <= rad2


def _shape(k, u, v):
    au, av = np.abs(u), np.abs(v)
    if k == 0:  # circle
        return _disk(u, v)
    if k == 1:  # square
        return np.maximum(au, av) <= 0.8
    if k == 2:  # triangle, apex up
        return (v <= 0.7) & (au * 1.6 <= 0.95 * (v + 0.9))
    if k == 3:  # cross
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if k == 4:  # ring
        d2 = u * u + v * v
        return (d2 <= 1.0) & (d2 >= 0.45)
    if k == 5:  # diamond
        return au + av <= 1.05
    if k == 6:  # bowtie
        return (av <= 0.85 * au) & (au <= 0.95)
    if k == 7:  # tee
        return ((v >= -0.95) & (v <= -0.5) & (au <= 0.95)) | ((au <= 0.25) & (av <= 0.95))
    if k == 8:  # pair of dots
        return _disk(u, v, -0.5, 0.0, 0.2) | _disk(u, v, 0.5, 0.0, 0.2)
    if k == 9:  # crescent
        return _disk(u, v) & ~_disk(u, v, 0.45, -0.1, 0.6)
    raise ValueError(k)


def shape_masks(labels, u, v):
    """Boolean masks (n, GRID, GRID) of each image's class shape."""
    mask = np.zeros(u.shape, dtype=bool)
    for k in range(len(CLASS_NAMES)):
        idx = np.nonzero(labels == k)[0]
        if idx.size:
            mask[idx] = _shape(k, u[idx], v[idx])
    return mask


def erode(mask, steps):
    """4-neighbour erosion, `steps` times (in supersampled pixels)."""
    out = mask.copy()
    for _ in range(steps):
        e = out.copy()
        e[:, 1:, :] &= out[:, :-1, :]
        e[:, :-1, :] &= out[:, 1:, :]
        e[:, :, 1:] &= out[:, :, :-1]
        e[:, :, :-1] &= out[:, :, 1:]
        out = e
    return out


def outline(mask, width):
    return mask & ~erode(mask, width)


def shift(mask, dy, dx):
    """Translate masks by whole supersampled pixels, filling with False."""
    out = np.zeros_like(mask)
    h, w = mask.shape[1:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = mask[:, ys, xs]
    return out


# ---------------------------------------------------------------- painting

def jittered_colors(rng, index, amount=15.0):
    base = PALETTE[index]
    return np.clip(base + rng.uniform(-amount, amount, base.shape).astype(np.float32), 0, 255)


def solid(colors):
    """(n, 3) colours as (n, GRID, GRID, 3) canvases."""
    return np.broadcast_to(colors[:, None, None, :], (len(colors), GRID, GRID, 3)).astype(np.float32)


def gradient(rng, n, amplitude):
    """A linear brightness ramp in a random direction, (n, GRID, GRID, 1)."""
    gx = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None]
    gy = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None]
    ramp = (GRID_X[None] / IMAGE_SIZE - 0.5) * gx + (GRID_Y[None] / IMAGE_SIZE - 0.5) * gy
    return (amplitude * ramp)[..., None]


def paint(canvas, mask, colors):
    """Paint `colors` ((n, 3) or a canvas) onto `canvas` where `mask` holds."""
    src = colors[:, None, None, :] if colors.ndim == 2 else colors
    return np.where(mask[..., None], src, canvas)


def stripes(u, v, period, direction):
    """Stripe pattern in the shape frame; direction (n, 2) unit-ish vectors."""
    a = direction[:, 0][:, None, None]
    b = direction[:, 1][:, None, None]
    return np.floor((u * a + v * b) / period) % 2 == 0


def checker(period):
    cells = np.floor(GRID_X / (period * SUPERSAMPLE)) + np.floor(GRID_Y / (period * SUPERSAMPLE))
    return (cells % 2 == 0)[None]


def distractor_blobs(rng, n, count, radius=(1.5, 3.0)):
    """Small random disks (clutter) and their colours, one list entry per blob."""
    blobs = []
    for _ in range(count):
        geom = dict(
            cx=rng.uniform(0, IMAGE_SIZE, n).astype(np.float32),
            cy=rng.uniform(0, IMAGE_SIZE, n).astype(np.float32),
            r=rng.uniform(radius[0], radius[1], n).astype(np.float32),
            cos=np.ones(n, np.float32), sin=np.zeros(n, np.float32),
        )
        u, v = local_uv(geom)
        blobs.append((_disk(u, v), jittered_colors(rng, rng.integers(0, len(PALETTE), n))))
    return blobs


def occluding_bars(rng, n, width=(1.5, 3.0)):
    """One straight bar per image at a random position and slope."""
    t = rng.uniform(-1, 1, n).astype(np.float32)
    cos, sin = (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)
    off = rng.uniform(8, IMAGE_SIZE - 8, n).astype(np.float32)
    dist = GRID_X[None] * sin[:, None, None] + GRID_Y[None] * cos[:, None, None] - off[:, None, None]
    w = rng.uniform(width[0], width[1], n).astype(np.float32)[:, None, None]
    return np.abs(dist) <= w / 2


def to_gray(img):
    g = img[..., 0:1] * 0.299 + img[..., 1:2] * 0.587 + img[..., 2:3] * 0.114
    return np.broadcast_to(g, img.shape).astype(np.float32)


def downsample(img):
    """(n, GRID, GRID, 3) float -> (n, 32, 32, 3) uint8, averaging 2x2 blocks."""
    s = img[:, 0::2, 0::2] + img[:, 1::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 1::2]
    return np.clip(np.floor(s / 4 + 0.5), 0, 255).astype(np.uint8)


def pixel_noise(rng, img_u8, amount):
    """Add uniform integer noise in [-amount, amount] (per image amounts allowed)."""
    amount = np.broadcast_to(np.asarray(amount, dtype=np.int16).reshape(-1, 1, 1, 1), (len(img_u8), 1, 1, 1))
    noise = rng.integers(-32768, 32767, img_u8.shape, dtype=np.int16, endpoint=True)
    noise = (noise.astype(np.int32) * (2 * amount.astype(np.int32) + 1)) // 65536
    return np.clip(img_u8.astype(np.int32) + noise, 0, 255).astype(np.uint8)


def box_blur(img_u8, passes):
    """3x3 box blur (edge-replicated), in exact integer arithmetic."""
    x = img_u8.astype(np.int32)
    for _ in range(passes):
        p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        total = sum(p[:, dy:dy + IMAGE_SIZE, dx:dx + IMAGE_SIZE] for dy in range(3) for dx in range(3))
        x = (total + 4) // 9
    return x.astype(np.uint8)
