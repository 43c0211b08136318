"""Multi-view sampling (method-details A3, A4, B 5.1): shapes, reproducibility, per-view statistics, masking, eval."""

import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import ViewGroupConfig, ViewsConfig
from selfsup.data import augment as A
from selfsup.data.views import (
    MultiViewSampler,
    ViewParams,
    Views,
    center_crop_resize,
    normalize,
    train_crop_flip_sampler,
)
from selfsup.errors import ConfigError

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
N_STAT = 4000


def _relic_cfg(large_size=16, small_size=8, **kw) -> ViewsConfig:
    """RELICv2's Table 4 settings (A3) at a small size: 4 large views alternating [odd, even], 2 small views."""
    large = ViewGroupConfig(count=4, size=large_size, scale_min=[0.14, 0.08], scale_max=1.0, blur_p=[0.1, 1.0],
                            solarize_p=[0.2, 0.0], maskable=True)
    small = ViewGroupConfig(count=2, size=small_size, scale_min=[0.05], scale_max=0.14, blur_p=[0.1, 1.0],
                            solarize_p=[0.2, 0.0])
    return ViewsConfig(large=large, small=small, mask_p=0.3, **kw)


def _plain_cfg(mask_p=1.0, large_count=2, small_count=1) -> ViewsConfig:
    """No colour operation and no flip: only crops and the mask hook."""
    large = ViewGroupConfig(count=large_count, size=12, scale_min=[0.3], blur_p=[0.0], solarize_p=[0.0],
                            maskable=True)
    small = ViewGroupConfig(count=small_count, size=6, scale_min=[0.3], blur_p=[0.0], solarize_p=[0.0])
    return ViewsConfig(large=large, small=small, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, mask_p=mask_p)


def _batch(n=6, size=20, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, width or size), generator=g, dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _binomial_ok(flags: torch.Tensor, p: float) -> bool:
    n = flags.numel()
    return abs(flags.float().mean().item() - p) <= 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


@pytest.fixture(scope="module")
def relic_params():
    sampler = MultiViewSampler(_relic_cfg(), MEAN, STD)
    return sampler, sampler.sample_params(N_STAT, _gen(123))


# ------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("large, small, source", [((16, 8), (4, 2), (20, 20)), ((28, 14), (2, 6), (28, 28)),
                                                  ((32, 16), (1, 0), (32, 32)), ((12, 6), (3, 1), (18, 30))])
def test_counts_shapes_dtype(large, small, source):
    cfg = _relic_cfg(large_size=large[0], small_size=large[1])
    cfg.large.count, cfg.small.count = small
    sampler = MultiViewSampler(cfg, MEAN, STD)
    images = _batch(5, source[0], width=source[1])
    masks = (torch.rand(5, 1, *source) > 0.5).to(torch.uint8) * 255
    views = sampler.sample(images, masks, _gen())
    assert isinstance(views, Views)
    assert (sampler.num_large, sampler.num_small) == small
    assert (sampler.large_size, sampler.small_size) == large
    assert len(views.large) == small[0] and len(views.small) == small[1]
    for v in views.large:
        assert v.shape == (5, 3, large[0], large[0]) and v.dtype == torch.float32 and torch.isfinite(v).all()
    for v in views.small:
        assert v.shape == (5, 3, large[1], large[1]) and v.dtype == torch.float32
    assert views.all() == [*views.large, *views.small]


def test_views_are_normalised_and_differ():
    sampler = MultiViewSampler(_relic_cfg(), MEAN, STD)
    views = sampler.sample(_batch(8), None, _gen(1))
    for v in views.all():
        pix = v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        assert pix.min() >= -1e-5 and pix.max() <= 1 + 1e-5
    assert (views.large[0] - views.large[1]).abs().max() > 0.1


def test_bad_inputs_raise():
    sampler = MultiViewSampler(_relic_cfg(), MEAN, STD)
    params = sampler.sample_params(4, _gen())
    with pytest.raises(ValueError):
        sampler(_batch(5), None, params)
    with pytest.raises(ValueError):
        sampler(_batch(4), torch.zeros(4, 1, 8, 8, dtype=torch.uint8), params)
    with pytest.raises(ValueError):
        sampler(_batch(4, width=30), None, params)  # boxes drawn for square sources
    sampler(_batch(4, width=30), None, sampler.sample_params(4, _gen(), source_size=(20, 30)))
    with pytest.raises(TypeError):
        params[0]
    with pytest.raises(ConfigError):
        MultiViewSampler(_relic_cfg(), (0.5, 0.5), STD)


# ------------------------------------------------------------------------------------------------- reproducibility


