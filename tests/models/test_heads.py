"""The BYOL/RELICv2 projector/predictor MLP."""

import pytest
import torch
import torch.nn as nn

from selfsup.errors import ConfigError
from selfsup.models.heads import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def test_byol_structure_and_shape():
    mlp = MLP(512, 4096, 256)
    assert [type(m) for m in mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[0].bias) == (512, 4096, None)
    assert (mlp[3].in_features, mlp[3].out_features) == (4096, 256) and mlp[3].bias is not None
    assert mlp(torch.randn(4, 512)).shape == (4, 256)


def test_no_norm_has_biases():
    mlp = MLP(8, 16, 4, norm="none")
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU, nn.Linear]
    assert mlp[0].bias is not None and torch.all(mlp[0].bias == 0)
    assert mlp(torch.randn(3, 8)).shape == (3, 4)


def test_layer_norm_option():
    mlp = MLP(8, 16, 4, norm="layer")
    assert [type(m) for m in mlp] == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]


def test_num_layers_repeats_hidden_block():
    mlp = MLP(8, 16, 4, num_layers=3)
    assert [type(m) for m in mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert mlp[3].in_features == 16 and mlp[3].out_features == 16
    assert mlp(torch.randn(5, 8)).shape == (5, 4)
    assert sum(isinstance(m, nn.Linear) for m in mlp) == 3


def test_init_std():
    torch.manual_seed(0)
    mlp = MLP(400, 300, 200)
    std = mlp[0].weight.std().item()
    # truncated at 2 std: the std of the truncated normal is about 0.88 of the nominal 1/sqrt(400) = 0.05
    assert 0.8 * 0.05 < std < 0.05
    assert mlp[0].weight.abs().max().item() <= 2 * 0.05 + 1e-6


@pytest.mark.parametrize("kwargs", [dict(norm="group"), dict(num_layers=1)])
def test_bad_options(kwargs):
    with pytest.raises(ConfigError):
        MLP(4, 4, 4, **kwargs)
