"""``selfsup saliency fit | predict | score | show`` on tiny data, then pretraining with the cached masks."""

import json

import numpy as np
import pytest

from tests.conftest import TINY, run_cli

DATA = ["data.dataset=shapes", "data.image_size=16", "data.train_size=64", "data.test_size=32", "data.num_classes=4",
        "model.backbone=convnet_tiny", "train.threads=1"]
FIT = [*DATA, "saliency.fit_images=24", "saliency.rounds=1", "saliency.round_epochs=1", "saliency.fuse_epochs=1",
       "saliency.methods=[mr,mc]", "saliency.batch_size=8", "saliency.workers=1"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    enc = root / "enc"
    r = run_cli("pretrain", *TINY, "train.steps=2", f"out={enc}", "views.mask_p=0")
    assert r.returncode == 0, r.stderr
    r = run_cli("saliency", "fit", "saliency_shapes", *FIT, f"saliency.encoder={enc}", f"out={root / 'fit'}", "-q")
    assert r.returncode == 0, r.stderr
    return root


def test_fit_writes_every_stage_and_resumes(fitted):
    fit = fitted / "fit"
    summary = json.loads((fit / "saliency.json").read_text())
    assert summary["fit_images"] == 24 and summary["methods"] == ["mr", "mc"]
    for m in ("mr", "mc"):
        maps = np.load(fit / "handcrafted" / f"{m}.npy")
        assert maps.shape == (24, 16, 16) and maps.dtype == np.uint8
        assert (fit / "refined" / f"{m}_round1.npy").is_file()
        assert 0 <= summary["handcrafted"][m]["scores_fit"]["f_beta"] <= 1  # the data has ground truth: scored
    assert "scores_test" in summary["fused"] and (fit / "saliency_net.safetensors").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in (fit / "handcrafted").iterdir()}
    r = run_cli("saliency", "fit", "saliency_shapes", *FIT, f"saliency.encoder={fitted / 'enc'}", f"out={fit}", "-q")
    assert r.returncode == 0, r.stderr
    assert before == {p.name: p.stat().st_mtime_ns for p in (fit / "handcrafted").iterdir()}  # not recomputed
    r = run_cli("saliency", "fit", "saliency_shapes", *FIT, "saliency.rounds=2", f"out={fit}", "-q")
    assert r.returncode == 2 and "other settings" in r.stderr and r.stderr.count("\n") == 1


def test_predict_then_pretrain_with_the_cache_and_refuse_a_stale_one(fitted):
    cache = fitted / "masks"
    r = run_cli("saliency", "predict", "relicv2_shapes_bg", *DATA, "--net", str(fitted / "fit"), "--out", str(cache),
                "-q")
    assert r.returncode == 0, r.stderr
    assert "64 masks" in r.stdout
    masks = np.load(cache / json.loads((cache / "train.json").read_text())["array"])
    assert masks.shape == (64, 16, 16) and set(np.unique(masks)) <= {0, 255}
    run = fitted / "masked_run"
    r = run_cli("pretrain", "relicv2_shapes_bg", *TINY, "train.steps=2", "views.mask_p=0.5", "views.mask_source=cache",
                f"views.mask_cache={cache}", f"out={run}")
    assert r.returncode == 0, r.stderr
    r = run_cli("pretrain", "relicv2_shapes_bg", *TINY, "train.steps=2", "data.train_size=48",
                "views.mask_source=cache",
                f"views.mask_cache={cache}", f"out={fitted / 'stale_run'}")
    assert r.returncode == 2 and "stale mask cache" in r.stderr and r.stderr.count("\n") == 1


def test_score_and_show(fitted, tmp_path):
    out = tmp_path / "scores.json"
    r = run_cli("saliency", "score", "relicv2_shapes_bg", *DATA, "--methods", "mr", "--net", str(fitted / "fit"),
                "--limit", "16", "--out", str(out))
    assert r.returncode == 0, r.stderr
    scores = json.loads(out.read_text())["scores"]
    assert set(scores) == {"mr", "network"} and all(0 <= s["iou"] <= 1 for s in scores.values())
    png = tmp_path / "grid.png"
    r = run_cli("saliency", "show", "relicv2_shapes_bg", *DATA, "--methods", "mc", "--net", str(fitted / "fit"),
                "--images", "3", "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 1000
    r = run_cli("saliency", "show", "relicv2_shapes_bg", *DATA, "--methods", "rbd", "--photos", "--images", "2",
                "--size", "48", "--out", str(tmp_path / "photos.png"))
    assert r.returncode == 0, r.stderr
    r = run_cli("saliency", "score", "relicv2_shapes_bg", *DATA)
    assert r.returncode == 2 and "nothing to score" in r.stderr
    r = run_cli("saliency", "score", "relicv2_fmnist", "--methods", "xyz")
    assert r.returncode == 2 and "--methods" in r.stderr
