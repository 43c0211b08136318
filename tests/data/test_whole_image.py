"""Crops from the whole image: torchvision's RandomResizedCrop statistics per image, the padded canvas renders each
image as if it were alone, folder data keeps its aspect for pretraining and squares for evaluation, masks placed."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from selfsup.config import DataConfig, ViewGroupConfig, ViewsConfig
from selfsup.data.base import collate, pad_stack
from selfsup.data.datasets import build_dataset
from selfsup.data.masks import dataset_fingerprint, place_masks
from selfsup.data.views import MultiViewSampler

N = 20000


def _sampler(scale=(0.08, 1.0), count=1, **kw) -> MultiViewSampler:
    large = ViewGroupConfig(count=count, size=8, scale_min=[scale[0]], scale_max=scale[1], blur_p=[0.0],
                            solarize_p=[0.0], maskable=True)
    small = ViewGroupConfig(count=0, size=4, scale_min=[0.05], scale_max=0.14, blur_p=[0.0], solarize_p=[0.0])
    return MultiViewSampler(ViewsConfig(large=large, small=small, **kw), (0.5,) * 3, (0.25,) * 3)


def _torchvision_boxes(h: int, w: int, scale, n: int) -> np.ndarray:
    """(n, 4) normalised boxes from torchvision's RandomResizedCrop.get_params on an h x w image."""
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    out = np.empty((n, 4))
    for k in range(n):
        top, left, bh, bw = v2.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
        out[k] = (left / w, top / h, (left + bw) / w, (top + bh) / h)
    return out


def _stats(boxes: np.ndarray, h: int, w: int):
    bw, bh = (boxes[:, 2] - boxes[:, 0]) * w, (boxes[:, 3] - boxes[:, 1]) * h
    stats = {"area": bw * bh / (h * w), "log_aspect": np.log(bw / bh),
             "cx": (boxes[:, 0] + boxes[:, 2]) / 2, "cy": (boxes[:, 1] + boxes[:, 3]) / 2}
    return {k: np.round(v, 3) for k, v in stats.items()}  # the fallback is a point mass: float32 vs pixel rounding


@pytest.mark.parametrize("h, w, scale", [(300, 400, (0.08, 1.0)), (400, 256, (0.08, 1.0)), (120, 480, (0.3, 1.0)),
                                         (256, 341, (0.05, 0.14))])
def test_box_statistics_match_torchvision_random_resized_crop(h, w, scale):
    """Area fraction, pixel aspect and centre of the boxes placed for an h x w image have torchvision's distributions
    (two-sample KS, 20k draws each; torchvision rounds to whole pixels, which the tolerance covers), including the
    fallback rate on a 4:1 image where many attempts do not fit."""
    s = _sampler(scale)
    sizes = torch.tensor([[h, w]]).expand(N, 2)
    params = s.place(s.sample_params(N, torch.Generator().manual_seed(1)), sizes)
    ours = _stats(params.large.box[:, 0].double().numpy(), h, w)
    ref = _stats(_torchvision_boxes(h, w, scale, N), h, w)
    for key in ours:
        stat = ks_2samp(ours[key], ref[key]).statistic
        assert stat < 0.025, (key, stat)
    full = lambda st: float(np.mean(st["area"] > 0.999))  # noqa: E731 - the fallback (or a whole-image draw)
    assert abs(full(ours) - full(ref)) < 0.01


def test_boxes_depend_on_each_images_own_aspect():
    s = _sampler()
    params = s.sample_params(4, torch.Generator().manual_seed(0))
    sizes = torch.tensor([[32, 32], [32, 64], [64, 32], [32, 32]])
    placed = s.place(params, sizes)
    assert torch.equal(placed.large.box[0], params.large.box[0])  # square: as drawn
    assert torch.equal(placed.large.box[3], params.large.box[3])
    for i in (1, 2):  # pixel aspect of the box (not its normalised one) within [3/4, 4/3], same draws as alone
        b = placed.large.box[i, 0]
        h, w = sizes[i].tolist()
        aspect = float((b[2] - b[0]) * w / ((b[3] - b[1]) * h))
        assert 3 / 4 - 1e-4 <= aspect <= 4 / 3 + 1e-4 or float((b[2] - b[0]) * (b[3] - b[1])) > 0.99
        alone = s.place(params[i:i + 1], sizes[i:i + 1])
        assert torch.equal(alone.large.box[0], b.unsqueeze(0))


def test_canvas_renders_each_image_as_if_alone():
    """Differently shaped images padded into one canvas (collate) give the same views, colour operations and mask
    hook included, as each image rendered on its own at its own size: the padding never leaks in."""
    g = torch.Generator().manual_seed(3)
    shapes = [(20, 30), (30, 18), (25, 25), (16, 40)]
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
    masks = [(torch.rand(1, h, w, generator=g) > 0.4).to(torch.uint8) * 255 for h, w in shapes]
    batch = collate([{"image": im, "mask": m, "label": 0, "index": k} for k, (im, m) in enumerate(zip(images, masks))])
    assert batch["image"].shape == (4, 3, 30, 40) and batch["size"].tolist() == [list(s) for s in shapes]
    s = _sampler(count=3, mask_p=0.7)
    params = s.sample_params(4, torch.Generator().manual_seed(5))
    together = s(batch["image"], batch["mask"], params, batch["size"])
    for i, (im, m) in enumerate(zip(images, masks)):
        alone = s(im[None], m[None], params[i:i + 1], torch.tensor([list(shapes[i])]))
        for v in range(3):
            torch.testing.assert_close(together.large[v][i], alone.large[v][0], atol=1e-5, rtol=0)


