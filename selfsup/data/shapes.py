"""The built-in procedural dataset: textured shapes on varied backgrounds, with ground-truth foreground masks.

It is the default dataset of the demo and the tests: it needs no download, generates 10,000 images of 32 px in 2-4 s on
one CPU core, and has what RELICv2's background masking (A4) needs: a soft foreground mask per image.

**The task.** The label is the object's *shape*, one of :data:`SHAPE_NAMES` (class ``k`` is ``SHAPE_NAMES[k]``; the
first ``num_classes`` are used). Everything else is drawn independently of the label, so a classifier has to look at the
object's outline:

* the object: colour (random hue, saturation, value; a second colour for two-tone objects), texture inside the shape
  (solid, a two-tone gradient, stripes at a random angle and period, a checkerboard, or smooth value noise), scale (the
  shape's unit circle spans 45-90 % of the side, so the shape itself about 40-85 %), rotation (any angle), slight aspect
  jitter (+-10 % per axis, too little to turn a square into a diamond or a circle into an ellipse) and position (at most
  ~15 % of the radius outside the image). If the object's mean colour is close to the background behind it
  (:data:`MIN_OBJECT_CONTRAST`), its value is pushed to the opposite end so that it stays visible.
* the background, from one of :data:`BACKGROUND_FAMILIES`: two-colour linear or radial gradients, soft stripes,
  rotated checkerboards, two-octave coloured value noise, and random crops (35-100 % of the short side, flipped half the
  time, brightness/contrast jittered, grayscale ones tinted half the time) of the natural photos bundled with
  scikit-image (:data:`PHOTO_NAMES`; loaded from the package, never downloaded).

**Difficulty.** The contrast constants below (background patterns, photos, object textures) were set so that the task
needs shape, not colour or background: a linear probe on raw pixels or on a random-init network stays within a few
points of chance. The ten classes are hard for a 4-layer network (several are round: circle, ring, hexagon, pentagon,
ellipse, crescent); the first five (circle, square, triangle, star, plus) are distinct enough for the demo's
``convnet_tiny`` at 32 px to learn in a few CPU minutes. ``benchmarks/diagnostics/shapes_difficulty.py`` measures both
(raw pixels, random init, and supervised training of the same network; numbers in ``benchmarks/LOGBOOK.md``).

**Spurious backgrounds.** With probability ``spurious`` an image's background family is tied to its class (class ``k``
-> family ``k mod 5`` and, for photos, photo ``k mod 11``); otherwise family and photo are uniform. The per-image
``background`` (family id), ``background_photo`` (photo id, -1 when not a photo) and ``background_tied`` tensors let an
experiment measure reliance on the spurious cue.

**Rendering.** Each shape is a 256 px template (drawn with Pillow at 1024 px and area-averaged, so its edge is already
anti-aliased). An image's mask is the template warped by the object's affine transform onto a grid 4x finer than the
image (``grid_sample``) and area-averaged 4x4 (``avg_pool2d``): soft, anti-aliased masks, computed in one batched call
per class. Textures and backgrounds are smooth at pixel scale and rendered directly at the image resolution; the image
is ``mask * object + (1 - mask) * background``.

**Determinism.** Image ``i`` of a split depends only on ``(seed, split, i)``: its random numbers are one vector drawn
from ``np.random.default_rng([seed, split_id, 0, i])``, and labels come in blocks of ``num_classes`` consecutive images,
each block a permutation of the classes drawn from ``np.random.default_rng([seed, split_id, 1, block])`` (exactly
balanced classes in any prefix of whole blocks, e.g. under ``data.limit``). The train (``split_id`` 0) and test (1)
streams are disjoint, and the same configuration gives bit-identical tensors.

**Statistics.** ``mean`` / ``std`` are measured on the first ``stats_images`` (default 2048) train images of the same
configuration, for both splits, and cached per process.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.data.base import InMemoryDataset
from selfsup.errors import ConfigError

DEFAULT_SEED = 0

SHAPE_NAMES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "plus", "ring", "crescent", "heart", "arrow",
                                "hexagon", "L-shape", "diamond", "ellipse", "pentagon", "T-shape", "semicircle")
BACKGROUND_FAMILIES: Tuple[str, ...] = ("gradient", "stripes", "checker", "noise", "photo")
PHOTO_FAMILY = BACKGROUND_FAMILIES.index("photo")
# Natural photos shipped inside scikit-image (no download); the last five are grayscale.
PHOTO_NAMES: Tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                                "immunohistochemistry", "camera", "grass", "gravel", "brick", "coins")

SPLIT_IDS = {"train": 0, "test": 1}
SUPERSAMPLE = 4  # masks are rendered on a grid 4x finer than the image, then area-averaged
TEMPLATE_SIZE = 256  # shape templates: drawn at 4 x 256 px, area-averaged to 256
SCALE_RANGE = (0.45, 0.90)  # diameter of the shape's unit circle, as a fraction of the image side
BG_PATTERN_CONTRAST = 0.35  # second colour of gradients/stripes/checkers: c1 + this * (random colour - c1)
BG_NOISE_CONTRAST = 0.6  # amplitude of the coarse value-noise octave
PHOTO_CONTRAST = (0.4, 0.8)  # photo crops: contrast factor range
FG_TEXTURE_CONTRAST = 0.5  # the object's second colour: c1 + this * (random colour - c1)
MIN_OBJECT_CONTRAST = 0.4  # RGB distance between the object's and the background's mean colours under the mask
ASPECT_JITTER = 0.10  # x scaled by exp(+-a), y by exp(-+a)
CHUNK = 256  # images rendered per batched pass (bounds memory at large sizes)
STATS_IMAGES = 2048

# Layout of the per-image uniform random vector: name -> number of entries.
_LAYOUT: Tuple[Tuple[str, int], ...] = (
    ("tie", 1), ("family", 1), ("photo", 1),
    ("size", 1), ("rot", 1), ("aspect", 1), ("cx", 1), ("cy", 1),
    ("fg", 3), ("fg2", 3), ("tex", 1), ("tex_angle", 1), ("tex_period", 1), ("tex_phase", 1), ("tex_sharp", 1),
    ("bg1", 3), ("bg2", 3), ("bg_angle", 1), ("bg_period", 1), ("bg_phase", 1), ("bg_sharp", 1), ("bg_radial", 1),
    ("bg_centre", 2),
    ("ph_frac", 1), ("ph_pos", 2), ("ph_flip", 1), ("ph_tint", 1), ("ph_tint_hs", 2), ("ph_bright", 1),
    ("ph_contrast", 1),
    ("fg_noise", 16), ("bg_noise_coarse", 3 * 4 * 4), ("bg_noise_fine", 3 * 8 * 8),
)
_OFFSETS: Dict[str, slice] = {}
_pos = 0
for _name, _count in _LAYOUT:
    _OFFSETS[_name] = slice(_pos, _pos + _count)
    _pos += _count
NUM_UNIFORMS = _pos
del _pos, _name, _count


# --------------------------------------------------------------------------------------------------------------------
# Cached resources: shape templates and photos
# --------------------------------------------------------------------------------------------------------------------


def _regular(n: int, r: float, start: float = -math.pi / 2) -> List[Tuple[float, float]]:
    return [(r * math.cos(start + 2 * math.pi * k / n), r * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int, outer: float, inner: float) -> List[Tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart() -> List[Tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2
    s = 0.88 / max(np.abs(x).max(), np.abs(y).max())
    return list(zip((x * s).tolist(), (y * s).tolist()))


def _draw_shape(name: str, res: int):
    """Draw one shape in template coordinates ([-1, 1]^2, y down) on a ``res`` px Pillow canvas."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (res, res), 0)
    d = ImageDraw.Draw(img)

    def px(points):
        return [((x + 1) * res / 2, (y + 1) * res / 2) for x, y in points]

    def disk(cx, cy, r, fill=255):
        d.ellipse(px([(cx - r, cy - r), (cx + r, cy + r)]), fill=fill)

    if name == "circle":
        disk(0, 0, 0.80)
    elif name == "square":
        d.polygon(px([(-0.62, -0.62), (0.62, -0.62), (0.62, 0.62), (-0.62, 0.62)]), fill=255)
    elif name == "triangle":
        d.polygon(px([(x, y + 0.12) for x, y in _regular(3, 0.95)]), fill=255)  # centred on its bounding box
    elif name == "star":
        d.polygon(px(_star(5, 0.95, 0.42)), fill=255)
    elif name == "plus":
        w, a = 0.25, 0.85
        d.polygon(px([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w),
                      (-a, -w), (-w, -w)]), fill=255)
    elif name == "ring":
        disk(0, 0, 0.85)
        disk(0, 0, 0.50, fill=0)
    elif name == "crescent":
        disk(-0.08, 0, 0.82)
        disk(0.30, -0.12, 0.68, fill=0)
    elif name == "heart":
        d.polygon(px(_heart()), fill=255)
    elif name == "arrow":
        d.polygon(px([(-0.88, -0.17), (0.08, -0.17), (0.08, -0.56), (0.9, 0.0), (0.08, 0.56), (0.08, 0.17),
                      (-0.88, 0.17)]), fill=255)
    elif name == "hexagon":
        d.polygon(px(_regular(6, 0.85)), fill=255)
    elif name == "L-shape":
        d.polygon(px([(-0.58, -0.8), (-0.14, -0.8), (-0.14, 0.36), (0.6, 0.36), (0.6, 0.8), (-0.58, 0.8)]), fill=255)
    elif name == "diamond":
        d.polygon(px([(0, -0.92), (0.46, 0), (0, 0.92), (-0.46, 0)]), fill=255)
    elif name == "ellipse":
        d.ellipse(px([(-0.9, -0.45), (0.9, 0.45)]), fill=255)
    elif name == "pentagon":
        d.polygon(px([(x, y + 0.07) for x, y in _regular(5, 0.9)]), fill=255)
    elif name == "T-shape":
        d.polygon(px([(-0.75, -0.8), (0.75, -0.8), (0.75, -0.38), (0.21, -0.38), (0.21, 0.8), (-0.21, 0.8),
                      (-0.21, -0.38), (-0.75, -0.38)]), fill=255)
    elif name == "semicircle":
        d.pieslice(px([(-0.9, -0.45), (0.9, 1.35)]), start=180, end=360, fill=255)
    else:  # pragma: no cover - SHAPE_NAMES and this function are kept in step by the tests
        raise ValueError(f"no drawing for shape '{name}'")
    return np.asarray(img, dtype=np.float32)


