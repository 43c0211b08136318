"""Batched, per-sample image operations on float tensors in [0, 1].

Every function takes a batch ``x`` of shape ``(N, C, H, W)`` and, where the operation is random, one parameter per
sample (a tensor with leading dimension ``N`` on ``x``'s device). Nothing here draws random numbers: the parameters come
from :class:`selfsup.data.views.MultiViewSampler.sample_params`. This is what makes multi-view augmentation fast:
torchvision's v2 transforms applied to a batch draw *one* setting for the whole batch, which is wrong for
self-supervised learning, and applying them per image costs about as much as training a small network. Here the
per-sample settings are applied with vectorised tensor ops (``roi_align`` for crop + resize, grouped ``conv2d`` for the
per-sample Gaussian blur).

The colour operations follow ``torchvision.transforms.v2.functional`` (``adjust_brightness``, ``adjust_contrast``,
``adjust_saturation``, ``adjust_hue``, ``rgb_to_grayscale``, ``gaussian_blur``), with a per-sample factor instead of a
scalar; the tests compare them image by image. The pipeline order and settings are BYOL's (method-details B 5.1) as used
by RELICv2 (Appendix B.1, Table 4; method-details A3).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

# ITU-R 601-2 luma weights, as in torchvision's rgb_to_grayscale and BYOL (method-details B 5.1; RELICv2 App. B.1,
# step 4).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# The colour-jitter operations by index, as in ``factors[:, op]`` and ``order[:, position]`` (ColorJitter's order).
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def to_float(images: Tensor) -> Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1]; floating input is taken to be in [0, 1] already and cast to float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.to(torch.float32)


def crop_resize(images: Tensor, boxes: Tensor, size: int, batch_index: Tensor | None = None) -> Tensor:
    """Crop a box out of each image and resize it to ``size x size``: ``(N, C, size, size)``.

    ``boxes`` is ``(N, 4)`` = ``(x0, y0, x1, y1)`` in normalised source coordinates (``[0, 1]``, continuous: the image
    covers ``[0, W] x [0, H]`` in pixel units, so sub-pixel boxes are fine). ``batch_index`` (``(N,)``, default
    ``arange(N)``) says which image each box is taken from, so one call renders several views of the same images.

    ``torchvision.ops.roi_align`` with ``aligned=True`` (pixel centres at half-integers, so a full-image box at the
    source size is the identity) and adaptive ``sampling_ratio`` (``ceil(box side / size)`` bilinear samples per output
    pixel and axis, averaged): bilinear when upsampling, an area-like average when downsampling, so small crops do not
    alias. RELICv2 (App. B.1 step 1) and BYOL resize with bicubic interpolation; this is a documented deviation
    (slightly softer upsampled crops, no overshoot).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    n = boxes.shape[0]
    _, c, h, w = images.shape
    if n == 0:
        return images.new_zeros((0, c, size, size))
    if batch_index is None:
        batch_index = torch.arange(n)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    rois = torch.cat([batch_index.to(torch.float32)[:, None], boxes.to(torch.float32).cpu() * scale], dim=1)
    rois = rois.to(device=images.device, dtype=images.dtype, non_blocking=True)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def hflip(x: Tensor) -> Tensor:
    """Horizontal flip (RELICv2 App. B.1 step 2)."""
    return x.flip(-1)


