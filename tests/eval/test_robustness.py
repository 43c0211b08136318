"""Robustness: corruptions are deterministic per image and grow with severity, small images go through 32 px, the
missing extra is one line, OOD folders are matched to the training classes by name, and the CLI prints Table 9."""

import sys

import pytest
import torch
from torchvision.io import write_png

from selfsup.config import load_config
from selfsup.data.datasets import build_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.eval.robustness import CORRUPTIONS, CorruptedDataset, corrupt_image, robustness_table, run_robustness
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(size):
    g = torch.Generator().manual_seed(size)
    return torch.randint(60, 200, (3, size, size), generator=g, dtype=torch.uint8)


def test_corruptions_are_seeded_keep_shape_and_grow_with_severity():
    for size in (28, 32):  # 28 px goes up to 32 px and back
        img = _image(size)
        for name in ("gaussian_noise", "contrast", "pixelate", "motion_blur"):
            a = corrupt_image(img, name, 3, seed=7)
            assert a.shape == img.shape and a.dtype == torch.uint8
            assert torch.equal(a, corrupt_image(img, name, 3, seed=7)), name
        mild = (corrupt_image(img, "gaussian_noise", 1, 0).float() - img.float()).abs().mean()
        harsh = (corrupt_image(img, "gaussian_noise", 5, 0).float() - img.float()).abs().mean()
        assert 0 < mild < harsh
    assert len(CORRUPTIONS) == 15


def test_corrupted_dataset_depends_on_the_index_not_the_order():
    base = [{"image": _image(32), "label": i} for i in range(3)]
    ds = CorruptedDataset(base, "shot_noise", 2, seed=1)
    forward = [ds[i]["image"] for i in range(3)]
    backward = [ds[i]["image"] for i in reversed(range(3))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert ds[1]["label"] == 1
    with pytest.raises(ConfigError, match="severity must be 1-5"):
        CorruptedDataset(base, "shot_noise", 6)
    with pytest.raises(ConfigError, match="unknown corruption 'rain'"):
        CorruptedDataset(base, "rain", 1)


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)
    with pytest.raises(ConfigError, match=r"pip install 'selfsup\[robustness\]'"):
        corrupt_image(_image(32), "fog", 1, 0)


def test_ood_folder_matched_by_class_name(tmp_path):
    cfg = load_config(None, [*TINY, "eval.linear.l2_grid=[0.01]"])
    train = build_dataset(cfg.data, "train")
    ood = tmp_path / "ood"
    for name in ("star", "circle"):  # a subset of the classes, in another order
        (ood / name).mkdir(parents=True)
        label = train.class_names.index(name)
        picks = [i for i in range(len(train)) if int(train.labels[i]) == label][:3]
        for j, i in enumerate(picks):
            write_png(train[i]["image"], str(ood / name / f"{j}.png"))
    res = run_robustness(cfg, None, corruptions=(), ood=[str(ood)], progress=False)
    assert set(res["ood"]) == {str(ood)} and 0 <= res["ood"][str(ood)] <= 100
    assert "mean_corrupted_top1" not in res
    (ood / "hexagon").mkdir()
    write_png(train[0]["image"], str(ood / "hexagon" / "0.png"))
    with pytest.raises(DataError, match="hexagon match no training class"):
        run_robustness(cfg, None, corruptions=(), ood=[str(ood)], progress=False)


def test_table_layout():
    res = {"clean_top1": 90.0, "corruptions": {"gaussian_noise": 50.0, "contrast": 70.0}, "mean_corrupted_top1": 60.0}
    head, rule, row = robustness_table(res)
    assert head == "| clean | Gauss | Contrast | mean |" and row == "| 90.00 | 50.00 | 70.00 | 60.00 |"
    assert rule.count("|") == 5


@pytest.mark.slow
def test_cli_robustness(tmp_path):
    run = tmp_path / "run"
    assert run_cli("pretrain", *TINY, f"out={run}").returncode == 0
    r = run_cli("eval", "robustness", "-c", str(run), "--quiet", "--corruptions", "gaussian_noise,contrast",
                "--severities", "1,5", "--test-limit", "16", "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| clean | Gauss | Contrast | mean |" in r.stdout and "(16 test images)" in r.stdout
    import json

    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["by_severity"]["contrast"]) == {"1", "5"}
    r = run_cli("eval", "robustness", "-c", str(run), "--severities", "0,9")
    assert r.returncode == 2 and "--severities" in r.stderr and r.stderr.count("\n") == 1
