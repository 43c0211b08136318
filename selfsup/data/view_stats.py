"""Statistics of a view recipe: crop scales, pixel scales and SSLight's mean(PS_g / PS_l) (``selfsup views inspect``).

SSLight (Sec. 3.3.2, eq. 1; method-details A5) defines the *pixel scale* of a view as its output area over the area of
its crop in the source image, ``PS = side^2 / Area(crop)``, and finds the best accuracy when global (large) and local
(small) views have about the same pixel scale, ``mean(PS_g / PS_l) ~ 1``. The statistics here are computed from the
exact crop boxes the training sampler draws (:meth:`MultiViewSampler.sample_params`), so they describe what a run sees.

Choices:

* ``mean(PS_g / PS_l)`` averages over images and over every (large view, small view) pair of the same image. The
  source size cancels in the ratio (``(GC / LC)^2 * Area(l) / Area(g)``), so it needs no image sizes.
* Absolute pixel scales are reported for a square source of ``source_size`` pixels (the recipe's ``data.image_size``):
  ``PS > 1`` means the view is up-sampled from the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from selfsup.config import ViewsConfig
from selfsup.data.views import GROUPS, MultiViewSampler


@dataclass
class GroupStats:
    """One view group: its size and count, and statistics of crop area fractions and pixel scales over the sample."""

    count: int
    size: int
    area_mean: float = 0.0
    area_std: float = 0.0
    area_min: float = 0.0
    area_max: float = 0.0
    area_per_view: List[float] = field(default_factory=list)  # mean crop area of view v (list settings are cycled)
    pixel_scale_mean: float = 0.0  # PS for a square source of ``source_size`` pixels
    blur_rate: List[float] = field(default_factory=list)  # per view
    solarize_rate: List[float] = field(default_factory=list)
    mask_rate: float = 0.0


@dataclass
class ViewStats:
    num_images: int
    source_size: int
    groups: Dict[str, GroupStats]
    ps_ratio_mean: Optional[float]  # SSLight's mean(PS_g / PS_l); None without small views
    ps_ratio_median: Optional[float]

    def table(self) -> str:
        """A plain-text report, one line per group, then the pixel-scale ratio."""
        lines = [f"view statistics over {self.num_images} images (pixel scale for a {self.source_size}px source)",
                 f"{'group':6s} {'views':>5s} {'size':>5s} {'crop area mean+-std [min, max]':>32s} "
                 f"{'PS mean':>8s}  per-view crop area / blur / solarize"]
        for name, g in self.groups.items():
            if g.count == 0:
                lines.append(f"{name:6s} {0:5d}")
                continue
            per_view = "  ".join(f"{a:.2f}/{b:.2f}/{s:.2f}"
                                 for a, b, s in zip(g.area_per_view, g.blur_rate, g.solarize_rate))
            lines.append(f"{name:6s} {g.count:5d} {g.size:5d} {g.area_mean:9.3f} +- {g.area_std:.3f} "
                         f"[{g.area_min:.3f}, {g.area_max:.3f}] {g.pixel_scale_mean:8.3f}  {per_view}"
                         + (f"  mask rate {g.mask_rate:.3f}" if g.mask_rate > 0 else ""))
        if self.ps_ratio_mean is not None:
            lines.append(f"mean(PS_g / PS_l) = {self.ps_ratio_mean:.3f} (median {self.ps_ratio_median:.3f}); "
                         "SSLight finds ~1.0 best (eq. 1, Fig. 2)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def crop_areas(box: torch.Tensor) -> torch.Tensor:
    """Area fractions of normalised ``(x0, y0, x1, y1)`` boxes (any leading shape)."""
    return (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])


def view_statistics(cfg: ViewsConfig, *, num_images: int = 4096, source_size: int = 224,
                    generator: Optional[torch.Generator] = None) -> ViewStats:
    """Draw the views of ``num_images`` images with the training sampler and summarise them (see the module doc)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    sampler = MultiViewSampler(cfg, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    params = sampler.sample_params(num_images, generator or torch.Generator().manual_seed(0))
    groups: Dict[str, GroupStats] = {}
    areas: Dict[str, torch.Tensor] = {}
    for name in GROUPS:
        gc, gp = getattr(cfg, name), params.group(name)
        st = GroupStats(count=gc.count, size=gc.size)
        if gc.count > 0:
            a = crop_areas(gp.box.double())  # (n, V)
            areas[name] = a
            ps = gc.size ** 2 / (a * source_size ** 2)
            st.area_mean, st.area_std = float(a.mean()), float(a.std()) if a.numel() > 1 else 0.0
            st.area_min, st.area_max = float(a.min()), float(a.max())
            st.area_per_view = [float(v) for v in a.mean(0)]
            st.pixel_scale_mean = float(ps.mean())
            st.blur_rate = [float(v) for v in gp.blur.double().mean(0)]
            st.solarize_rate = [float(v) for v in gp.solarize.double().mean(0)]
            st.mask_rate = float(gp.mask.double().mean())
        groups[name] = st
    ratio_mean = ratio_median = None
    if cfg.small.count > 0:
        # PS_g / PS_l = (GC / LC)^2 * Area(l) / Area(g), over every (g, l) pair of an image
        ratio = (cfg.large.size / cfg.small.size) ** 2 * areas["small"][:, None, :] / areas["large"][:, :, None]
        ratio_mean, ratio_median = float(ratio.mean()), float(ratio.median())
    return ViewStats(num_images=num_images, source_size=source_size, groups=groups, ps_ratio_mean=ratio_mean,
                     ps_ratio_median=ratio_median)