def rgb_to_gray(x: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B``, shape ``(N, 1, H, W)`` (torchvision's ``rgb_to_grayscale``)."""
    r, g, b = x.unbind(dim=-3)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(-3)


def grayscale(x: Tensor) -> Tensor:
    """Grayscale with the luma weights, repeated to 3 channels (RELICv2 App. B.1 step 4; BYOL B 5.1)."""
    return rgb_to_gray(x).expand_as(x).contiguous()


def _per_sample(factor: Tensor, x: Tensor) -> Tensor:
    return factor.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``_blend``: ``clamp(factor * x + (1 - factor) * other, 0, 1)`` with one factor per sample."""
    f = _per_sample(factor, x)
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f * x, 0, 1)`` per sample (torchvision's multiplicative brightness; BYOL's is additive, see views.py)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean luma of each image (torchvision's ``adjust_contrast``)."""
    mean = rgb_to_gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's own grayscale version (torchvision's ``adjust_saturation``)."""
    return _blend(x, rgb_to_gray(x), factor)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB in [0, 1] -> HSV with H in [0, 1) (the hexcone model of Pillow and torchvision); ``(N, 3, H, W)``."""
    h6, chroma, v = _hue_chroma_value(x)
    s = chroma / torch.where(v == 0, torch.ones_like(v), v)
    return torch.stack((torch.remainder(h6 / 6.0, 1.0), s, v), dim=-3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV -> RGB by the closed form ``c_n = V - V S clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 H) mod 6``, n = 5, 3, 1.

    Together with :func:`rgb_to_hsv` this round-trips RGB images exactly (up to float rounding).
    """
    h, s, v = x.unbind(dim=-3)
    return _from_hue_chroma_value(h * 6.0, v * s, v)


def _hue_chroma_value(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in sextants (``6 H``, not reduced mod 6), chroma ``max - min`` and value ``max`` of RGB images.

    The channel holding the maximum picks the numerator (R: ``G - B``, G: ``B - R``, B: ``R - G``) and the offset
    (0, 2, 4), with Pillow's tie order (R before G before B). For gray pixels chroma and numerator are 0, and the hue
    does not matter (the inverse multiplies it by the chroma).
    """
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    r_max = maxc == r
    g_max = maxc == g  # checked after r_max in both selections below, so R wins ties as in Pillow
    num = torch.where(r_max, g - b, torch.where(g_max, b - r, r - g))
    offset = torch.where(r_max, 0.0, torch.where(g_max, 2.0, 4.0))
    h6 = num.div_(torch.where(chroma == 0, 1.0, chroma)).add_(offset)
    return h6, chroma, maxc


def _from_hue_chroma_value(h6: Tensor, chroma: Tensor, v: Tensor) -> Tensor:
    out = torch.empty((*v.shape[:-2], 3, *v.shape[-2:]), dtype=v.dtype, device=v.device)
    for i, n in enumerate((5.0, 3.0, 1.0)):
        k = torch.remainder(h6 + n, 6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.addcmul(v, chroma, ramp, value=-1.0, out=out.select(-3, i))
    return out.clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` (a fraction of the colour wheel, in [-0.5, 0.5]) through an exact RGB->HSV->RGB.

    Same definition as torchvision's ``adjust_hue`` on float images: ``H <- (H + factor) mod 1``, S and V kept. The
    round trip is fused: HSV's ``V S`` is the chroma, so S is never formed, and the hue stays in sextants.
    """
    h6, chroma, v = _hue_chroma_value(x)
    return _from_hue_chroma_value(h6 + 6.0 * _per_sample(factor, h6), chroma, v)


_JITTER_FNS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
_JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def apply_where(x: Tensor, flag: Tensor, fn: Callable[..., Tensor], *per_sample: Tensor) -> Tensor:
    """``x[i] <- fn(x[i], *args[i])`` for the samples with ``flag[i]``; the others are left as they are.

    ``flag`` and ``per_sample`` are CPU tensors (the sampled parameters), so choosing the subset never waits for the
    device; only the selected samples are computed (a blur with p = 0.1 costs a tenth of a full one). ``x`` is updated
    in place when a strict subset is selected.
    """
    flag = flag.cpu()
    if flag.numel() and bool(flag.all()):
        return fn(x, *[a.to(x.device, non_blocking=True) for a in per_sample])
    idx = flag.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    idx_dev = idx.to(x.device, non_blocking=True)
    sub = fn(x.index_select(0, idx_dev), *[a[idx].to(x.device, non_blocking=True) for a in per_sample])
    return x.index_copy_(0, idx_dev, sub)


def color_jitter(x: Tensor, apply: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision's ``ColorJitter`` with per-sample factors and a per-sample random order (BYOL B 5.1, RELICv2 B.1).

    * ``apply``: ``(N,)`` bool, whether sample i is jittered at all (``RandomApply(ColorJitter, p)``);
    * ``factors``: ``(N, 4)`` brightness, contrast, saturation (multiplicative, 1 = unchanged) and hue (additive, 0 =
      unchanged);
    * ``order``: ``(N, 4)`` a permutation of ``0..3`` per sample; position ``k`` runs operation ``order[i, k]``.

    Each operation clamps to [0, 1] ("clip after each", B 5.1). The loop is over 4 positions x 4 operations, never over
    images; an operation whose factor is the identity is skipped, as torchvision skips an unset jitter.
    """
    apply, factors, order = apply.cpu(), factors.cpu(), order.cpu()
    for pos in range(order.shape[1] if order.ndim == 2 else 0):
        for op, fn in enumerate(_JITTER_FNS):
            sel = apply & (order[:, pos] == op) & (factors[:, op] != _JITTER_IDENTITY[op])
            x = apply_where(x, sel, fn, factors[:, op])
    return x


def blur_kernel_size(size: int, frac: float) -> int:
    """Odd kernel side for a view of ``size`` pixels: ``2 * floor(frac * size / 2) + 1``, at least 3.

    BYOL's ``radius = int(size / 20)`` kernel (method-details B 5.1) generalised to ``frac`` = 0.1: 23 taps at 224,
    9 at 96, 3 at 32 and 16.
    """
    return max(3, 2 * int(frac * size / 2) + 1)


def gaussian_kernel1d(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian taps, one row per sample: ``(N, kernel_size)``.

    ``exp(-t^2 / (2 sigma^2))`` at ``t = -k//2 .. k//2``, divided by its sum (torchvision's ``_get_gaussian_kernel1d``).
    """
    half = (kernel_size - 1) / 2.0
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    w = torch.exp(-0.5 * (t[None, :] / sigma.to(torch.float32)[:, None]) ** 2)
    return w / w.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one sigma per sample (pixels of ``x``), reflect padding (torchvision's definition).

    All samples and channels go through one grouped ``conv2d`` per axis (``groups = N * C``), so there is no loop over
    images. RELICv2 App. B.1 step 5 / BYOL B 5.1: 23 x 23 at 224 with sigma ~ U(0.1, 2.0).
    """
    n, c, h, w = x.shape
    if n == 0:
        return x
    half = kernel_size // 2
    taps = gaussian_kernel1d(sigma.to(x.device), kernel_size).to(x.dtype).repeat_interleave(c, dim=0)  # (N*C, k)
    y = x.reshape(1, n * c, h, w)
    mode_w = "reflect" if half < w else "replicate"
    mode_h = "reflect" if half < h else "replicate"
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode=mode_w), taps.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode=mode_h), taps.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)


def solarize(x: Tensor) -> Tensor:
    """``x < 0.5 ? x : 1 - x`` (BYOL's solarisation, method-details B 5.1), computed as ``min(x, 1 - x)`` (the same on
    [0, 1]).

    RELICv2 App. B.1 step 6 words it as a hard threshold to 0/1; its code base is BYOL's, whose definition is used here.
    """
    return torch.minimum(x, 1.0 - x)


def mask_background(crop_mx: Tensor, crop_m: Tensor, gray_level: Tensor) -> Tensor:
    """The view of the background-masked image ``m * x + (1 - m) * g`` (RELICv2 App. B.2; method-details A4).

    Takes the crops of ``m * x`` and of the mask ``m`` (in [0, 1]) made with the view's box, and one gray level ``g``
    per sample (the same for every pixel and channel). Because the resampling in :func:`crop_resize` is linear and its
    weights sum to one, ``crop(m x + (1 - m) g) = crop(m x) + g (1 - crop(m))`` exactly: the result is the crop of the
    whole masked image, soft mask edges included, so masking after the crop is the same as masking the image first.
    """
    g = _per_sample(gray_level, crop_mx)
    return (crop_mx + g * (1.0 - crop_m)).clamp_(0.0, 1.0)


def normalize(x: Tensor, mean, std) -> Tensor:
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` hold C values (dataset statistics in [0, 1])."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
