"""Mask sources and corruptions (RELICv2 Tables 16-17), the mask cache and its validation, the trainer's provider."""

import json

import numpy as np
import pytest
import torch

from selfsup.config import load_config
from selfsup.data.base import InMemoryDataset
from selfsup.data.masks import MaskCache, MaskProvider, dataset_fingerprint, edit_masks, random_masks
from selfsup.errors import ConfigError, DataError
from selfsup.saliency.cache import write_cache


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["random_pixels", "random_rect", "center_rect"])
@pytest.mark.parametrize("area", [0.2, 0.5])
def test_random_masks_cover_the_asked_area(kind, area):
    m = random_masks(kind, 400, 32, area, _gen())
    assert m.dtype == torch.uint8 and m.shape == (400, 1, 32, 32) and set(m.unique().tolist()) <= {0, 255}
    cover = (m > 0).float().mean(dim=(1, 2, 3))
    assert float(cover.mean()) == pytest.approx(area, abs=0.03)
    if kind != "random_pixels":
        assert float(cover.std()) < 0.05  # every rectangle has about the same area
    assert torch.equal(m, random_masks(kind, 400, 32, area, _gen()))  # seeded
    assert not torch.equal(m, random_masks(kind, 400, 32, area, _gen(1)))


def test_centred_rectangles_are_centred_and_random_ones_move():
    ys = torch.arange(32).float().view(1, 32, 1) + 0.5
    for kind, centred in (("center_rect", True), ("random_rect", False)):
        m = (random_masks(kind, 200, 32, 0.2, _gen())[:, 0] > 0).float()
        cy = (m * ys).sum(dim=(1, 2)) / m.sum(dim=(1, 2))
        assert (float(cy.std()) < 0.6) == centred
        assert float(cy.mean()) == pytest.approx(16.0, abs=0.6 if centred else 1.5)


def _disk(size=32, r=8, cy=8, cx=8):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).to(torch.uint8).mul(255).view(1, 1, size, size)


def test_mask_edits_add_remove_and_bound():
    m = _disk(r=6, cy=7, cx=7)  # away from the centre: the centred square is disjoint from it
    area = int((m > 0).sum())
    added = edit_masks(m, "add_center", 0.25)
    assert int((added > 0).sum()) - area == pytest.approx(0.25 * area, rel=0.35)
    assert int((edit_masks(m, "remove_center", 0.25) > 0).sum()) == area  # nothing at the centre to remove
    c = _disk(cy=16, cx=16)
    removed = edit_masks(c, "remove_center", 0.25)
    assert int((c > 0).sum()) - int((removed > 0).sum()) == pytest.approx(0.25 * int((c > 0).sum()), rel=0.35)
    box = edit_masks(m, "bbox", 0.0)[0, 0] > 0
    rows, cols = torch.nonzero(m[0, 0] > 0, as_tuple=True)
    assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert torch.equal(edit_masks(m, "none", 0.3), m)


def _dataset(n=20, masks=False, seed=0):
    g = _gen(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return InMemoryDataset(images, torch.arange(n) % 3, num_classes=3, mean=[0.5] * 3, std=[0.25] * 3,
                           masks=_disk(16, 4, 8, 8).expand(n, 1, 16, 16).clone() if masks else None)


def test_cache_round_trip_resizes_and_refuses_stale_or_missing(tmp_path):
    ds = _dataset()
    fp = dataset_fingerprint(ds, "folder", "train")
    masks = np.zeros((20, 8, 8), np.uint8)
    masks[3, 2:6, 2:6] = 255
    write_cache(tmp_path, "train", masks, fp)
    assert json.loads((tmp_path / "train.json").read_text())["mask_size"] == 8
    cache = MaskCache.open(tmp_path, "train", fp)
    got = cache.get(torch.tensor([3, 0]), 16, torch.device("cpu"))
    assert got.shape == (2, 1, 16, 16) and got.dtype == torch.uint8
    assert int(got[0].float().mean()) > 40 and int(got[1].sum()) == 0
    other = dataset_fingerprint(_dataset(seed=1), "folder", "train")  # same size, other images
    with pytest.raises(DataError, match="stale mask cache") as e:
        MaskCache.open(tmp_path, "train", other)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="size: cache 20 vs data 19"):
        MaskCache.open(tmp_path, "train", dataset_fingerprint(_dataset(19), "folder", "train"))
    with pytest.raises(DataError, match="no mask cache for split 'test'"):
        MaskCache.open(tmp_path, "test", fp)
    cache.path.write_bytes(b"not numpy")  # the array the fingerprint names (train.<token>.npy)
    with pytest.raises(DataError, match="unreadable mask cache"):
        MaskCache.open(tmp_path, "train", fp)


