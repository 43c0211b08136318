"""Hostile folders: every kind of bad file a user's tree can hold, generated here (no checked-in binaries).

The contract (issue 9): listing and decoding are bounded (regular files only, symlink cycles read once, a pixel limit
checked from the header), nothing hangs, a test split never leaks into training, 16-bit images are converted rather
than crashing, and ``data.skip_corrupt`` skips, counts and names each bad file once, with a clear error when nothing
readable is left.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import DataConfig
from selfsup.data.base import collate
from selfsup.data.datasets import build_dataset
from selfsup.data.images import decode_image_file
from selfsup.data.sources.folder import FolderDataset
from selfsup.errors import DataError
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def boom(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def png(path: Path, size=(12, 10), color=(200, 30, 30), mode="RGB") -> Path:
    Image.new(mode, size, color).save(path)
    return path


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG of a few hundred bytes whose header declares ``side`` x ``side`` pixels (400 M for 20000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    comp = zlib.compressobj()
    row = b"\x00" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # the first rows only: the rest is absent
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def png16(path: Path, value: int = 40000, size=(8, 6)) -> Path:
    """A 16-bit grayscale PNG with every pixel ``value`` (of 65535)."""
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    return path


@pytest.fixture
def fuzzed(tmp_path):
    """A two-class tree with one good image per class and every hostile entry we know of."""
    root = tmp_path / "fuzz"
    a, b = root / "cat", root / "dog"
    a.mkdir(parents=True)
    b.mkdir()
    png(a / "good.png")
    png(b / "good.jpg", color=(10, 200, 10))
    png(a / "ünïcødé ✓.png", color=(0, 0, 255))  # unicode names are fine
    (a / "truncated.png").write_bytes((a / "good.png").read_bytes()[:40])
    (a / "empty.jpg").write_bytes(b"")
    (a / "text.png").write_text("this is not an image\n")
    Image.new("CMYK", (9, 9), (0, 255, 0, 0)).save(a / "cmyk.jpg")
    png(a / "one_pixel.png", size=(1, 1))
    bomb_png(a / "bomb.png")
    png16(a / "deep16.png")
    os.mkfifo(a / "fifo.png")
    os.symlink("/dev/zero", a / "zero.png")
    os.symlink("/dev/null", a / "null.jpg")
    os.symlink(a / "missing.png", a / "dangling.png")
    png(a / ".hidden.png")
    (a / "notes.txt").write_text("ignore me")
    os.symlink(root, a / "loop_to_root")  # a cycle through the root
    os.symlink(a, a / "loop_to_self")  # a cycle on itself
    os.symlink(b, a / "into_other_class")  # a link into another class
    return root


def test_listing_is_bounded_regular_files_only_and_read_once(fuzzed, caplog):
    with deadline(10), caplog.at_level(logging.WARNING, logger="selfsup.data"):
        ds = FolderDataset(fuzzed, 8, skip_corrupt=True)
    names = sorted(p.name for p in ds.files)
    assert names == sorted(["good.png", "ünïcødé ✓.png", "truncated.png", "empty.jpg", "text.png", "cmyk.jpg",
                            "one_pixel.png", "bomb.png", "deep16.png", "good.jpg"])  # no FIFO, device, link, hidden
    assert ds.class_names == ["cat", "dog"]
    assert [int(x) for x in ds.labels] == [0] * 9 + [1]  # dog's image is not repeated under cat
    text = caplog.text
    assert "not regular files" in text and "a second time through a symlink" in text


def test_every_hostile_file_is_a_one_line_error_or_an_image(fuzzed):
    ds = FolderDataset(fuzzed, 8)
    outcomes = {}
    with deadline(20):
        for i, path in enumerate(ds.files):
            try:
                item = ds[i]
                assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 8, 8)
                outcomes[path.name] = "ok"
            except DataError as exc:
                msg = str(exc)
                assert "\n" not in msg and str(path) in msg
                outcomes[path.name] = msg
    for ok in ("good.png", "good.jpg", "ünïcødé ✓.png", "cmyk.jpg", "one_pixel.png", "deep16.png"):
        assert outcomes[ok] == "ok", (ok, outcomes[ok])
    assert "max_pixels" in outcomes["bomb.png"] and "400,000,000" in outcomes["bomb.png"]
    assert "empty file" in outcomes["empty.jpg"]
    for bad in ("truncated.png", "text.png"):
        assert outcomes[bad].startswith("cannot read image"), outcomes[bad]


def test_fifo_and_device_are_refused_without_blocking(fuzzed):
    with deadline(5):
        for name in ("fifo.png", "zero.png", "null.jpg"):
            with pytest.raises(DataError, match="not a regular file"):
                decode_image_file(fuzzed / "cat" / name)


def test_sixteen_bit_images_are_scaled_not_truncated(tmp_path):
    img = decode_image_file(png16(tmp_path / "a.png", value=40000))
    assert img.dtype == torch.uint8
    assert int(img.min()) == int(img.max()) == round(40000 * 255 / 65535)  # 156, not 255 (clipped) or 64 (low byte)
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(tmp_path / "b.tif")  # Pillow path (TIFF, I;16)
    assert int(decode_image_file(tmp_path / "b.tif").min()) == 255
    rgb48 = torch.zeros(3, 4, 5, dtype=torch.uint16)
    rgb48[0] = 65535
    from torchvision.io import encode_png

    try:
        data = encode_png(rgb48)
    except Exception:  # noqa: BLE001 - a torchvision that cannot write 16-bit RGB: the gray cases above cover it
        return
    (tmp_path / "c.png").write_bytes(data.numpy().tobytes())
    c = decode_image_file(tmp_path / "c.png")
    assert c.dtype == torch.uint8 and int(c[0].min()) == 255 and int(c[1:].max()) == 0


def test_pixel_limit_is_a_config_value(tmp_path):
    path = png(tmp_path / "big.png", size=(300, 200))
    assert decode_image_file(path).shape == (3, 200, 300)
    with pytest.raises(DataError, match=r"300 x 200 = 60,000 pixels, above data.max_pixels=59,999"):
        decode_image_file(path, max_pixels=59_999)
    root = tmp_path / "flat"
    root.mkdir()
    png(root / "x.png", size=(300, 200))
    ds = build_dataset(DataConfig(dataset="folder", root=str(root), image_size=8, max_pixels=1000,
                                  skip_corrupt=True), "train")
    assert ds[0] is None and ds.num_skipped == 1


def test_test_split_inside_root_never_reaches_training(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
        png(root / cls / "train.png")
        png(root / "val" / cls / "test.png")
    os.symlink(root / "val", root / "b" / "sneaky")  # a link into the test split is not a way in either
    cfg = DataConfig(dataset="folder", root=str(root), image_size=8)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.class_names == ["a", "b"] and test.class_names == ["a", "b"]
    assert [p.name for p in train.files] == ["train.png", "train.png"]
    assert [p.name for p in test.files] == ["test.png", "test.png"]
    # data.test_root inside the training tree is excluded the same way
    cfg = DataConfig(dataset="folder", root=str(root), test_root=str(root / "val"), image_size=8)
    assert [p.name for p in build_dataset(cfg, "train").files] == ["train.png", "train.png"]


def test_symlink_to_own_folder_does_not_multiply_files(tmp_path):
    root = tmp_path / "flat"
    (root / "x").mkdir(parents=True)
    for k in range(20):
        png(root / "x" / f"{k:02d}.png")
    os.symlink(root / "x", root / "x" / "again")
    with deadline(10):
        ds = FolderDataset(root, 8)
    assert len(ds) == 20


def test_skip_corrupt_counts_warns_once_and_stops_clearly_when_nothing_is_left(fuzzed, caplog):
    ds = FolderDataset(fuzzed, 8, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="selfsup.data"):
        for _ in range(3):  # three "epochs"
            batch = collate(ds.__getitems__(list(range(len(ds)))))
    assert batch["skipped"] == 4 and batch["image"].shape[0] == 6  # truncated, empty, text, bomb
    assert ds.num_skipped == 12
    assert caplog.text.count("skipping cannot read image") == 4  # once per file, not once per epoch

    bad = fuzzed.parent / "allbad"
    bad.mkdir()
    for k in range(4):
        (bad / f"{k}.png").write_text("not a png")
    from selfsup.config import load_config
    from selfsup.engine.trainer import pretrain

    cfg = load_config("simclr_shapes", [f"out={fuzzed.parent / 'run'}", "data.dataset=folder", f"data.root={bad}",
                                        "data.skip_corrupt=true", "views.mask_p=0", "data.image_size=16",
                                        "views.large.size=16",
                                        "views.small.count=0", "train.batch_size=2", "train.steps=2",
                                        "train.progress=false", "monitor.online_linear=false",
                                        "monitor.knn_every_steps=0"])
    with pytest.raises(DataError,
                       match=r"no readable image in the batch of step 0: 2 unreadable images skipped so far"):
        pretrain(cfg)


@pytest.mark.slow
def test_cli_on_the_fuzzed_folder(fuzzed, tmp_path):
    """End to end: without skip_corrupt one line names a bad file (status 2); with it the run trains on the good
    images and reports the count; nothing hangs on the FIFO or the device links."""
    tiny = ["data.dataset=folder", f"data.root={fuzzed}", "views.mask_p=0", "data.image_size=16",
            "views.large.size=16",
            "views.small.size=8", "train.batch_size=4", "train.steps=3", "monitor.online_linear=false",
            "monitor.knn_every_steps=0", "train.threads=1"]
    r = run_cli("pretrain", "simclr_shapes", "--quiet", f"out={tmp_path / 'a'}", *tiny)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("selfsup: error: cannot read image ")
    r = run_cli("pretrain", "simclr_shapes", "--quiet", f"out={tmp_path / 'b'}", "data.skip_corrupt=true", *tiny)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped" in r.stdout and "unreadable images" in r.stdout


def test_features_of_a_folder_with_nothing_readable_is_a_clear_error(tmp_path):
    from selfsup.eval.features import extract_features

    bad = tmp_path / "allbad"
    bad.mkdir()
    for k in range(3):
        (bad / f"{k}.png").write_text("not a png")
    ds = FolderDataset(bad, 8, skip_corrupt=True)
    with pytest.raises(DataError, match=r"no readable image in .*allbad: all 3 were skipped"):
        extract_features(torch.nn.Flatten(), ds, preprocess=lambda x: x.float(), batch_size=2, collate_fn=collate,
                         device="cpu")
