"""Evaluation at every depth: tap pooling, the concatenated extraction, the SGD/MLP probe, fractions, and the CLI."""

import json
import math
from collections import OrderedDict

import pytest
import torch

from selfsup.cli.main import main
from selfsup.config import ModelConfig, load_config
from selfsup.errors import ConfigError
from selfsup.eval.taps import TapFeatures, fit_probe_sgd, pool_tap, probe_taps
from selfsup.models.registry import create_backbone
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pool_tap_follows_the_reference_stride():
    x = torch.randn(2, 64, 28, 28)  # 50,176 values
    y = pool_tap(x, 9000)
    s = math.ceil(math.sqrt(64 * 28 * 28 / 9000))  # 3
    assert y.shape == (2, 64 * math.ceil(28 / s) ** 2)
    assert torch.equal(y, torch.nn.functional.max_pool2d(x, s, s, ceil_mode=True).flatten(1))
    small = torch.randn(2, 8, 4, 4)
    assert torch.equal(pool_tap(small, 9000), small.flatten(1))
    vec = torch.randn(3, 5)
    assert pool_tap(vec, 2) is vec


def test_tap_features_concatenate_and_split_back():
    bb = create_backbone(ModelConfig(backbone="resnet50v2", width=0.125, stage_units=[1, 1, 1, 1]), 16).eval()
    tapper = TapFeatures(bb, max_dims=512)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        flat = tapper(x)
        parts = tapper.split(flat)
        taps = bb.forward_taps(x)
    assert list(parts) == list(bb.tap_names)
    for name, value in parts.items():
        assert torch.allclose(value, pool_tap(taps[name], 512))
        assert value.shape[1] <= 512 * 1.5
    with pytest.raises(ConfigError, match="not among this backbone's taps"):
        TapFeatures(bb, 512, names=["block9"])


def _blobs(n, dim=6, classes=3, seed=0):
    """Gaussian blobs around fixed centres (the same for every ``seed``; the seed draws the points)."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_sgd_and_mlp_probes_learn_and_mlp_solves_xor():
    cfg = load_config(None, ["eval.taps.sgd_epochs=30", "eval.taps.sgd_milestones=[20]", "eval.taps.sgd_lr=0.5",
                             "eval.taps.sgd_batch_size=64"]).eval.taps
    xtr, ytr = _blobs(300)
    xte, yte = _blobs(150, seed=1)
    assert fit_probe_sgd(xtr, ytr, xte, yte, num_classes=3, hidden=None, cfg=cfg)["top1"] > 90
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()  # XOR: no linear probe can do it
    lin = fit_probe_sgd(x[:400], y[:400], x[400:], y[400:], num_classes=2, hidden=None, cfg=cfg)["top1"]
    mlp = fit_probe_sgd(x[:400], y[:400], x[400:], y[400:], num_classes=2, hidden=64, cfg=cfg)["top1"]
    assert lin < 70 and mlp > 90


def test_probe_taps_table_and_label_fractions():
    cfg = load_config(None, ["eval.taps.probes=[lbfgs,sgd]", "eval.taps.fractions=[1.0,0.1]",
                             "eval.taps.sgd_epochs=40", "eval.taps.sgd_milestones=[30]", "eval.taps.sgd_lr=2.0",
                             "eval.taps.sgd_batch_size=32"])
    xtr, ytr = _blobs(300)
    xte, yte = _blobs(90, seed=1)
    noise = torch.randn(300, 6)
    train = OrderedDict(early=noise, pre_logits=xtr)
    test = OrderedDict(early=torch.randn(90, 6), pre_logits=xte)
    res = probe_taps(train, ytr, test, yte, num_classes=3, cfg=cfg, progress=False)
    assert set(res) == {"lbfgs", "sgd"} and set(res["lbfgs"]) == {"1", "0.1"}
    for probe in res.values():
        for accs in probe.values():
            assert accs["pre_logits"] > accs["early"] + 30  # informative tap beats pure noise


@pytest.mark.slow
def test_cli_taps_on_a_pretext_run(tmp_path, capsys):
    out = tmp_path / "run"
    common = [o for o in TINY if not o.startswith(("method.", "views.small", "views.large.count", "views.mask"))]
    assert main(["pretrain", "--quiet", *common, "method.name=rotation", "views.small.count=0",
                 "views.large.count=1", "views.mask_p=0", "model.backbone=revnet50", "model.width=0.125",
                 "model.stage_units=[1,1,1,1]", f"out={out}", "train.steps=2"]) == 0
    assert main(["eval", "taps", "--quiet", "-c", str(out), "eval.taps.max_dims=256",
                 "eval.taps.fractions=[1.0,0.5]", "eval.taps.probes=[lbfgs,mlp]", "eval.taps.sgd_epochs=2",
                 "eval.taps.sgd_milestones=[1]", "eval.taps.mlp_hidden=16"]) == 0
    text = capsys.readouterr().out
    assert "| lbfgs | 1 | " in text and "| mlp | 0.5 | " in text and "after_root" in text
    saved = json.loads((out / "evals" / "taps_labels1-0p5_shapes.json").read_text())
    assert saved["taps"] == ["after_root", "block1", "block2", "block3", "block4", "pre_logits"]
    assert (out / "evals" / "taps_labels1-0p5_shapes.png").stat().st_size > 5000
    log = (out / "train_log.csv").read_text().splitlines()
    assert "pretext_top1" in log[0] and log[1].split(",")[-1] != ""