@lru_cache(maxsize=1)
def shape_templates() -> Tensor:
    """float32 ``(len(SHAPE_NAMES), 1, 256, 256)`` coverage in [0, 1]: drawn at 1024 px, area-averaged 4x4."""
    f, t = SUPERSAMPLE, TEMPLATE_SIZE
    out = np.empty((len(SHAPE_NAMES), 1, t, t), dtype=np.float32)
    for k, name in enumerate(SHAPE_NAMES):
        big = _draw_shape(name, t * f) / 255.0
        out[k, 0] = big.reshape(t, f, t, f).mean(axis=(1, 3))
    return torch.from_numpy(out)


@lru_cache(maxsize=1)
def _photo_arrays() -> Tuple[np.ndarray, ...]:
    """The bundled scikit-image photos as uint8 ``(H, W, 3)`` (grayscale ones replicated), loaded once per process."""
    import skimage.data

    out = []
    for name in PHOTO_NAMES:
        a = np.asarray(getattr(skimage.data, name)())
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(a[:, :, :3]).astype(np.uint8))
    return tuple(out)


@lru_cache(maxsize=1)
def photo_is_gray() -> Tuple[bool, ...]:
    """Whether each of :data:`PHOTO_NAMES` is a grayscale photo (those may be tinted)."""
    return tuple(bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))
                 for a in _photo_arrays())