def _assert_params_equal(a: ViewParams, b: ViewParams):
    for group in ("large", "small"):
        ga, gb = a.group(group), b.group(group)
        for f in fields(ga):
            assert torch.equal(getattr(ga, f.name), getattr(gb, f.name)), (group, f.name)


def test_same_seed_same_params_and_same_views():
    sampler = MultiViewSampler(_relic_cfg(), MEAN, STD)
    p1, p2 = sampler.sample_params(6, _gen(7)), sampler.sample_params(6, _gen(7))
    _assert_params_equal(p1, p2)
    p3 = sampler.sample_params(6, _gen(8))
    assert not torch.equal(p1.large.box, p3.large.box)
    images = _batch(6)
    masks = (torch.rand(6, 1, 20, 20) > 0.3).to(torch.uint8) * 255
    v1, v2 = sampler(images, masks, p1), sampler(images, masks, p1)
    for a, b in zip(v1.all(), v2.all()):
        assert torch.equal(a, b)


def test_slice_of_params_renders_the_slice_of_the_batch():
    """DDP: each rank draws the global batch's params and renders params[a:b] on images[a:b]."""
    cfg = _relic_cfg()
    cfg.mask_p = 0.5
    sampler = MultiViewSampler(cfg, MEAN, STD)
    images = _batch(10, seed=3)
    masks = (torch.rand(10, 1, 20, 20, generator=_gen(4)) > 0.4).to(torch.uint8) * 255
    params = sampler.sample_params(10, _gen(9))
    assert len(params) == 10 and len(params[3:7]) == 4
    full = sampler(images, masks, params)
    for a, b in ((0, 5), (5, 10), (3, 7)):
        part = sampler(images[a:b], masks[a:b], params[a:b])
        for whole, piece in zip(full.all(), part.all()):
            torch.testing.assert_close(piece, whole[a:b], atol=1e-5, rtol=0)


