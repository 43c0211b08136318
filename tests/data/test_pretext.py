"""Pretext-task inputs: rotations, per-image grayscale, standardisation, the patch grid, and the permutation set."""

import numpy as np
import pytest
import torch

from selfsup.data.pretext import (
    generate_permutations,
    grid_patches,
    jigsaw_permutations,
    random_grayscale,
    rotations,
    standardize,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rotations_are_np_rot90():
    x = torch.randn(3, 2, 5, 5)
    out, labels = rotations(x)
    assert out.shape == (12, 2, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for i in range(12):
        k, b = int(labels[i]), i % 3
        expected = np.rot90(x[b].numpy(), k, axes=(1, 2))  # counter-clockwise, as the reference
        assert np.array_equal(out[i].numpy(), expected)


def test_grayscale_is_channel_mean_and_shared_decision():
    x = torch.rand(6, 3, 4, 4)
    decide = torch.tensor([True, False, True, False, False, True])
    y = random_grayscale(x, 0.5, decide=decide)
    for i in range(6):
        if decide[i]:
            assert torch.allclose(y[i], x[i].mean(0, keepdim=True).expand(3, 4, 4))
        else:
            assert torch.equal(y[i], x[i])
    g = torch.Generator().manual_seed(0)
    frac = (random_grayscale(torch.rand(3000, 3, 1, 1), 2 / 3, g).std(1) == 0).float().mean().item()
    assert abs(frac - 2 / 3) < 0.03


def test_standardize_is_tf_per_image_standardization():
    x = torch.randn(4, 3, 6, 6) * 5 + 2
    y = standardize(x)
    for i in range(4):
        v = x[i].double()
        adj = max(v.std(unbiased=False).item(), 1 / np.sqrt(v.numel()))
        assert torch.allclose(y[i].double(), (v - v.mean()) / adj, atol=1e-5)
    flat = torch.ones(1, 3, 4, 4)
    assert torch.equal(standardize(flat), torch.zeros_like(flat))  # no division by zero


def test_grid_patches_centred_and_jittered():
    s, patch = 15, 3
    x = torch.arange(2 * 1 * s * s, dtype=torch.float32).view(2, 1, s, s)
    p = grid_patches(x, patch, jitter=False)
    assert p.shape == (2, 9, 1, 3, 3)
    for k in range(9):
        r, c = (k // 3) * 5 + 1, (k % 3) * 5 + 1
        assert torch.equal(p[:, k], x[:, :, r:r + 3, c:c + 3])
    g = torch.Generator().manual_seed(0)
    offsets = set()
    for _ in range(20):
        q = grid_patches(x, patch, jitter=True, generator=g)
        for b in range(2):
            for k in range(9):
                top_left = q[b, k, 0, 0, 0].item() - b * s * s
                r, c = divmod(int(top_left), s)
                cell_r, cell_c = (k // 3) * 5, (k % 3) * 5
                assert cell_r <= r <= cell_r + 2 and cell_c <= c <= cell_c + 2  # inside its own cell
                assert torch.equal(q[b, k, 0], x[b, 0, r:r + 3, c:c + 3])
                offsets.add((r - cell_r, c - cell_c))
    assert len(offsets) == 9  # every position of the 2 px gap is used
    with pytest.raises(ValueError, match="does not fit"):
        grid_patches(x, 6, jitter=False)


def test_shipped_permutations():
    perms = jigsaw_permutations()
    assert perms.shape == (100, 9)
    assert all(sorted(row) == list(range(9)) for row in perms.tolist())
    assert len({tuple(r) for r in perms.tolist()}) == 100
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    off = d[~torch.eye(100, dtype=torch.bool)]
    assert off.min().item() >= 6  # Noroozi's published "max" set has pairs at distance 2
    assert off.float().mean().item() > 8.0


@pytest.mark.slow
def test_shipped_permutations_are_the_generator_s():
    assert np.array_equal(jigsaw_permutations().numpy(), generate_permutations(100, seed=0))