@lru_cache(maxsize=8)
def _photos_for_size(image_size: int) -> Tuple[Tensor, ...]:
    """The photos as float32 ``(1, 3, h, w)`` in [0, 1], downscaled (antialiased) so the short side is ~3 x 2 x the
    image size: crops of 35-100 % of it are then sampled at 2x the image size with little aliasing."""
    from PIL import Image

    target = 6 * image_size
    out = []
    for a in _photo_arrays():
        h, w = a.shape[:2]
        if min(h, w) > target:  # Pillow's antialiased (support-scaled) bilinear downscale: milliseconds
            k = target / min(h, w)
            a = np.array(Image.fromarray(a).resize((max(1, round(w * k)), max(1, round(h * k))),
                                                   Image.Resampling.BILINEAR))
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        out.append(t.to(torch.float32).div_(255.0).unsqueeze(0).contiguous())
    return tuple(out)


@lru_cache(maxsize=8)
def _pixel_grid(image_size: int) -> Tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``X, Y`` in [-1, 1] (``(S, S)`` each, align_corners=False convention)."""
    c = (torch.arange(image_size, dtype=torch.float32) + 0.5) * (2.0 / image_size) - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


# --------------------------------------------------------------------------------------------------------------------
# Random numbers and labels
# --------------------------------------------------------------------------------------------------------------------


def _split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_IDS)}; got '{split}'")
    return SPLIT_IDS[split]


def image_uniforms(seed: int, split: str, start: int, stop: int) -> np.ndarray:
    """float32 ``(stop - start, NUM_UNIFORMS)``: image ``i``'s vector comes from
    ``default_rng([seed, split, 0, i])``."""
    sid = _split_id(split)
    out = np.empty((stop - start, NUM_UNIFORMS), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        out[row] = np.random.default_rng([seed, sid, 0, i]).random(NUM_UNIFORMS, dtype=np.float32)
    return out


def shape_labels(seed: int, split: str, num_classes: int, start: int, stop: int) -> np.ndarray:
    """int64 labels of images ``start..stop-1``: each block of ``num_classes`` images is a random permutation."""
    sid = _split_id(split)
    out = np.empty(stop - start, dtype=np.int64)
    for b in range(start // num_classes, (stop + num_classes - 1) // num_classes if stop > start else 0):
        perm = np.random.default_rng([seed, sid, 1, b]).permutation(num_classes)
        lo, hi = max(start, b * num_classes), min(stop, (b + 1) * num_classes)
        out[lo - start:hi - start] = perm[lo - b * num_classes:hi - b * num_classes]
    return out


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``(..., 3)`` HSV in [0, 1] -> RGB in [0, 1] (the standard piecewise-linear hue wheel)."""
    h, s, v = hsv.unbind(-1)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype)
    k = torch.remainder(n + h.unsqueeze(-1) * 6.0, 6.0)
    w = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(-1) - (v * s).unsqueeze(-1) * w