def test_provider_needs_masks_and_draws_the_global_batch_once():
    base = ["data.dataset=folder", "data.root=/nonexistent", "views.mask_p=0.5"]
    cfg = load_config("relicv2_shapes", base)
    with pytest.raises(ConfigError, match="no foreground masks"):
        MaskProvider(cfg.views, _dataset(), "folder")
    off = MaskProvider(load_config("relicv2_shapes", [*base, "views.mask_p=0"]).views, _dataset(), "folder")
    assert off({"index": torch.arange(4)}, torch.zeros(4, 3, 16, 16), _gen()) is None
    cfg = load_config("relicv2_shapes", [*base, "views.mask_source=random_rect", "views.mask_area=0.3"])
    p = MaskProvider(cfg.views, _dataset(), "folder")
    images = torch.zeros(4, 3, 16, 16)
    whole = p({"index": torch.arange(8)}, torch.zeros(8, 3, 16, 16), _gen(5), 8, slice(0, 8))
    part = p({"index": torch.arange(4)}, images, _gen(5), 8, slice(4, 8))
    assert torch.equal(part, whole[4:8])  # a DDP rank's masks are its rows of the one-process draw
    gt = MaskProvider(load_config("relicv2_shapes", [*base, "views.mask_edit=bbox"]).views, _dataset(masks=True),
                      "folder")
    batch = {"mask": _disk(16, 4, 8, 8).expand(2, 1, 16, 16), "index": torch.arange(2)}
    boxed = gt(batch, torch.zeros(2, 3, 16, 16), _gen())
    assert int((boxed[0] > 0).sum()) == int((edit_masks(batch["mask"][:1], "bbox", 0) > 0).sum())


def test_a_cache_source_without_a_cache_is_refused_only_when_masking(tmp_path):
    cfg = load_config("relicv2_shapes", ["views.mask_source=cache"])
    with pytest.raises(ConfigError, match="needs views.mask_cache=DIR"):
        MaskProvider(cfg.views, _dataset(masks=True), "shapes")
    off = load_config("relicv2_shapes", ["views.mask_source=cache", "views.mask_p=0"])
    assert MaskProvider(off.views, _dataset(), "shapes").cache is None


@pytest.mark.parametrize("bad, match", [
    ("views.mask_source=saliency", "views.mask_source must be one of"),
    ("views.mask_area=1.5", "views.mask_area must be in"),
])
def test_bad_mask_options_are_one_line(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config("relicv2_shapes", [bad])
    with pytest.raises(ConfigError, match="corrupts dataset or cache masks"):
        load_config("relicv2_shapes", ["views.mask_source=random_rect", "views.mask_edit=bbox"])


def test_a_folder_dataset_gets_a_cache_that_a_changed_folder_refuses(tmp_path):
    from PIL import Image

    from selfsup.data.datasets import build_dataset

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 14), (40 * i, 90 if c == "a" else 10, 10)).save(root / c / f"{i}.png")
    cfg = load_config(None, ["data.dataset=folder", f"data.root={root}", "data.image_size=16"])
    ds = build_dataset(cfg.data, "train")
    fp = dataset_fingerprint(ds, "folder", "train")
    write_cache(tmp_path / "cache", "train", np.full((len(ds), 8, 8), 255, np.uint8), fp)
    assert MaskCache.open(tmp_path / "cache", "train", fp).get(torch.arange(2), 16, torch.device("cpu")).shape == \
        (2, 1, 16, 16)
    Image.new("RGB", (20, 14), (200, 200, 200)).save(root / "b" / "0.png")  # one image replaced
    changed = dataset_fingerprint(build_dataset(cfg.data, "train"), "folder", "train")
    with pytest.raises(DataError, match="stale mask cache"):
        MaskCache.open(tmp_path / "cache", "train", changed)
