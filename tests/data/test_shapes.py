"""The built-in procedural shapes dataset: determinism, splits, balance, masks, spurious backgrounds, speed."""

import time

import pytest
import torch

from selfsup.config import DataConfig
from selfsup.data import shapes
from selfsup.data.base import collate
from selfsup.data.datasets import build_dataset
from selfsup.data.shapes import BACKGROUND_FAMILIES, PHOTO_NAMES, SHAPE_NAMES, ShapesDataset, generate_shapes
from selfsup.errors import ConfigError


@pytest.fixture(scope="module")
def small():
    return ShapesDataset(num_classes=10, image_size=16, size=200, split="train", stats_images=200)


def test_deterministic_and_random_access(small):
    again = ShapesDataset(num_classes=10, image_size=16, size=200, split="train", stats_images=200)
    for key in ("images", "masks", "labels", "background", "background_photo"):
        assert torch.equal(getattr(small, key), getattr(again, key)), key
    assert small.mean == again.mean and small.std == again.std
    part = generate_shapes(10, 16, 50, 70, split="train")
    assert torch.equal(part["image"], small.images[50:70]) and torch.equal(part["mask"], small.masks[50:70])
    assert torch.equal(part["label"], small.labels[50:70])
    other_seed = ShapesDataset(num_classes=10, image_size=16, size=20, seed=1, stats_images=20)
    assert not torch.equal(other_seed.images, small.images[:20])


def test_train_and_test_differ(small):
    test = ShapesDataset(num_classes=10, image_size=16, size=50, split="test", stats_images=200)
    assert not torch.equal(test.images, small.images[:50])
    assert (test.images.float() - small.images[:50].float()).abs().mean() > 20
    assert test.mean == small.mean  # both splits are normalised with the train statistics


def test_items_labels_and_balance(small):
    assert small.has_masks and small.num_classes == 10 and small.class_names == list(SHAPE_NAMES[:10])
    assert small.images.shape == (200, 3, 16, 16) and small.images.dtype == torch.uint8
    assert small.masks.shape == (200, 1, 16, 16) and small.masks.dtype == torch.uint8
    assert small.labels.min() >= 0 and small.labels.max() <= 9
    assert torch.bincount(small.labels, minlength=10).tolist() == [20] * 10  # blocks of K are permutations
    uneven = shapes.shape_labels(0, "train", 10, 0, 205)
    counts = torch.bincount(torch.from_numpy(uneven), minlength=10)
    assert counts.min() >= 20 and counts.max() <= 21
    assert small.labels[:10].tolist() != list(range(10))  # the order inside a block is shuffled
    assert all(0 < m < 1 for m in small.mean) and all(0.05 < s < 0.5 for s in small.std)
    item = small[3]
    assert set(item) == {"image", "label", "index", "mask"} and item["index"] == 3
    batch = collate(small.__getitems__([0, 5, 7]))
    assert batch["mask"].shape == (3, 1, 16, 16) and batch["label"].tolist() == small.labels[[0, 5, 7]].tolist()


def test_masks_are_soft_and_objects_visible(small):
    masks = small.masks.float() / 255
    area = masks.flatten(1).mean(1)
    assert (area > 0.02).all() and (area < 0.9).all()  # thin arrows/crescents at the smallest scale: ~4 %
    soft = ((small.masks > 0) & (small.masks < 255)).flatten(1).any(1)
    assert soft.float().mean() > 0.95  # anti-aliased edges
    img = small.images.float() / 255
    inside = small.masks == 255
    outside = small.masks == 0
    fg = (img * inside).sum((2, 3)) / inside.sum((2, 3)).clamp_min(1)
    bg = (img * outside).sum((2, 3)) / outside.sum((2, 3)).clamp_min(1)
    distinct = (fg - bg).norm(dim=1) > 0.1
    assert distinct.float().mean() > 0.85