def test_chunked_rendering_equals_one_batch():
    cfg = _relic_cfg()
    images = _batch(12, seed=5)
    masks = (torch.rand(12, 1, 20, 20, generator=_gen(6)) > 0.5).to(torch.uint8) * 255
    params = MultiViewSampler(cfg, MEAN, STD).sample_params(12, _gen(10))
    one = MultiViewSampler(cfg, MEAN, STD, chunk_elements=None)(images, masks, params)
    chunked = MultiViewSampler(cfg, MEAN, STD, chunk_elements=3 * 16 * 16 * 5)(images, masks, params)
    for a, b in zip(one.all(), chunked.all()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------- statistics


def test_crop_areas_and_aspects_per_view(relic_params):
    _, params = relic_params
    for group, mins, maxs in (("large", (0.14, 0.08), 1.0), ("small", (0.05,), 0.14)):
        box = params.group(group).box
        w, h = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
        assert (box >= 0).all() and (box <= 1).all() and (w > 0).all() and (h > 0).all()
        area, aspect = w * h, w / h
        assert (aspect >= 0.75 - 1e-4).all() and (aspect <= 4 / 3 + 1e-4).all()
        for v in range(box.shape[1]):
            lo = mins[v % len(mins)]
            assert area[:, v].min() >= lo - 1e-4 and area[:, v].max() <= maxs + 1e-4
            assert area[:, v].min() < lo + 0.01  # the lower bound is reached, so odd and even views really differ
        # log-uniform aspect: about half the boxes are wider than tall
        assert abs((aspect > 1).float().mean().item() - 0.5) < 0.05
    # the position is uniform: box centres spread over the image
    cx = (params.large.box[..., 0] + params.large.box[..., 2]) / 2
    assert cx.min() < 0.2 and cx.max() > 0.8


def test_crop_boxes_on_non_square_sources():
    sampler = MultiViewSampler(_relic_cfg(), MEAN, STD)
    params = sampler.sample_params(2000, _gen(2), source_size=(20, 40))  # H = 20, W = 40
    box = params.large.box
    w_px, h_px = (box[..., 2] - box[..., 0]) * 40, (box[..., 3] - box[..., 1]) * 20
    aspect, area = w_px / h_px, (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    assert (aspect >= 0.75 - 1e-4).all() and (aspect <= 4 / 3 + 1e-4).all()
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    # large areas do not fit on a 2:1 image with aspect <= 4/3: torchvision's fallback crop has aspect exactly 4/3
    assert ((aspect - 4 / 3).abs() < 1e-4).any()


def test_center_crop_option():
    cfg = _relic_cfg()
    cfg.small.center_crop = True
    params = MultiViewSampler(cfg, MEAN, STD).sample_params(500, _gen(3))
    box = params.small.box
    torch.testing.assert_close(box[..., 0] + box[..., 2], torch.ones(500, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(box[..., 1] + box[..., 3], torch.ones(500, 2), atol=1e-5, rtol=0)
    large = params.large.box
    assert ((large[..., 0] + large[..., 2] - 1).abs() > 0.05).any()


def test_flag_rates_per_view(relic_params):
    sampler, params = relic_params
    cfg = sampler.cfg
    for group in ("large", "small"):
        gp, gc = params.group(group), getattr(cfg, group)
        for v in range(gp.num_views):
            assert _binomial_ok(gp.flip[:, v], cfg.flip_p)
            assert _binomial_ok(gp.jitter[:, v], cfg.jitter_p)
            assert _binomial_ok(gp.grayscale[:, v], cfg.grayscale_p)
            assert _binomial_ok(gp.blur[:, v], gc.blur_p[v % len(gc.blur_p)])
            assert _binomial_ok(gp.solarize[:, v], gc.solarize_p[v % len(gc.solarize_p)])
            assert _binomial_ok(gp.mask[:, v], cfg.mask_p if gc.maskable else 0.0)
    assert params.large.mask.any() and not params.small.mask.any()
    # Table 4 as read in A3: odd views (index 0, 2) blur 0.1 and solarize 0.2; even views blur 1.0 and never solarize.
    assert params.large.blur[:, 1].all() and not params.large.solarize[:, 1].any()
    assert params.large.blur[:, 0].float().mean() < 0.2


def test_jitter_factor_ranges_and_orders(relic_params):
    sampler, params = relic_params
    f = params.large.jitter_factors
    for op, (lo, hi) in enumerate(((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))):
        assert f[..., op].min() >= lo and f[..., op].max() <= hi
        assert f[..., op].min() < lo + 0.01 and f[..., op].max() > hi - 0.01
    order = params.large.jitter_order
    assert torch.equal(order.sort(dim=-1).values, torch.arange(4).expand_as(order))
    perms = {tuple(p) for p in order.reshape(-1, 4).tolist()}
    assert len(perms) == 24
    # the first op is uniform over the 4
    counts = torch.bincount(order[..., 0].flatten(), minlength=4).float() / order[..., 0].numel()
    assert (counts - 0.25).abs().max() < 0.02
    sigma = params.large.blur_sigma
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    g = params.large.gray_level
    assert g.min() >= 0 and g.max() <= 1 and abs(g.mean().item() - 0.5) < 0.02


# ------------------------------------------------------------------------------------------------- ops in the pipeline


def test_pipeline_with_no_colour_ops_is_crop_and_flip():
    cfg = _plain_cfg(mask_p=0.0)
    cfg.flip_p = 0.5
    sampler = MultiViewSampler(cfg, (0, 0, 0), (1, 1, 1))
    images = _batch(8)
    params = sampler.sample_params(8, _gen(4))
    views = sampler(images, None, params)
    x = images.float() / 255
    for v in range(2):
        crop = A.crop_resize(x, params.large.box[:, v], 12)
        flip = params.large.flip[:, v].view(-1, 1, 1, 1)
        torch.testing.assert_close(views.large[v], torch.where(flip, crop.flip(-1), crop), atol=1e-6, rtol=0)


def test_pipeline_applies_each_flagged_op():
    """Grayscale, blur and solarize forced on, no jitter: the view is solarize(blur(gray(crop)))."""
    cfg = _plain_cfg(mask_p=0.0)
    cfg.grayscale_p = 1.0
    cfg.large.blur_p = [1.0]
    cfg.large.solarize_p = [1.0]
    sampler = MultiViewSampler(cfg, (0, 0, 0), (1, 1, 1))
    images = _batch(4)
    params = sampler.sample_params(4, _gen(5))
    views = sampler(images, None, params)
    x = images.float() / 255
    k = A.blur_kernel_size(12, cfg.blur_kernel_frac)
    for v in range(2):
        crop = A.crop_resize(x, params.large.box[:, v], 12)
        expected = A.solarize(A.gaussian_blur(A.grayscale(crop), params.large.blur_sigma[:, v], k))
        torch.testing.assert_close(views.large[v], expected, atol=1e-6, rtol=0)
    # small views: blur and solarize probabilities are 0, grayscale is shared
    crop = A.crop_resize(x, params.small.box[:, 0], 6)
    torch.testing.assert_close(views.small[0], A.grayscale(crop), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------- masking (A4)


def _half_mask(n, size=20):
    m = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    m[..., : size // 2] = 255  # left half is foreground
    return m


def test_masked_views_have_one_gray_background_per_view():
    sampler = MultiViewSampler(_plain_cfg(mask_p=1.0), (0, 0, 0), (1, 1, 1))
    images, masks = _batch(6), _half_mask(6)
    params = sampler.sample_params(6, _gen(11))
    assert params.large.mask.all() and not params.small.mask.any()
    masked = sampler(images, masks, params)
    plain = sampler(images, None, params)
    m = masks.float() / 255
    for v in range(2):
        m_crop = A.crop_resize(m, params.large.box[:, v], 12)
        for i in range(6):
            bg, fg = m_crop[i, 0] == 0, m_crop[i, 0] == 1
            g = params.large.gray_level[i, v].item()
            if bg.any():
                values = masked.large[v][i][:, bg]
                assert torch.allclose(values, torch.full_like(values, g), atol=1e-6)
            if fg.any():
                torch.testing.assert_close(masked.large[v][i][:, fg], plain.large[v][i][:, fg], atol=1e-6, rtol=0)
    assert (masked.large[0] - plain.large[0]).abs().max() > 0.01
    torch.testing.assert_close(masked.small[0], plain.small[0])  # small views are never masked


def test_only_views_that_drew_mask_use_are_masked():
    sampler = MultiViewSampler(_plain_cfg(mask_p=0.5, large_count=3), (0, 0, 0), (1, 1, 1))
    images, masks = _batch(16), _half_mask(16)
    params = sampler.sample_params(16, _gen(12))
    masked, plain = sampler(images, masks, params), sampler(images, None, params)
    for v in range(3):
        changed = (masked.large[v] - plain.large[v]).flatten(1).abs().amax(1) > 0
        assert torch.equal(changed, params.large.mask[:, v] & changed)  # only flagged views change
        assert changed.any()


def test_masks_below_min_fraction_are_never_used():
    sampler = MultiViewSampler(_plain_cfg(mask_p=1.0), (0, 0, 0), (1, 1, 1))
    images = _batch(4)
    masks = torch.zeros(4, 1, 20, 20, dtype=torch.uint8)
    masks[:2, :, :4, :4] = 255  # 16 / 400 = 4 % < 5 %: not eligible
    masks[2:, :, :5, :4] = 255  # 20 / 400 = 5 %: eligible
    params = sampler.sample_params(4, _gen(13))
    masked, plain = sampler(images, masks, params), sampler(images, None, params)
    for v in range(2):
        assert torch.equal(masked.large[v][:2], plain.large[v][:2])
        assert not torch.equal(masked.large[v][2:], plain.large[v][2:])


# ------------------------------------------------------------------------------------------------- probe transforms


def test_train_crop_flip_sampler_has_no_colour_ops():
    s = train_crop_flip_sampler(16, (1.0, 1.0), MEAN, STD)  # area 1: the whole image, so the view is x or flip(x)
    assert (s.num_large, s.num_small) == (1, 0)
    images = _batch(32, size=16)
    views = s.sample(images, None, _gen(14))
    assert len(views.large) == 1 and views.small == []
    x = normalize(images.float() / 255, MEAN, STD)
    out = views.large[0]
    same = (out - x).flatten(1).abs().amax(1) < 1e-5
    flipped = (out - x.flip(-1)).flatten(1).abs().amax(1) < 1e-5
    assert (same | flipped).all() and same.any() and flipped.any()
    s2 = train_crop_flip_sampler(16, (0.08, 1.0), MEAN, STD)
    area = s2.sample_params(500, _gen(1)).large.box
    area = (area[..., 2] - area[..., 0]) * (area[..., 3] - area[..., 1])
    assert area.min() < 0.2 and area.min() >= 0.08 - 1e-4


def test_center_crop_resize():
    images = _batch(3, size=16, width=20)  # H = 16, W = 20
    x = images.float() / 255
    out = center_crop_resize(images, 0.5, 8)  # side 8, top 4, left 6: no resampling
    assert out.shape == (3, 3, 8, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out, x[..., 4:12, 6:14])
    full = center_crop_resize(images, 1.0, 16)
    torch.testing.assert_close(full, x[..., :, 2:18])
    resized = center_crop_resize(images, 0.875, 7)  # side 14, top 1, left 3
    expected = F.interpolate(x[..., 1:15, 3:17], size=(7, 7), mode="bicubic", antialias=True).clamp(0, 1)
    torch.testing.assert_close(resized, expected)
    torch.testing.assert_close(center_crop_resize(x, 0.875, 7), resized)  # float input in [0, 1]
    with pytest.raises(ValueError):
        center_crop_resize(images, 0.0, 8)
