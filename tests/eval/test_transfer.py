"""Transfer: the mean per-class metric against a direct count, selection on val by the chosen metric, the grid, and the
CLI on tiny data for both modes (a different target dataset, with another number of classes)."""

import json

import pytest
import torch

from selfsup.config import load_config
from selfsup.eval.linear import fit_logistic_lbfgs
from selfsup.eval.transfer import finetune_settings, transfer_grid
from selfsup.metrics.accuracy import mean_per_class_accuracy
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_per_class_accuracy_is_the_mean_of_class_recalls():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 1, 0, 1, 2])
    scores = torch.nn.functional.one_hot(pred, 4).float()  # class 3 never appears: it does not count
    direct = (3 / 4 + 1 / 2 + 1 / 1) / 3 * 100
    assert mean_per_class_accuracy(scores, labels, 4) == pytest.approx(direct)
    assert mean_per_class_accuracy(scores, labels, 4) != pytest.approx(100 * 5 / 7)  # not top-1


def test_lbfgs_reports_mean_per_class_and_selects_by_the_metric():
    g = torch.Generator().manual_seed(0)
    # unbalanced: 300 of class 0, 30 of class 1, which overlap a little
    x = torch.cat([torch.randn(300, 4, generator=g), torch.randn(30, 4, generator=g) + 1.5])
    y = torch.cat([torch.zeros(300), torch.ones(30)]).long()
    res = fit_logistic_lbfgs(x, y, x, y, num_classes=2, l2_grid=[1e-4, 1.0], val_fraction=0.3, seed=0,
                             metric="mean_per_class", return_model=True)
    logits = ((x - res["mean"]) / res["std"]) @ res["weight"].T + res["bias"]
    assert res["mean_per_class"] == pytest.approx(mean_per_class_accuracy(logits, y, 2))
    assert res["mean_per_class"] < res["top1"]  # the rare class is the harder one
    with pytest.raises(ValueError, match="metric"):
        fit_logistic_lbfgs(x, y, x, y, num_classes=2, l2_grid=[1.0], metric="top5")


def test_grid_and_settings():
    cfg = load_config(None, [*TINY, "eval.transfer.lrs=[0.01,0.1]", "eval.transfer.weight_decays=[0,1e-4]",
                             "eval.transfer.epochs=[3]"])
    assert transfer_grid(cfg) == [(0.01, 0.0, 3), (0.01, 1e-4, 3), (0.1, 0.0, 3), (0.1, 1e-4, 3)]
    s = finetune_settings(cfg, 0.1, 1e-4, 3)
    assert s.head_lr == s.encoder_lr == 0.1 and s.schedule == "cosine" and s.labels == 1.0 and s.epochs == 3


@pytest.mark.slow
def test_cli_transfer_both_modes_to_another_dataset(tmp_path):
    run = tmp_path / "run"
    r = run_cli("pretrain", *TINY, f"out={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    # the target: built-in data with 3 classes and a 24-image test split (the source had 4 classes)
    target = ["data.num_classes=3", "data.train_size=48", "data.test_size=24", "--quiet"]
    out = tmp_path / "lin.json"
    r = run_cli("eval", "transfer", "-c", str(run), *target, "eval.linear.l2_grid=[1e-3,1e-1]",
                "eval.transfer.metric=mean_per_class", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "linear" and res["chosen"]["l2"] in (1e-3, 1e-1) and res["score"] == res["mean_per_class"]
    assert "transfer (linear) to shapes" in r.stdout
    out = tmp_path / "ft.json"
    r = run_cli("eval", "transfer", "-c", str(run), *target, "eval.transfer.mode=finetune",
                "eval.transfer.lrs=[0.001,0.05]", "eval.transfer.weight_decays=[0]", "eval.transfer.epochs=[1]",
                "eval.transfer.batch_size=16", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert sorted(res["val"]) == ["lr=0.001,wd=0,epochs=1", "lr=0.05,wd=0,epochs=1"]
    assert res["chosen"]["lr"] in (0.001, 0.05) and 0 <= res["top1"] <= 100