def _luma(rgb: Tensor) -> Tensor:
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


class _U:
    """Named views of a chunk's uniform matrix (``u.size`` -> ``(n,)``, ``u.fg`` -> ``(n, 3)``)."""

    def __init__(self, u: Tensor):
        self._u = u

    def __getattr__(self, name: str) -> Tensor:
        sl = _OFFSETS[name]
        col = self._u[:, sl]
        return col[:, 0] if sl.stop - sl.start == 1 else col


def _soft_wave(t: Tensor, sharp: Tensor) -> Tensor:
    """A soft square wave in [0, 1] of ``sin(2 pi t)``: smooth enough not to alias at a period of 3 px."""
    return 0.5 + 0.5 * torch.tanh(sharp * torch.sin(2 * math.pi * t))


def _object_transforms(u: _U, image_size: int) -> Tuple[Tensor, Tensor]:
    """``theta (n, 2, 3)``: normalised image coords -> template coords (the object's inverse affine map); and the
    object's radius in pixels ``(n,)``."""
    s = float(image_size)
    lo, hi = SCALE_RANGE
    radius = (lo + (hi - lo) * u.size) * s / 2  # pixels
    angle = u.rot * 2 * math.pi
    a = torch.exp((u.aspect * 2 - 1) * ASPECT_JITTER)
    margin = 0.85 * radius  # centre keeps the shape's unit circle at most 15 % outside the image
    cx = margin + u.cx * (s - 2 * margin)
    cy = margin + u.cy * (s - 2 * margin)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # M = diag(1/a, a) @ R(-angle) / radius
    m00, m01 = cos / a / radius, sin / a / radius
    m10, m11 = -sin * a / radius, cos * a / radius
    half = s / 2
    ox, oy = half - cx, half - cy
    theta = torch.stack([
        torch.stack([half * m00, half * m01, m00 * ox + m01 * oy], -1),
        torch.stack([half * m10, half * m11, m10 * ox + m11 * oy], -1),
    ], 1)
    return theta, radius


