"""The saliency network and its training pieces: feature maps per resolution, the guided filter, the refinement."""

import pytest
import torch

from selfsup.config import ModelConfig, load_config
from selfsup.models.registry import create_backbone
from selfsup.saliency.images import fit_subset
from selfsup.saliency.network import SaliencyNet
from selfsup.saliency.train import epoch_batches, guided_filter, train_saliency_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, width", [("convnet_tiny", 0.25), ("resnet18", 0.25), ("vgg19bn", 0.25)])
def test_feature_maps_one_per_resolution_and_a_full_size_output(name, width):
    bb = create_backbone(ModelConfig(backbone=name, width=width), image_size=32)
    maps = bb.forward_maps(torch.randn(2, 3, 32, 32))
    sides = [m.shape[-1] for m in maps]
    assert sides == sorted(set(sides), reverse=True) and len(maps) >= 3  # finest first, no repeats
    net = SaliencyNet(bb, 32, channels=8)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 32, 32)
    out.sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert unused == (["encoder.body.fc7.0.weight", "encoder.body.fc7.1.weight", "encoder.body.fc7.1.bias"]
                      if name == "vgg19bn" else [])  # every map-making layer trains (VGG's fc7 follows the 1x1 fc6)


def test_guided_filter_keeps_constants_and_edges():
    guide = torch.zeros(1, 16, 16)
    guide[:, :, 8:] = 1.0  # a vertical edge
    const = torch.full((1, 16, 16), 0.3)
    assert torch.allclose(guided_filter(const, guide, 2, 1e-2), const, atol=1e-6)
    noisy = guide + 0.1 * torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = guided_filter(noisy, guide, 2, 1e-3)
    assert float((out - guide).abs().mean()) < 0.5 * float((noisy - guide).abs().mean())  # noise removed
    assert float(out[0, :, 7].mean()) < 0.2 and float(out[0, :, 8].mean()) > 0.8  # the edge stays sharp


def test_fit_subset_and_batches_are_seeded_and_never_a_batch_of_one():
    a, b = fit_subset(100, 30, 0), fit_subset(100, 30, 0)
    assert (a == b).all() and len(set(a.tolist())) == 30 and (fit_subset(100, 30, 1) != a).any()
    assert len(fit_subset(10, 30, 0)) == 10
    parts = epoch_batches(21, 10, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(21)) and min(len(p) for p in parts) >= 10


def test_refinement_learns_the_labels_and_the_moving_average_is_bias_corrected():
    cfg = load_config("saliency_shapes", ["model.backbone=convnet_tiny", "model.width=0.25", "saliency.batch_size=8",
                                          "saliency.smoothing=none"])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=g)
    target = torch.zeros(16, 16, 16)
    target[:, 4:12, 4:12] = 1.0
    images[:, :, 4:12, 4:12] = 255  # the target is the bright square
    net, mva, losses = train_saliency_net(cfg, images, [target], [0.5], 1.0, 15, 3e-3, seed=0, mean=[0.5] * 3,
                                          std=[0.25] * 3, track_mva=True, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    assert mva is not None and mva.shape == (16, 16, 16)
    assert float(mva[:, 4:12, 4:12].mean()) > 0.6 and float(mva[:, :2].mean()) < 0.3  # not shrunk towards 0
