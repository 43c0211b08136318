"""Crop- and pixel-scale statistics of a view recipe (SSLight eq. 1) against closed forms."""

import math

import pytest
import torch

from selfsup.config import ViewGroupConfig, ViewsConfig
from selfsup.data.view_stats import crop_areas, view_statistics


def _views(large_min, small_max, gc, lc, nl=6):
    return ViewsConfig(large=ViewGroupConfig(count=2, size=gc, scale_min=[large_min], scale_max=1.0),
                       small=ViewGroupConfig(count=nl, size=lc, scale_min=[0.05], scale_max=small_max),
                       ratio=[1.0, 1.0])  # square crops: no aspect clipping, so the areas are exactly uniform


def _closed_form_ratio(large_min, small_max, gc, lc):
    # areas ~ U(lo, hi) independently: E[A_l] * E[1 / A_g] * (GC / LC)^2
    e_small = (0.05 + small_max) / 2
    e_inv_large = math.log(1.0 / large_min) / (1.0 - large_min)
    return (gc / lc) ** 2 * e_small * e_inv_large


@pytest.mark.parametrize("large_min,small_max,gc,lc", [(0.14, 0.14, 224, 96), (0.3, 0.3, 224, 128),
                                                        (0.14, 0.14, 224, 103)])
def test_pixel_scale_ratio_matches_closed_form(large_min, small_max, gc, lc):
    stats = view_statistics(_views(large_min, small_max, gc, lc), num_images=20000,
                            generator=torch.Generator().manual_seed(1))
    assert stats.ps_ratio_mean == pytest.approx(_closed_form_ratio(large_min, small_max, gc, lc), rel=0.02)
    assert stats.groups["large"].area_mean == pytest.approx((large_min + 1) / 2, rel=0.01)
    assert stats.groups["small"].area_mean == pytest.approx((0.05 + small_max) / 2, rel=0.01)


def test_sslight_recipe_matches_pixel_scales_and_the_default_does_not():
    # SSLight Sec. 3.3.2: S = 0.3 with LC = 128 gives mean(PS_g / PS_l) ~ 1; the default 0.14 / 96 is further from 1
    sslight = view_statistics(_views(0.3, 0.3, 224, 128), num_images=8000).ps_ratio_mean
    default = view_statistics(_views(0.14, 0.14, 224, 96), num_images=8000).ps_ratio_mean
    assert abs(sslight - 1) < 0.1 < abs(default - 1)


def test_absolute_pixel_scale_and_per_view_rates():
    v = _views(0.5, 0.2, 32, 16)
    v.large.blur_p, v.large.solarize_p = [1.0, 0.0], [0.0, 1.0]
    stats = view_statistics(v, num_images=4000, source_size=32)
    g = stats.groups["large"]
    # PS = 32^2 / (A * 32^2) = 1 / A, A ~ U(0.5, 1): E[1/A] = 2 ln 2
    assert g.pixel_scale_mean == pytest.approx(2 * math.log(2), rel=0.02)
    assert g.blur_rate == [1.0, 0.0] and g.solarize_rate == [0.0, 1.0]
    assert 0.5 <= g.area_min and g.area_max <= 1.0


def test_no_small_views_has_no_ratio():
    v = _views(0.3, 0.3, 32, 16)
    v.small.count = 0
    stats = view_statistics(v, num_images=64)
    assert stats.ps_ratio_mean is None and "PS_g" not in stats.table()


def test_crop_areas():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]])
    assert crop_areas(box).tolist() == [1.0, 0.25]