def test_pad_stack_repeats_the_edge_once():
    a = torch.arange(6, dtype=torch.uint8).view(1, 2, 3)
    b = torch.zeros(1, 4, 5, dtype=torch.uint8)
    out = pad_stack([a, b])
    assert out.shape == (2, 1, 4, 5)
    assert out[0, 0, :2, 3].tolist() == [2, 5]  # repeated last column
    assert out[0, 0, 2, :4].tolist() == [3, 4, 5, 5]  # repeated last row (corner included)
    assert out[0, 0, 3].sum() == 0 and out[0, 0, :, 4].sum() == 0
    same = pad_stack([a, a])
    assert torch.equal(same, torch.stack([a, a]))


def _photos(root, shapes):
    root.mkdir()
    for c in ("a", "b"):
        (root / c).mkdir()
        for k, (w, h) in enumerate(shapes):
            arr = (np.random.default_rng(k).random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{k}.jpg", quality=90)


def test_folder_keeps_aspect_for_views_and_squares_for_evaluation(tmp_path):
    _photos(tmp_path / "photos", [(64, 48), (48, 64), (200, 40), (40, 40)])
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "photos"), image_size=16, max_aspect=3.0)
    whole = build_dataset(cfg, "train", for_views=True)
    shapes = [tuple(whole[i]["image"].shape[-2:]) for i in range(4)]
    assert shapes == [(16, 21), (21, 16), (16, 48), (16, 16)]  # short side 16, aspect kept, 5:1 cut to 3:1
    square = build_dataset(cfg, "train")
    assert {tuple(square[i]["image"].shape[-2:]) for i in range(len(square))} == {(16, 16)}
    cfg.crop_from = "center"
    assert tuple(build_dataset(cfg, "train", for_views=True)[2]["image"].shape[-2:]) == (16, 16)
    # the whole image's centre square is the evaluation image, so a mask cache made on squares fits both
    assert dataset_fingerprint(whole, "folder", "train") == dataset_fingerprint(square, "folder", "train")
    big = whole[2]["image"]
    torch.testing.assert_close(big[:, :, 16:32].float(), square[2]["image"].float(), atol=1.0, rtol=0)


def test_place_masks_centre_and_whole():
    m = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    sizes = torch.tensor([[8, 16], [12, 8]])
    centre = place_masks(m, sizes, (12, 16), "centre")
    assert centre[0, 0, :8, 4:12].min() == 255 and centre[0, 0, :, :4].max() == 0 and centre[0, 0, :, 12:].max() == 0
    assert centre[1, 0, 2:10, :8].min() == 255 and centre[1, 0, :2].max() == 0 and centre[1, 0, 10:].max() == 0
    whole = place_masks(m, sizes, (12, 16), "whole", mode="nearest")
    assert whole[0, 0, :8, :16].min() == 255 and whole[0, 0, 8:].max() == 0
    assert whole[1, 0, :12, :8].min() == 255 and whole[1, 0, :, 8:].max() == 0
    square = torch.randint(0, 256, (1, 1, 8, 8), dtype=torch.uint8)
    same = place_masks(square, torch.tensor([[8, 8]]), (8, 8), "centre")
    assert torch.equal(same, square)


def test_pretrain_on_differently_shaped_jpegs(tmp_path):
    """A folder of differently shaped JPEGs pretrains from the whole image, masks from a random ablation included."""
    from tests.conftest import TINY, run_cli

    _photos(tmp_path / "photos", [(40, 30), (30, 44), (90, 24), (28, 28)] * 2)
    proc = run_cli("pretrain", *TINY, "data.dataset=folder", f"data.root={tmp_path / 'photos'}",
                   "data.image_size=24", "views.mask_source=random_rect", "views.mask_p=0.5",
                   f"out={tmp_path / 'run'}", "train.steps=2", "train.batch_size=8", "monitor.knn_every_steps=0")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "backbone.safetensors").is_file()
    assert not math.isnan(float((tmp_path / "run" / "train_log.csv").read_text().splitlines()[-1].split(",")[1]))


def test_the_kNN_monitor_probes_centre_squares_of_whole_image_data(tmp_path):
    """The monitor's kNN bank comes from the training set; with whole-image (or still-encoded) items it must read the
    decoded centre squares, as evaluation does, not padded canvases."""
    from selfsup.config import load_config
    from selfsup.engine.monitor import knn_subsets

    _photos(tmp_path / "photos", [(64, 48), (48, 64), (200, 40), (40, 40)])
    cfg = load_config(None, ["data.dataset=folder", f"data.root={tmp_path / 'photos'}", "data.image_size=16",
                             "monitor.knn_train_size=4", "monitor.knn_test_size=2"])
    whole = build_dataset(cfg.data, "train", for_views=True, device_decode=True)
    bank, queries = knn_subsets(cfg, whole)
    assert all(tuple(bank[i]["image"].shape) == (3, 16, 16) for i in range(len(bank)))
    assert all(tuple(queries[i]["image"].shape) == (3, 16, 16) for i in range(len(queries)))
