"""The quality monitor: the online classifier never touches the backbone, it learns, the kNN is the probe's kNN, and
both survive a resume exactly."""

import csv

import pytest
import torch

from selfsup.config import load_config
from selfsup.data.datasets import build_dataset
from selfsup.data.views import center_crop_resize, normalize
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.monitor import QualityMonitor, build_monitor
from selfsup.engine.trainer import pretrain
from selfsup.metrics import knn_classify
from selfsup.models.registry import create_backbone

KNN = ["monitor.knn_every_steps=3", "monitor.knn_train_size=48", "monitor.knn_test_size=32"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_monitor_leaves_pretraining_bit_for_bit_unchanged(tmp_path, tiny_overrides):
    """No gradient, no state and no randomness of the method depends on the monitor."""
    on = pretrain(load_config(None, [*tiny_overrides, *KNN, f"out={tmp_path / 'on'}"]))
    off = pretrain(load_config(None, [*tiny_overrides, "monitor.online_linear=false", f"out={tmp_path / 'off'}"]))
    assert on.losses == off.losses
    a, b = load_checkpoint(tmp_path / "on" / "last.ckpt"), load_checkpoint(tmp_path / "off" / "last.ckpt")
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    assert "monitor" in a and "monitor" not in b
    # ... while the classifier did learn something: its weights left their zero initialisation
    assert a["monitor"]["classifier"]["linear.weight"].abs().sum() > 0
    assert set(on.monitor) == {"knn_top1", "online_test_top1"} and off.monitor == {}


def test_online_classifier_gets_no_gradient_path_into_the_backbone():
    cfg = load_config(None, ["data.dataset=shapes", "data.image_size=16", "data.train_size=32", "data.num_classes=4"])
    ds = build_dataset(cfg.data, "train")
    backbone = create_backbone(cfg.model, image_size=16)
    monitor = QualityMonitor(cfg, ds, backbone.num_features, torch.device("cpu"), is_main=True)
    x = torch.randn(8, 3, 16, 16)
    features = backbone(x)  # attached to the backbone's graph, as a method's features would be before detaching
    logs = monitor.train_step(features, torch.arange(8) % 4)
    assert set(logs) == {"online_loss", "online_top1"}
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in monitor.classifier.parameters())


def test_online_classifier_learns_a_linearly_separable_task():
    cfg = load_config(None, ["data.dataset=shapes", "data.image_size=16", "data.train_size=32", "data.num_classes=4",
                             "monitor.online_lr=0.01"])
    ds = build_dataset(cfg.data, "train")
    monitor = QualityMonitor(cfg, ds, 16, torch.device("cpu"), is_main=True)
    gen = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 16, generator=gen)
    accs = []
    for _ in range(200):
        y = torch.randint(0, 4, (64,), generator=gen)
        x = centres[y] + torch.randn(64, 16, generator=gen)
        # two "views" of 64 images: features (2 * 64, F), labels (64,) repeated view after view
        accs.append(monitor.train_step(torch.cat([x, x + 0.1 * torch.randn(64, 16, generator=gen)]), y)["online_top1"])
    assert accs[0] < 50  # zero-initialised: one class for everything before the first update
    assert sum(accs[-20:]) / 20 > 95


def test_knn_monitor_is_the_probes_weighted_knn(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, *KNN])
    ds = build_dataset(cfg.data, "train")
    torch.manual_seed(0)
    backbone = create_backbone(cfg.model, image_size=16)
    monitor = build_monitor(cfg, ds, backbone.num_features, torch.device("cpu"), is_main=True)
    got = monitor.evaluate(backbone)

    def embed(subset):
        src = subset.dataset
        images = torch.stack([src[i]["image"] for i in subset.indices])
        labels = torch.tensor([src[i]["label"] for i in subset.indices])
        with torch.no_grad():
            return backbone.eval()(normalize(center_crop_resize(images, 1.0, 16), src.mean, src.std)), labels

    (bx, by), (qx, qy) = embed(monitor._bank), embed(monitor._queries)
    assert len(by) == 48 and len(qy) == 32 and monitor._queries.dataset is not ds  # queries from the test split
    assert got["knn_top1"] == pytest.approx(knn_classify(bx, by, qx, qy, k=20, num_classes=4)["top1"])
    assert got["online_test_top1"] == pytest.approx(
        100 * (monitor.classifier.eval()(qx).argmax(1) == qy).float().mean().item())


def test_monitor_is_logged_and_resumes_exactly(tmp_path, tiny_overrides):
    full = pretrain(load_config(None, [*tiny_overrides, *KNN, f"out={tmp_path / 'a'}"]))
    cfg_b = load_config(None, [*tiny_overrides, *KNN, f"out={tmp_path / 'b'}"])
    pretrain(cfg_b, stop_at_step=4)
    rest = pretrain(cfg_b, resume="auto")
    assert rest.monitor == full.monitor
    a, b = _rows(tmp_path / "a" / "train_log.csv"), _rows(tmp_path / "b" / "train_log.csv")
    for key in ("online_loss", "online_top1", "knn_top1", "online_test_top1"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    # kNN after steps 3 and 6 (every 3 and at the end): rows 2 and 5 of the 0-based step column
    assert [int(r["step"]) for r in a if r["knn_top1"]] == [2, 5]
    assert all(r["online_top1"] for r in a)
    ca, cb = load_checkpoint(tmp_path / "a" / "last.ckpt"), load_checkpoint(tmp_path / "b" / "last.ckpt")
    for key, value in ca["monitor"]["classifier"].items():
        assert torch.equal(value, cb["monitor"]["classifier"][key]), key


def test_monitor_is_off_without_labels(tmp_path, caplog):
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = load_config(None, ["data.dataset=folder", f"data.root={tmp_path}", "data.image_size=8",
                             "monitor.knn_every_steps=5"])
    ds = build_dataset(cfg.data, "train")
    with caplog.at_level("INFO", logger="selfsup.engine"):
        assert build_monitor(cfg, ds, 16, torch.device("cpu"), is_main=True) is None
    assert "no labels" in caplog.text


def test_monitor_options_are_checked():
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError, match="monitor.knn_every_steps"):
        load_config(None, ["monitor.knn_every_steps=-1"])
    with pytest.raises(ConfigError, match="monitor.online_lr"):
        load_config(None, ["monitor.online_lr=0"])
