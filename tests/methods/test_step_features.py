"""Every method hands the engine the detached backbone features of the large views its online network saw
(``StepOutput.features``, for the online classifier): the right views, in view order, without a gradient path."""

import pytest
import torch

from selfsup.config import load_config
from selfsup.data.views import Views
from selfsup.methods.base import StepContext, build_method
from tests.conftest import TINY

BASE = [o for o in TINY if not o.startswith("method.")]
HEAD = ["method.projector_hidden=32", "method.projector_dim=16"]
METHODS = {  # method -> (overrides, index of the first large view through the online backbone)
    "relicv2": (["method.name=relicv2", *HEAD, "method.predictor_hidden=32", "method.num_negatives=4"], 0),
    "relic": (["method.name=relic", *HEAD, "method.predictor_hidden=32", "views.small.count=0", "views.mask_p=0"], 0),
    "byol": (["method.name=byol", *HEAD, "method.predictor_hidden=32"], 0),
    "simclr": (["method.name=simclr", *HEAD], 0),
    "mocov2": (["method.name=mocov2", *HEAD, "method.queue_size=40"], 1),  # large view 0 is the key's
    "swav": (["method.name=swav", *HEAD, "method.num_prototypes=12", "method.queue_length=32"], 0),
    "dino": (["method.name=dino", "method.out_dim=32", "method.hidden_dim=32", "method.bottleneck_dim=16"], 0),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_features_are_the_online_backbone_on_the_large_views(name, tmp_path):
    overrides, first = METHODS[name]
    cfg = load_config(None, [*BASE, *overrides, f"out={tmp_path / 'run'}"])
    torch.manual_seed(0)
    method = build_method(cfg)
    g = torch.Generator().manual_seed(0)
    v = cfg.views
    views = Views(large=[torch.randn(8, 3, v.large.size, v.large.size, generator=g) for _ in range(v.large.count)],
                  small=[torch.randn(8, 3, v.small.size, v.small.size, generator=g) for _ in range(v.small.count)])
    out = method(views, StepContext(step=0, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(0)))
    assert out.features is not None and not out.features.requires_grad
    with torch.no_grad():
        expected = method.backbone(torch.cat(views.large[first:]))  # train mode: the same batch statistics
    assert out.features.shape == (8 * (v.large.count - first), method.backbone.num_features)
    assert torch.allclose(out.features, expected, atol=1e-5)
