"""Batched per-sample image operations against direct computations and torchvision, image by image."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from selfsup.data import augment as A


def _images(n=6, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g)


# ------------------------------------------------------------------------------------------------- crop + resize


def test_crop_full_box_at_source_size_is_identity():
    x = _images(4, 10)
    out = A.crop_resize(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1), 10)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_crop_pixel_aligned_box_takes_those_pixels():
    x = _images(2, 8)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 0.75, 1.0]])
    out = A.crop_resize(x, boxes, 4)
    torch.testing.assert_close(out[0], x[0, :, 0:4, 0:4], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], x[1, :, 4:8, 2:6], atol=1e-6, rtol=0)


def test_crop_downsampling_averages_areas():
    # A full box from 8 to 4 pixels: 2 x 2 bilinear samples per output pixel, at the pixel centres -> 2 x 2 average.
    x = _images(3, 8)
    out = A.crop_resize(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(3, 1), 4)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-6, rtol=0)


def test_crop_batch_index_picks_the_source_image():
    x = _images(3, 6)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(5, 1)
    out = A.crop_resize(x, boxes, 6, torch.tensor([2, 0, 1, 2, 0]))
    torch.testing.assert_close(out, x[[2, 0, 1, 2, 0]], atol=1e-6, rtol=0)


def test_crop_non_square_source():
    x = _images(1, 8)[:, :, :4, :]  # H=4, W=8
    out = A.crop_resize(x, torch.tensor([[0.5, 0.0, 1.0, 1.0]]), 4)
    torch.testing.assert_close(out[0], x[0, :, :, 4:8], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ geometric / pointwise


def test_flip_and_solarize():
    x = _images(2, 5)
    torch.testing.assert_close(A.hflip(x)[..., 0], x[..., -1])
    expected = torch.where(x < 0.5, x, 1.0 - x)
    assert torch.equal(A.solarize(x), expected)
    edge = torch.tensor([0.0, 0.25, 0.4999, 0.5, 0.75, 1.0]).view(1, 1, 1, 6)
    assert A.solarize(edge).flatten().tolist() == pytest.approx([0.0, 0.25, 0.4999, 0.5, 0.25, 0.0])


def test_grayscale_weights():
    x = torch.eye(3).view(3, 3, 1, 1).repeat(1, 1, 2, 2)  # pure red, green, blue images
    out = A.grayscale(x)
    assert out.shape == x.shape
    for i, w in enumerate((0.2989, 0.587, 0.114)):
        assert torch.allclose(out[i], torch.full((3, 2, 2), w))
    y = _images(3, 7)
    torch.testing.assert_close(A.grayscale(y), TF.rgb_to_grayscale(y, num_output_channels=3), atol=1e-6, rtol=0)


def test_normalize():
    x = _images(2, 3)
    out = A.normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    for c, (m, s) in enumerate(zip((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))):
        torch.testing.assert_close(out[:, c], (x[:, c] - m) / s)


def test_to_float():
    u = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert A.to_float(u).flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    with pytest.raises(TypeError):
        A.to_float(torch.zeros(1, 3, 1, 1, dtype=torch.int32))


# ------------------------------------------------------------------------------------------------- colour jitter


@pytest.mark.parametrize("name, fn, ref, lo, hi", [
    ("brightness", A.adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    ("contrast", A.adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    ("saturation", A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
    ("hue", A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_colour_ops_match_torchvision_per_image(name, fn, ref, lo, hi):
    x = _images(8, 9, seed=1)
    factors = torch.linspace(lo, hi, 8)
    out = fn(x, factors)
    expected = torch.stack([ref(x[i], float(factors[i])) for i in range(8)])
    atol = 2e-6 if name == "hue" else 1e-6
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


def test_hue_with_ties_gray_and_saturated_pixels():
    # Quantised values produce ties between channels (R = G, G = B, ...) and gray pixels: the sector choice must agree.
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (16, 3, 6, 6), generator=g).float() / 2
    factors = torch.rand(16, generator=g) - 0.5
    out = A.adjust_hue(x, factors)
    expected = torch.stack([TF.adjust_hue(x[i], float(factors[i])) for i in range(16)])
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)
    hsv = A.rgb_to_hsv(x)
    torch.testing.assert_close(A.hsv_to_rgb(hsv), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(A.adjust_hue(x, torch.zeros(16)), x, atol=1e-6, rtol=0)


def _sequential_jitter(img, factors, order):
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op in order:
        img = fns[op](img, float(factors[op]))
    return img


def test_color_jitter_follows_each_samples_order_and_apply_flag():
    n = 12
    x = _images(n, 8, seed=2)
    g = torch.Generator().manual_seed(5)
    factors = torch.stack([torch.rand(n, generator=g) * 0.8 + 0.6, torch.rand(n, generator=g) * 0.8 + 0.6,
                           torch.rand(n, generator=g) * 0.4 + 0.8, torch.rand(n, generator=g) * 0.2 - 0.1], dim=1)
    order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
    apply = torch.tensor([True] * 10 + [False] * 2)
    out = A.color_jitter(x.clone(), apply, factors, order)
    for i in range(n):
        expected = _sequential_jitter(x[i], factors[i], order[i].tolist()) if apply[i] else x[i]
        torch.testing.assert_close(out[i], expected, atol=3e-6, rtol=0)


def test_color_jitter_order_changes_the_result():
    x = _images(1, 8, seed=4).repeat(2, 1, 1, 1)
    factors = torch.tensor([[1.4, 0.6, 1.2, 0.1]]).repeat(2, 1)
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    out = A.color_jitter(x.clone(), torch.tensor([True, True]), factors, order)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_apply_where_touches_only_selected_samples():
    x = _images(5, 4)
    flag = torch.tensor([True, False, True, False, False])
    out = A.apply_where(x.clone(), flag, A.hflip)
    torch.testing.assert_close(out[flag], x[flag].flip(-1))
    torch.testing.assert_close(out[~flag], x[~flag])
    assert torch.equal(A.apply_where(x.clone(), torch.zeros(5, dtype=torch.bool), A.hflip), x)
    torch.testing.assert_close(A.apply_where(x.clone(), torch.ones(5, dtype=torch.bool), A.hflip), x.flip(-1))


# ------------------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("size, frac, expected", [(224, 0.1, 23), (96, 0.1, 9), (32, 0.1, 3), (16, 0.1, 3),
                                                  (28, 0.1, 3), (64, 0.1, 7), (224, 0.05, 11)])
def test_blur_kernel_size(size, frac, expected):
    assert A.blur_kernel_size(size, frac) == expected


def _direct_blur(img, sigma, k):
    """A hand-built k x k Gaussian (outer product of exp(-t^2 / 2 sigma^2)), reflect padding, conv2d per channel."""
    half = k // 2
    taps = torch.tensor([math.exp(-0.5 * (t / sigma) ** 2) for t in range(-half, half + 1)], dtype=torch.float64)
    taps = taps / taps.sum()
    kernel = torch.outer(taps, taps).to(img.dtype)
    padded = F.pad(img[:, None], (half, half, half, half), mode="reflect")  # (C, 1, H + 2h, W + 2h)
    return F.conv2d(padded, kernel.view(1, 1, k, k))[:, 0]


def test_gaussian_blur_per_sample_sigma_matches_direct_and_torchvision():
    x = _images(4, 16, seed=6)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = A.gaussian_blur(x, sigma, 5)
    for i in range(4):
        torch.testing.assert_close(out[i], _direct_blur(x[i], float(sigma[i]), 5), atol=1e-6, rtol=0)
        ref = TF.gaussian_blur(x[i], kernel_size=[5, 5], sigma=[float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)
    assert not torch.allclose(out[1], out[1].new_zeros(()) + x[1])  # it does blur


def test_gaussian_blur_kernel_wider_than_the_image_replicates_the_border():
    x = _images(2, 3, seed=7)
    sigma = torch.tensor([1.0, 2.0])
    out = A.gaussian_blur(x, sigma, 7)  # reflect padding needs pad < side: falls back to replicate
    taps = A.gaussian_kernel1d(sigma, 7)
    for i in range(2):
        padded = F.pad(x[i][:, None], (3, 3, 3, 3), mode="replicate")
        kernel = torch.outer(taps[i], taps[i]).view(1, 1, 7, 7)
        torch.testing.assert_close(out[i], F.conv2d(padded, kernel)[:, 0], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------- masking


def test_mask_background_equals_cropping_the_masked_image():
    """A4: masking after the crop equals cropping the masked whole image, soft edges included (linearity)."""
    g = torch.Generator().manual_seed(8)
    x = torch.rand(3, 3, 12, 12, generator=g)
    m = torch.rand(3, 1, 12, 12, generator=g)
    gray = torch.tensor([0.1, 0.5, 0.9])
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0], [0.33, 0.1, 0.66, 0.5]])
    masked_whole = m * x + (1 - m) * gray.view(3, 1, 1, 1)
    expected = A.crop_resize(masked_whole, boxes, 7)
    crops = A.crop_resize(torch.cat([x * m, m], dim=1), boxes, 7)
    out = A.mask_background(crops[:, :3], crops[:, 3:], gray)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