def test_spurious_backgrounds():
    tied = ShapesDataset(num_classes=12, image_size=8, size=120, spurious=1.0, stats_images=120)
    n_fam, n_photo = len(BACKGROUND_FAMILIES), len(PHOTO_NAMES)
    assert tied.background_tied.all()
    assert torch.equal(tied.background, tied.labels % n_fam)
    photo = tied.background == BACKGROUND_FAMILIES.index("photo")
    assert photo.any() and torch.equal(tied.background_photo[photo], tied.labels[photo] % n_photo)
    assert (tied.background_photo[~photo] == -1).all()

    free = ShapesDataset(num_classes=12, image_size=8, size=600, spurious=0.0, stats_images=120)
    assert not free.background_tied.any()
    match = (free.background == free.labels % n_fam).float().mean()
    assert match < 0.35  # chance is 1/5
    assert len(torch.unique(free.background)) == n_fam
    for k in range(3):  # each class sees several background families
        assert len(torch.unique(free.background[free.labels == k])) >= 4

    half = ShapesDataset(num_classes=12, image_size=8, size=600, spurious=0.5, stats_images=120)
    assert 0.4 < half.background_tied.float().mean() < 0.6


def test_background_subset():
    full = ShapesDataset(num_classes=5, image_size=8, size=300, stats_images=60)
    default = ShapesDataset(num_classes=5, image_size=8, size=300, stats_images=60, backgrounds=BACKGROUND_FAMILIES)
    assert torch.equal(full.images, default.images)  # naming every family is the default, image for image
    grad = ShapesDataset(num_classes=5, image_size=8, size=300, stats_images=60, backgrounds=("gradient",))
    assert (grad.background == BACKGROUND_FAMILIES.index("gradient")).all()
    assert (grad.background_photo == -1).all()
    assert torch.equal(grad.labels, full.labels)  # same labels and shapes, only the backgrounds change
    two = ShapesDataset(num_classes=5, image_size=8, size=300, stats_images=60, backgrounds=("noise", "photo"))
    fams = two.background.bincount(minlength=len(BACKGROUND_FAMILIES))
    assert set(torch.nonzero(fams).flatten().tolist()) == {BACKGROUND_FAMILIES.index("noise"),
                                                           BACKGROUND_FAMILIES.index("photo")}
    assert 0.35 < fams[BACKGROUND_FAMILIES.index("noise")] / 300 < 0.65
    assert grad.mean != full.mean  # statistics follow the configuration
    cfg = DataConfig(dataset="shapes", image_size=8, num_classes=5, train_size=30, test_size=10,
                     backgrounds=["gradient"])
    assert (build_dataset(cfg, "test").background == BACKGROUND_FAMILIES.index("gradient")).all()
    with pytest.raises(ConfigError, match="data.backgrounds"):
        ShapesDataset(num_classes=5, image_size=8, size=10, backgrounds=("gradiant",))
    with pytest.raises(ConfigError, match="data.backgrounds"):
        ShapesDataset(num_classes=5, image_size=8, size=10, backgrounds=())
    cfg.backgrounds = []  # an empty list from the command line is an error, not "all"
    with pytest.raises(ConfigError, match="data.backgrounds"):
        build_dataset(cfg, "train")


def test_all_shapes_render_and_too_many_classes():
    templates = shapes.shape_templates()
    assert templates.shape[0] == len(SHAPE_NAMES) >= 12
    areas = templates.flatten(1).mean(1)
    assert (areas > 0.1).all() and (areas < 0.7).all()
    ds = ShapesDataset(num_classes=len(SHAPE_NAMES), image_size=12, size=len(SHAPE_NAMES), stats_images=16)
    assert sorted(ds.labels.tolist()) == list(range(len(SHAPE_NAMES)))
    assert (ds.masks.flatten(1).amax(1) > 128).all()
    with pytest.raises(ConfigError, match="num_classes"):
        ShapesDataset(num_classes=len(SHAPE_NAMES) + 1, image_size=8, size=4)
    with pytest.raises(ConfigError, match="num_classes"):
        build_dataset(DataConfig(num_classes=99, train_size=4, test_size=4), "train")


def test_bundled_photos_load():
    photos = shapes._photo_arrays()
    assert len(photos) == len(PHOTO_NAMES)
    assert all(p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= 256 for p in photos)
    assert sum(shapes.photo_is_gray()) == 5


def test_build_dataset_limit_is_a_prefix():
    cfg = DataConfig(dataset="shapes", image_size=8, num_classes=4, train_size=40, test_size=10)
    full = build_dataset(cfg, "train")
    cfg.limit = 12
    part = build_dataset(cfg, "train")
    assert len(part) == 12 and torch.equal(part.images, full.images[:12]) and part.mean == full.mean
    assert len(build_dataset(cfg, "test")) == 10


def test_generation_speed():
    start = time.perf_counter()
    generate_shapes(10, 32, 0, 1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 8.0, f"1000 images at 32 px took {elapsed:.1f} s (expected well under 1 s)"
