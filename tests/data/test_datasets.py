"""Dataset layer: IDX (Fashion-MNIST), CIFAR pickles (restricted unpickler), image folders, collate, batched fetch."""

import gzip
import io
import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from selfsup.config import DataConfig
from selfsup.data.base import InMemoryDataset, collate
from selfsup.data.datasets import build_dataset
from selfsup.data.sources.fashion_mnist import FASHION_MNIST_DEFAULT_DIR, read_idx
from selfsup.errors import ConfigError, DataError

# torchvision 0.29 deprecates torchvision.io (per call); the folder datasets still decode with it.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

FMNIST = Path(FASHION_MNIST_DEFAULT_DIR)
needs_fmnist = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="dataset-fashion-mnist is not installed")


# --------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST / IDX
# --------------------------------------------------------------------------------------------------------------------


@needs_fmnist
def test_fashion_mnist_real_files():
    labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [6000] * 10
    test = build_dataset(DataConfig(dataset="fashion_mnist", image_size=28), "test")
    assert len(test) == 10000 and test.images.shape == (10000, 3, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.num_classes == 10 and test.class_names[0] == "T-shirt/top" and test.class_names[9] == "Ankle boot"
    assert test.mean == pytest.approx((0.2860,) * 3) and test.std == pytest.approx((0.3530,) * 3)
    item = test[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 28, 28)
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][0], item["image"][2])
    assert "mask" not in item and not test.has_masks

    train = build_dataset(DataConfig(dataset="fashion_mnist", image_size=32, limit=256), "train")
    assert train.images.shape == (256, 3, 32, 32) and len(train) == 256
    assert set(train.labels.tolist()) <= set(range(10)) and len(set(train.labels.tolist())) == 10
    assert train.images.float().mean() > 10  # real pixels, not zeros


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(directory: Path, split_prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{split_prefix}-images-idx3-ubyte", images), (f"{split_prefix}-labels-idx1-ubyte", labels)):
        data = _idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_tiny_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9, 8, 7], dtype=np.uint8)
    _write_idx(tmp_path, "train", images, labels, gz)
    _write_idx(tmp_path, "t10k", images[:3], labels[:3], gz)
    ds = build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=8), "train")
    assert len(ds) == 7
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.images[:, 2], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist()
    test = build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=8, limit=2), "test")
    assert len(test) == 2 and test.labels.tolist() == [0, 1]
    big = build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=16), "train")
    assert big.images.shape == (7, 3, 16, 16)


def test_idx_env_var(tmp_path, monkeypatch):
    _write_idx(tmp_path / "fm", "t10k", np.zeros((2, 4, 4), np.uint8), np.array([3, 4], np.uint8), gz=True)
    monkeypatch.setenv("SELFSUP_FASHION_MNIST", str(tmp_path / "fm"))
    ds = build_dataset(DataConfig(dataset="fashion_mnist", image_size=4), "test")
    assert ds.labels.tolist() == [3, 4]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_file_names_it(tmp_path, gz):
    images = np.arange(5 * 6 * 6, dtype=np.uint8).reshape(5, 6, 6)
    _write_idx(tmp_path, "train", images, np.zeros(5, np.uint8), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()[:-10]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=6), "train")
    assert str(path) in str(err.value) and "truncated" in str(err.value) and "\n" not in str(err.value)


def test_idx_corrupt_gzip_and_bad_magic(tmp_path):
    _write_idx(tmp_path, "train", np.zeros((5, 6, 6), np.uint8), np.zeros(5, np.uint8), gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut the gzip stream
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=6), "train")
    path.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100)))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((2, 2, 2), np.uint8)) + b"extra"))
    with pytest.raises(DataError, match="more data"):
        read_idx(path)


def test_idx_mismatched_counts(tmp_path):
    _write_idx(tmp_path, "train", np.zeros((5, 6, 6), np.uint8), np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path), image_size=6), "train")


def test_fashion_mnist_missing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="fashion_mnist", root=str(missing)), "train")
    msg = str(err.value)
    assert str(missing) in msg and "apt-get install dataset-fashion-mnist" in msg and "data.root=DIR" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------------------------


def _cifar_batch(rng, n, label_key, num_classes):
    return {b"batch_label": b"fake", b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            label_key: [int(x) for x in rng.integers(0, num_classes, size=n)], b"filenames": [b"x.png"] * n}


