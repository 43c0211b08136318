"""data.decode=device: JPEGs stay encoded through the loader and are decoded as one batch on the training device
(here the CPU, which runs the same code path as CUDA's nvJPEG); the batch equals the CPU-decoded one, other formats
and corrupt files included."""

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import DataConfig
from selfsup.data.base import collate
from selfsup.data.datasets import build_dataset, decode_on
from selfsup.data.images import decode_on_device
from selfsup.errors import DataError
from tests.conftest import TINY, run_cli


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for k, (w, h) in enumerate([(40, 30), (30, 44), (90, 24), (28, 28), (50, 33)]):
        arr = (np.random.default_rng(k).random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{k}.{'png' if k == 3 else 'jpg'}", quality=90)
    (root / "9_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


def _cfg(root, decode, skip=True):
    # image_size 20: every photo's short side is below 2 x 20, so the CPU decodes at full scale, as the device does
    return DataConfig(dataset="folder", root=str(root), image_size=20, decode=decode, skip_corrupt=skip)


def _views_ds(cfg):
    return build_dataset(cfg, "train", for_views=True, device_decode=decode_on(cfg, torch.device("cpu")))


def test_device_decoded_batch_equals_the_cpu_batch(photos):
    dev = _views_ds(_cfg(photos, "device"))
    cpu = _views_ds(_cfg(photos, "auto"))  # auto: the CPU decodes when training on the CPU
    assert not cpu.device_decode and dev.device_decode
    items = [dev[i] for i in range(len(dev))]
    assert sum("encoded" in it for it in items) == 5 and sum("image" in it for it in items) == 1  # the PNG
    batch = decode_on_device(collate(items), dev, torch.device("cpu"))
    ref = collate([cpu[i] for i in range(len(cpu))])
    assert ref["skipped"] == 1 and batch["skipped"] == 1 and dev.num_skipped == 1  # the broken JPEG
    assert torch.equal(batch["image"], ref["image"]) and torch.equal(batch["size"], ref["size"])
    assert torch.equal(batch["index"], ref["index"]) and torch.equal(batch["label"], ref["label"])
    # evaluation and mask caches see decoded centre squares, whatever data.decode says
    assert ("image" in dev.centre_square()[0]
            and build_dataset(_cfg(photos, "device"), "train")[0]["image"].shape[-1] == 20)


def test_auto_decodes_on_cuda_only():
    assert decode_on(DataConfig(decode="auto"), torch.device("cuda")) and not decode_on(DataConfig(), "cpu")
    assert not decode_on(DataConfig(decode="cpu"), torch.device("cuda"))


def test_a_corrupt_jpeg_without_skip_is_a_one_line_error(photos):
    dev = _views_ds(_cfg(photos, "device", skip=False))
    batch = collate([dev[i] for i in range(len(dev))])
    with pytest.raises(DataError) as err:
        decode_on_device(batch, dev, torch.device("cpu"))
    assert "9_broken.jpg" in str(err.value) and "\n" not in str(err.value)


def test_pretrain_with_device_decoding(photos, tmp_path):
    proc = run_cli("pretrain", *TINY, "data.dataset=folder", f"data.root={photos}", "data.image_size=16",
                   "data.decode=device", "data.skip_corrupt=true", "views.mask_p=0", f"out={tmp_path / 'run'}",
                   "train.steps=2", "train.batch_size=4", "monitor.knn_every_steps=0")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "backbone.safetensors").is_file()


def test_large_jpegs_decode_at_a_reduced_dct_scale_close_to_the_full_decode():
    """A JPEG at least twice the target side is decoded at 1/2, 1/4 or 1/8 scale (short side still >= the target);
    after the resize to the target it is within a few grey levels of the full decode."""
    import io

    from selfsup.data.images import decode_image_bytes, fit_image

    y, x = np.mgrid[0:300, 0:400]
    rng = np.random.default_rng(0)
    arr = np.stack([128 + 100 * np.sin(x / 37.0), 128 + 100 * np.cos(y / 23.0), (x + y) % 256], axis=-1)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    full = decode_image_bytes(buf.getvalue(), "photo")
    reduced = decode_image_bytes(buf.getvalue(), "photo", min_side=64)
    assert tuple(full.shape[-2:]) == (300, 400) and tuple(reduced.shape[-2:]) == (75, 100)  # 1/4: 1/8 would be < 64
    assert tuple(decode_image_bytes(buf.getvalue(), "photo", min_side=200).shape[-2:]) == (300, 400)  # 1.5x: none
    a, b = fit_image(full, 64, 3.0).float(), fit_image(reduced, 64, 3.0).float()
    assert a.shape == b.shape == (3, 64, 85)
    assert (a - b).abs().mean() < 3.0