def _render_alpha(labels: Tensor, theta: Tensor, image_size: int) -> Tensor:
    """Soft masks ``(n, 1, S, S)`` in [0, 1]: each template warped onto a 4x finer grid and area-averaged."""
    templates = shape_templates()
    n, s, f = labels.shape[0], image_size, SUPERSAMPLE
    alpha = torch.empty(n, 1, s, s)
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().squeeze(1)
        m = idx.numel()
        grid = F.affine_grid(theta[idx], [m, 1, s * f, s * f], align_corners=False)
        # one grid_sample call for the whole class: the grids of its m images stacked along the height
        fine = F.grid_sample(templates[k:k + 1], grid.reshape(1, m * s * f, s * f, 2), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        alpha[idx] = F.avg_pool2d(fine.reshape(m, 1, s * f, s * f), f)
    return alpha


def _render_foreground(u: _U, theta: Tensor, radius: Tensor, image_size: int) -> Tensor:
    """Object colour and texture ``(n, 3, S, S)``, in the object's own (rotating) coordinates."""
    n, s = theta.shape[0], image_size
    q = F.affine_grid(theta, [n, 1, s, s], align_corners=False)  # template coords of every pixel, (n, S, S, 2)
    qx, qy = q[..., 0], q[..., 1]
    c1 = hsv_to_rgb(torch.stack([u.fg[:, 0], 0.3 + 0.7 * u.fg[:, 1], 0.3 + 0.7 * u.fg[:, 2]], -1))
    c2 = hsv_to_rgb(torch.stack([u.fg[:, 0] + 0.25 + 0.5 * u.fg2[:, 0], 0.3 + 0.7 * u.fg2[:, 1],
                                 0.3 + 0.7 * u.fg2[:, 2]], -1))
    c2 = c1 + FG_TEXTURE_CONTRAST * (c2 - c1)
    tex = u.tex
    ang = u.tex_angle * 2 * math.pi
    along = (qx * torch.cos(ang)[:, None, None] + qy * torch.sin(ang)[:, None, None]) * radius[:, None, None]  # px
    perp = (-qx * torch.sin(ang)[:, None, None] + qy * torch.cos(ang)[:, None, None]) * radius[:, None, None]
    period = ((3.0 + 4.0 * u.tex_period) * s / 32.0)[:, None, None]  # 3-7 px at 32 px
    sharp = (1.0 + 2.0 * u.tex_sharp)[:, None, None]
    phase = u.tex_phase[:, None, None]
    w = torch.zeros(n, s, s)
    # solid two-tone gradient (solid: tex < 0.35, of which the first 40 % get a gradient)
    grad = (tex < 0.14)
    if grad.any():
        w[grad] = (0.5 + 0.5 * along[grad] / radius[grad][:, None, None]).clamp(0, 1)
    stripes = (tex >= 0.35) & (tex < 0.60)
    if stripes.any():
        w[stripes] = _soft_wave(along[stripes] / period[stripes] + phase[stripes], sharp[stripes])
    checker = (tex >= 0.60) & (tex < 0.75)
    if checker.any():
        a = torch.sin(math.pi * along[checker] / period[checker])
        b = torch.sin(math.pi * perp[checker] / period[checker])
        w[checker] = 0.5 + 0.5 * torch.tanh(2.0 * sharp[checker] * a * b)
    noise = tex >= 0.75
    if noise.any():
        grid = u.fg_noise[noise].reshape(-1, 1, 4, 4)
        smooth = F.grid_sample(grid, q[noise], mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
        w[noise] = ((smooth - 0.5) * 2.5 + 0.5).clamp(0, 1)
    w = w.unsqueeze(1)
    return c1[:, :, None, None] + w * (c2 - c1)[:, :, None, None]


def _render_background(u: _U, family: Tensor, photo: Tensor, image_size: int) -> Tensor:
    """Backgrounds ``(n, 3, S, S)`` in [0, 1], family by family."""
    n, s = family.shape[0], image_size
    x, y = _pixel_grid(s)
    bg = torch.empty(n, 3, s, s)
    c1 = hsv_to_rgb(torch.stack([u.bg1[:, 0], 0.9 * u.bg1[:, 1], 0.15 + 0.85 * u.bg1[:, 2]], -1))
    c2 = hsv_to_rgb(torch.stack([u.bg2[:, 0], 0.9 * u.bg2[:, 1], 0.15 + 0.85 * u.bg2[:, 2]], -1))
    c2 = c1 + BG_PATTERN_CONTRAST * (c2 - c1)
    ang = u.bg_angle * 2 * math.pi
    cos, sin = torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]
    along = x * cos + y * sin  # normalised units (the side is 2)
    perp = -x * sin + y * cos
    period = ((3.0 + 9.0 * u.bg_period) * 2.0 / 32.0)[:, None, None]  # 3-12 px at any size (relative to 32 px)
    sharp = (1.0 + 3.0 * u.bg_sharp)[:, None, None]

    def blend(sel: Tensor, w: Tensor) -> None:
        bg[sel] = c1[sel][:, :, None, None] + w.unsqueeze(1) * (c2[sel] - c1[sel])[:, :, None, None]

    sel = family == 0  # gradient: linear, or radial around a random centre
    if sel.any():
        lin = 0.5 + 0.6 * along[sel]
        cen = (u.bg_centre[sel] * 2 - 1)[:, :, None, None]
        rad = torch.sqrt((x - cen[:, 0]) ** 2 + (y - cen[:, 1]) ** 2) / 1.6
        w = torch.where((u.bg_radial[sel] < 0.35)[:, None, None], rad, lin).clamp(0, 1)
        blend(sel, w)
    sel = family == 1  # stripes
    if sel.any():
        blend(sel, _soft_wave(along[sel] / period[sel] + u.bg_phase[sel][:, None, None], sharp[sel]))
    sel = family == 2  # checkerboard
    if sel.any():
        a = torch.sin(math.pi * along[sel] / period[sel] + 2 * math.pi * u.bg_phase[sel][:, None, None])
        b = torch.sin(math.pi * perp[sel] / period[sel])
        blend(sel, 0.5 + 0.5 * torch.tanh(2.0 * sharp[sel] * a * b))
    sel = family == 3  # two-octave value noise, every channel independent
    if sel.any():
        m = int(sel.sum())
        coarse = F.interpolate(u.bg_noise_coarse[sel].reshape(m, 3, 4, 4), size=(s, s), mode="bicubic",
                               align_corners=False)
        fine = F.interpolate(u.bg_noise_fine[sel].reshape(m, 3, 8, 8), size=(s, s), mode="bicubic",
                             align_corners=False)
        bg[sel] = (0.5 + BG_NOISE_CONTRAST * (coarse - 0.5) + 0.5 * (fine - 0.5)).clamp(0, 1)
    sel = family == PHOTO_FAMILY
    if sel.any():
        bg[sel] = _render_photos(u, sel, photo, s)
    return bg


def _render_photos(u: _U, sel: Tensor, photo: Tensor, image_size: int) -> Tensor:
    """Random square crops of the bundled photos, sampled at 2x and area-averaged, then jittered/tinted."""
    photos = _photos_for_size(image_size)
    gray = torch.tensor(photo_is_gray())
    idx_all = sel.nonzero().squeeze(1)
    out = torch.empty(idx_all.numel(), 3, image_size, image_size)
    s2 = 2 * image_size
    pid = photo[idx_all]
    for p in torch.unique(pid).tolist():
        local = (pid == p).nonzero().squeeze(1)
        rows = idx_all[local]
        src = photos[p]
        h, w = src.shape[-2:]
        side = (0.35 + 0.65 * u.ph_frac[rows]) * min(h, w)  # source pixels
        cx = side / 2 + u.ph_pos[rows, 0] * (w - side)
        cy = side / 2 + u.ph_pos[rows, 1] * (h - side)
        flip = torch.where(u.ph_flip[rows] < 0.5, -1.0, 1.0)
        zero = torch.zeros_like(side)
        theta = torch.stack([torch.stack([flip * side / w, zero, 2 * cx / w - 1], -1),
                             torch.stack([zero, side / h, 2 * cy / h - 1], -1)], 1)
        m = rows.numel()
        grid = F.affine_grid(theta, [m, 3, s2, s2], align_corners=False)
        crops = F.grid_sample(src, grid.reshape(1, m * s2, s2, 2), mode="bilinear", padding_mode="border",
                              align_corners=False)
        crops = F.avg_pool2d(crops.reshape(3, m, s2, s2).transpose(0, 1), 2)
        out[local] = crops
    rows = idx_all
    lo, hi = PHOTO_CONTRAST
    contrast = (lo + (hi - lo) * u.ph_contrast[rows])[:, None, None, None]
    bright = (0.8 * u.ph_bright[rows] - 0.4)[:, None, None, None] * 0.5
    out = (out - 0.5) * contrast + 0.5 + bright
    tint = hsv_to_rgb(torch.stack([u.ph_tint_hs[rows, 0], 0.2 + 0.6 * u.ph_tint_hs[rows, 1],
                                   torch.ones(rows.numel())], -1))
    use_tint = (gray[pid] & (u.ph_tint[rows] < 0.5))[:, None, None, None]
    out = torch.where(use_tint, out * tint[:, :, None, None], out)
    return out.clamp(0, 1)


def render_shapes(labels: Tensor, u: Tensor, image_size: int, spurious: float,
                  backgrounds: Sequence[str] = BACKGROUND_FAMILIES) -> Dict[str, Tensor]:
    """Render images for ``labels (n,)`` from their uniform vectors ``u (n, NUM_UNIFORMS)``, with backgrounds drawn
    from the families named in ``backgrounds`` (all of them by default; uniformly among those given).

    Returns uint8 ``image (n, 3, S, S)``, uint8 ``mask (n, 1, S, S)``, and int64 ``background``, ``background_photo``
    and bool ``background_tied`` ``(n,)``.
    """
    uu = _U(u)
    allowed = torch.tensor([BACKGROUND_FAMILIES.index(b) for b in backgrounds])
    n_fam, n_photo = len(allowed), len(PHOTO_NAMES)
    tied = uu.tie < spurious
    family = allowed[torch.where(tied, labels % n_fam, (uu.family * n_fam).long().clamp(max=n_fam - 1))]
    photo = torch.where(tied, labels % n_photo, (uu.photo * n_photo).long().clamp(max=n_photo - 1))
    photo = torch.where(family == PHOTO_FAMILY, photo, torch.full_like(photo, -1))

    theta, radius = _object_transforms(uu, image_size)
    alpha = _render_alpha(labels, theta, image_size)
    fg = _render_foreground(uu, theta, radius, image_size)
    bg = _render_background(uu, family, photo, image_size)

    # keep the object visible: if its mean colour is close to the background behind it, push its value away
    area = alpha.sum((2, 3)).clamp_min(1e-6)
    fg_mean = (fg * alpha).sum((2, 3)) / area
    bg_mean = (bg * alpha).sum((2, 3)) / area
    close = (fg_mean - bg_mean).norm(dim=1) < MIN_OBJECT_CONTRAST
    if close.any():
        dark_bg = (_luma(bg_mean) < 0.5)[:, None, None, None]
        pushed = torch.where(dark_bg, 0.6 + 0.4 * fg, 0.4 * fg)
        fg = torch.where(close[:, None, None, None], pushed, fg)

    image = alpha * fg + (1 - alpha) * bg
    return {
        "image": image.mul_(255).round_().clamp_(0, 255).to(torch.uint8),
        "mask": (alpha * 255).round_().clamp_(0, 255).to(torch.uint8),
        "background": family,
        "background_photo": photo,
        "background_tied": tied,
    }


def generate_shapes(num_classes: int, image_size: int, start: int, stop: int, split: str = "train",
                    spurious: float = 0.0, seed: int = DEFAULT_SEED,
                    backgrounds: Sequence[str] = BACKGROUND_FAMILIES) -> Dict[str, Tensor]:
    """Images ``start..stop-1`` of a split (random access: the same image whatever the range), with labels and masks.

    Returns the tensors of :func:`render_shapes` plus int64 ``label``.
    """
    if not 1 <= num_classes <= len(SHAPE_NAMES):
        raise ConfigError(f"data.num_classes={num_classes}: the shapes dataset has {len(SHAPE_NAMES)} classes "
                          f"({', '.join(SHAPE_NAMES)})")
    if image_size < 4:
        raise ConfigError(f"data.image_size={image_size} is too small for the shapes dataset (at least 4)")
    if not 0.0 <= spurious <= 1.0:
        raise ConfigError(f"data.spurious must be in [0, 1], got {spurious}")
    unknown = [b for b in backgrounds if b not in BACKGROUND_FAMILIES]
    if unknown or not backgrounds:
        raise ConfigError(
            f"data.backgrounds must name some of {', '.join(BACKGROUND_FAMILIES)}; got {list(backgrounds)}")
    s = image_size
    with _one_thread():
        return _generate(num_classes, s, start, stop, split, spurious, seed, tuple(backgrounds))


@contextmanager
def _one_thread():
    """Run torch's CPU ops on one thread, then restore the setting.

    The rendering is many small batched ops; on a busy machine (e.g. 2 cores shared with DataLoader workers or other
    jobs) torch's intra-op thread pool then spends most of its time waiting at barriers (measured: 28-40 s instead of
    3.5 s for 10,000 images). Results do not depend on the thread count.
    """
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def _generate(num_classes: int, s: int, start: int, stop: int, split: str, spurious: float,
              seed: int, backgrounds: Tuple[str, ...]) -> Dict[str, Tensor]:
    n = stop - start
    out = {"image": torch.empty(n, 3, s, s, dtype=torch.uint8), "mask": torch.empty(n, 1, s, s, dtype=torch.uint8),
           "label": torch.from_numpy(shape_labels(seed, split, num_classes, start, stop)),
           "background": torch.empty(n, dtype=torch.int64), "background_photo": torch.empty(n, dtype=torch.int64),
           "background_tied": torch.empty(n, dtype=torch.bool)}
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        u = torch.from_numpy(image_uniforms(seed, split, start + a, start + b))
        part = render_shapes(out["label"][a:b], u, s, spurious, backgrounds)
        for key, value in part.items():
            out[key][a:b] = value
    return out


_STATS_CACHE: Dict[tuple, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}


def _channel_stats(images: Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    x = images.to(torch.float64).div_(255.0).transpose(0, 1).reshape(3, -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


class ShapesDataset(InMemoryDataset):
    """``size`` procedural images of one split (see the module docstring); masks included (``has_masks`` is True).

    Args:
        num_classes: K, the first K of :data:`SHAPE_NAMES` (at most ``len(SHAPE_NAMES)``, else ``ConfigError``).
        image_size: S, the side in pixels.
        size: number of images (the first ``size`` of the split's stream).
        split: "train" or "test" (disjoint random streams).
        spurious: probability that an image's background family (and photo) is tied to its class.
        backgrounds: the background families drawn from (names from :data:`BACKGROUND_FAMILIES`; default all).
        seed: the generator seed (``build_dataset`` uses :data:`DEFAULT_SEED`).
        stats_images: mean/std come from the first ``stats_images`` train images of this configuration.

    Extra attributes: ``masks (N, 1, S, S)``, ``background`` (family id per image, see :data:`BACKGROUND_FAMILIES`),
    ``background_photo`` (index into :data:`PHOTO_NAMES`, -1 when the background is not a photo) and
    ``background_tied`` (whether the spurious tie was applied).
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32, size: int = 10000, split: str = "train",
                 spurious: float = 0.0, seed: int = DEFAULT_SEED, stats_images: int = STATS_IMAGES,
                 backgrounds: Sequence[str] = BACKGROUND_FAMILIES):
        if size < 0:
            raise ConfigError(f"the shapes dataset size must be >= 0, got {size}")
        backgrounds = tuple(backgrounds)
        data = generate_shapes(num_classes, image_size, 0, size, split=split, spurious=spurious, seed=seed,
                               backgrounds=backgrounds)
        key = (seed, num_classes, image_size, float(spurious), int(stats_images), backgrounds)
        if key not in _STATS_CACHE:
            if split == "train" and size >= stats_images:
                ref = data["image"][:stats_images]
            else:
                ref = generate_shapes(num_classes, image_size, 0, max(1, stats_images), split="train",
                                      spurious=spurious, seed=seed, backgrounds=backgrounds)["image"]
            with _one_thread():  # a fixed reduction order: the same statistics whatever torch's thread setting
                _STATS_CACHE[key] = _channel_stats(ref)
        mean, std = _STATS_CACHE[key]
        super().__init__(data["image"], data["label"], masks=data["mask"], num_classes=num_classes, mean=mean,
                         std=std, class_names=list(SHAPE_NAMES[:num_classes]))
        self.split = split
        self.seed = seed
        self.spurious = float(spurious)
        self.background: Tensor = data["background"]
        self.background_photo: Tensor = data["background_photo"]
        self.background_tied: Tensor = data["background_tied"]


def save_grid(dataset: InMemoryDataset, path: str, count: int = 64, columns: int = 8,
              start: int = 0, masks: bool = True) -> None:
    """Write a PNG contact sheet of ``count`` images (with ``masks``, each image's mask beside it): a visual check."""
    from PIL import Image

    count = min(count, len(dataset) - start)
    rows = math.ceil(count / columns)
    s = dataset.image_size
    cell_w = 2 * s + 2 if masks and getattr(dataset, "masks", None) is not None else s
    sheet = np.full((rows * (s + 2), columns * (cell_w + 4), 3), 255, dtype=np.uint8)
    for k in range(count):
        r, c = divmod(k, columns)
        y0, x0 = r * (s + 2), c * (cell_w + 4)
        sheet[y0:y0 + s, x0:x0 + s] = dataset.images[start + k].permute(1, 2, 0).numpy()
        if cell_w > s:
            m = cast(Tensor, dataset.masks)[start + k, 0].numpy()  # cell_w > s only when the dataset has masks
            sheet[y0:y0 + s, x0 + s + 2:x0 + 2 * s + 2] = m[:, :, None]
    Image.fromarray(sheet).save(path)