def _dump(path: Path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _fake_cifar10(parent: Path, n=4, protocol=2):
    d = parent / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(rng, n, b"labels", 10)
        _dump(d / name, batches[name], protocol)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(d / "batches.meta", {b"label_names": names, b"num_vis": 3072}, protocol)
    return d, batches


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_fake_files(tmp_path, protocol):
    d, batches = _fake_cifar10(tmp_path, protocol=protocol)
    for root in (tmp_path, d):  # the parent or the extracted folder itself
        ds = build_dataset(DataConfig(dataset="cifar10", root=str(root), image_size=32), "train")
        assert len(ds) == 20 and ds.num_classes == 10 and ds.class_names[1] == "automobile"
        first = batches["data_batch_1"]
        assert torch.equal(ds.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
        assert ds.labels[:4].tolist() == first[b"labels"]
        assert ds.labels[4:8].tolist() == batches["data_batch_2"][b"labels"]
    test = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), image_size=16), "test")
    assert test.images.shape == (4, 3, 16, 16) and test.labels.tolist() == batches["test_batch"][b"labels"]
    limited = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), limit=6), "train")
    assert len(limited) == 6 and limited.labels[4:].tolist() == batches["data_batch_2"][b"labels"][:2]
    assert limited.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-4)


def test_cifar100_fake_files(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    train, test = _cifar_batch(rng, 6, b"fine_labels", 100), _cifar_batch(rng, 3, b"fine_labels", 100)
    _dump(d / "train", train)
    _dump(d / "test", test)
    _dump(d / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []})
    ds = build_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)), "train")
    assert len(ds) == 6 and ds.num_classes == 100 and ds.class_names[7] == "c7"
    assert ds.labels.tolist() == train[b"fine_labels"]
    assert build_dataset(DataConfig(dataset="cifar100", root=str(d)), "test").labels.tolist() == test[b"fine_labels"]


class _Py2Pickler(pickle._Pickler):
    """Writes pickles like the official CIFAR files (Python 2 cPickle, numpy 1): bytes as Python 2 ``str`` opcodes,
    numpy's reconstructors under their ``numpy.core`` names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def test_cifar_official_python2_format(tmp_path):
    d, _ = _fake_cifar10(tmp_path)
    data = (np.arange(3 * 3072) % 251).astype(np.uint8).reshape(3, 3072)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": [7, 0, 3]})
    assert b"numpy.core.multiarray\n_reconstruct" in buf.getvalue() and b"_codecs" not in buf.getvalue()
    (d / "test_batch").write_bytes(buf.getvalue())
    ds = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "test")
    assert ds.labels.tolist() == [7, 0, 3] and torch.equal(ds.images.reshape(3, -1), torch.from_numpy(data))


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", [_SystemPayload, _OpenPayload])
def test_cifar_malicious_pickle_never_runs(tmp_path, payload):
    d, _ = _fake_cifar10(tmp_path)
    marker = tmp_path / "PWNED"
    evil = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"x": payload(marker)}
    _dump(d / "data_batch_1", evil)
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "train")
    assert str(d / "data_batch_1") in str(err.value) and "refusing" in str(err.value)
    assert not marker.exists()


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "nope")), "train")
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "train")
    msg = str(err.value)
    assert str(tmp_path) in msg and "data_batch_1" in msg and "cifar-10-batches-py" in msg
    d, _ = _fake_cifar10(tmp_path)
    (d / "test_batch").unlink()
    with pytest.raises(DataError, match="missing test_batch"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "train")
    _dump(d / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"test_batch: 'data' must be a uint8 array \(N, 3072\)"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "test")
    (d / "test_batch").write_bytes(pickle.dumps({b"data": 1})[:-5])
    with pytest.raises(DataError, match="test_batch"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), "test")


# --------------------------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------------------------


def _save(path: Path, size, mode="RGB", color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        img = Image.new("L", size, 128)
    elif mode == "RGBA":
        img = Image.new("RGBA", size, (*color, 100))
    else:
        img = Image.new("RGB", size, color)
    img.save(path)


def _two_tone(path: Path, w=40, h=20):
    """Left half red, right half blue: after resize + centre crop the boundary is in the middle."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    _two_tone(root / "train" / "cat" / "a.png")
    _save(root / "train" / "cat" / "b.JPG", (50, 70))
    _save(root / "train" / "cat" / "sub" / "c.bmp", (16, 16))
    _save(root / "train" / "dog" / "gray.png", (30, 25), mode="L")
    _save(root / "train" / "dog" / "rgba.png", (24, 40), mode="RGBA")
    _save(root / "train" / "dog" / ".hidden.png", (10, 10))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "empty_class").mkdir()
    _save(root / "val" / "dog" / "v.webp", (33, 21))
    return root


def test_folder_imagefolder_layout(image_folder):
    cfg = DataConfig(dataset="folder", root=str(image_folder), image_size=16)
    ds = build_dataset(cfg, "train")
    assert ds.num_classes == 2 and ds.class_names == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and len(ds) == 5
    assert ds.mean == pytest.approx((0.485, 0.456, 0.406))
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16) and item["index"] == i
    red_blue = ds[0]["image"]  # 40x20 -> 32x16 -> centre 16x16: red left, blue right
    assert red_blue[:, 8, 2].tolist() == [255, 0, 0] and red_blue[:, 8, 13].tolist() == [0, 0, 255]
    gray = ds[3]["image"]
    assert torch.equal(gray[0], gray[1]) and int(gray[0, 0, 0]) == 128
    test = build_dataset(cfg, "test")  # val/ has only "dog": it keeps the training index 1
    assert test.labels.tolist() == [1] and test.num_classes == 2 and test[0]["image"].shape == (3, 16, 16)


def test_folder_flat_layout_and_test_root(tmp_path):
    flat = tmp_path / "flat"
    _save(flat / "one.png", (20, 30))
    _save(flat / "two.jpeg", (64, 48))
    _save(flat / "three.GIF", (10, 12))
    _save(flat / "four.tiff", (12, 10))
    cfg = DataConfig(dataset="folder", root=str(flat), image_size=8)
    ds = build_dataset(cfg, "train")
    assert ds.num_classes is None and ds.class_names is None and ds.labels.tolist() == [-1] * 4
    batch = collate(ds.__getitems__(range(4)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [-1] * 4 and batch["mask"] is None
    with pytest.raises(DataError, match="data.test_root"):
        build_dataset(cfg, "test")
    other = tmp_path / "other"
    _save(other / "x.png", (9, 9))
    test = build_dataset(DataConfig(dataset="folder", root=str(flat), test_root=str(other), image_size=8), "test")
    assert len(test) == 1
    assert len(build_dataset(DataConfig(dataset="folder", root=str(flat), image_size=8, limit=2), "train")) == 2


def test_folder_corrupt_image(tmp_path, caplog):
    root = tmp_path / "data"
    _save(root / "good.png", (20, 20))
    bad = root / "zz_bad.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    ds = build_dataset(DataConfig(dataset="folder", root=str(root), image_size=8), "train")
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert msg.startswith(f"cannot read image {bad}: ") and "\n" not in msg

    skipping = build_dataset(DataConfig(dataset="folder", root=str(root), image_size=8, skip_corrupt=True), "train")
    with caplog.at_level(logging.WARNING, logger="selfsup.data"):
        assert skipping[1] is None
    assert skipping.num_skipped == 1 and str(bad) in caplog.text
    loader = DataLoader(skipping, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["skipped"] == 1 and batch["image"].shape == (1, 3, 8, 8) and batch["index"].tolist() == [0]


def test_folder_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images in"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "empty")), "train")
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "nowhere")), "train")


# --------------------------------------------------------------------------------------------------------------------
# collate, __getitems__, build_dataset
# --------------------------------------------------------------------------------------------------------------------


def _tiny(masks=True):
    images = torch.arange(5 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(5, 3, 4, 4)
    m = (images[:, :1] > 100).to(torch.uint8) * 255 if masks else None
    return InMemoryDataset(images, torch.tensor([0, 1, 2, 0, 1]), num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3,
                           masks=m)


def test_getitems_matches_getitem():
    ds = _tiny()
    items = ds.__getitems__([4, 0, 2, -1])
    for got, i in zip(items, [4, 0, 2, 4]):
        ref = ds[i]
        assert got["index"] == i and got["label"] == ref["label"]
        assert torch.equal(got["image"], ref["image"]) and torch.equal(got["mask"], ref["mask"])
    with pytest.raises(IndexError):
        ds.__getitems__([5])
    with pytest.raises(IndexError):
        ds[5]


def test_collate_shapes_and_skipped():
    ds = _tiny()
    batch = collate([ds[0], None, ds[3], None])
    assert batch["image"].shape == (2, 3, 4, 4) and batch["image"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 0]
    assert batch["index"].dtype == torch.int64 and batch["index"].tolist() == [0, 3]
    assert batch["mask"].shape == (2, 1, 4, 4) and batch["mask"].dtype == torch.uint8
    assert batch["skipped"] == 2
    assert collate([_tiny(masks=False)[1]])["mask"] is None
    empty = collate([None, None])
    assert empty["skipped"] == 2 and empty["image"].shape[0] == 0 and empty["label"].numel() == 0


def test_dataloader_uses_batched_fetch():
    ds = _tiny()
    calls = []
    original = ds.__getitems__

    def spy(indices):
        calls.append(list(indices))
        return original(indices)

    ds.__getitems__ = spy  # DataLoader looks the method up on the instance
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate))
    assert calls == [[0, 1], [2, 3], [4]]
    assert torch.equal(torch.cat([b["image"] for b in batches]), ds.images)


def test_build_dataset_split_and_stat_overrides():
    with pytest.raises(ConfigError, match="split"):
        build_dataset(DataConfig(), "val")
    cfg = DataConfig(dataset="shapes", image_size=8, train_size=12, test_size=6, num_classes=3,
                     mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    ds = build_dataset(cfg, "test")
    assert ds.mean == (0.1, 0.2, 0.3) and ds.std == (0.4, 0.5, 0.6) and len(ds) == 6
