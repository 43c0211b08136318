"""Encoded images (files, shard records): bounded reading, decoding to uint8 RGB, fitting to the stored size, and the
dataset base class that decodes lazily with skip-and-count (:class:`EncodedImageDataset`; folders and shards build on
it)."""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from selfsup.data.base import ImageDataset, pad_stack
from selfsup.errors import DataError

log = logging.getLogger("selfsup.data")

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS; data.max_pixels
_JPEG_MAGIC = b"\xff\xd8\xff"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0].strip() if text else ""
    msg = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "data", msg)
    return msg or type(exc).__name__


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file. Opened non-blocking and checked with ``fstat`` before reading, so
    a FIFO (which would block forever) or a device (which would read without end) is an error, not a hang."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or _one_line(exc)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"cannot read image {path}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or _one_line(exc)}") from None
    finally:
        os.close(fd)


def _check_pixels(path: Path | str, data: bytes, max_pixels: Optional[int]) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before anything is decoded (a
    decompression bomb: a few KB of PNG that decode to gigabytes). Headers Pillow cannot parse are left to the
    decoder, which reports them."""
    if max_pixels is None:
        return
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        pixels, size = w * h, f"{w} x {h} = {w * h:,} pixels"
    except Image.DecompressionBombError as exc:  # above twice Pillow's own limit: its message has the pixel count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else max_pixels + 1
        size = f"{pixels:,} pixels" if found else "more pixels than Pillow accepts"
    except Exception:  # noqa: BLE001 - not for us to judge here: the decoder names the problem
        return
    if pixels > max_pixels:
        raise DataError(f"cannot read image {path}: {size}, above data.max_pixels={max_pixels:,} "
                        f"(raise it to read larger images)")


def _to_uint8(img: Tensor) -> Tensor:
    """8-bit RGB from a decoded image of another depth: 16-bit (PNG, TIFF) scaled by 255/65535, not truncated."""
    if img.dtype == torch.uint8:
        return img
    if img.dtype == torch.uint16 or img.dtype == torch.int32:
        return (img.to(torch.float32) * (255.0 / 65535.0)).round_().clamp_(0, 255).to(torch.uint8)
    if img.is_floating_point():
        scale = 255.0 if float(img.max()) <= 1.0 else 1.0
        return (img.to(torch.float32) * scale).round_().clamp_(0, 255).to(torch.uint8)
    raise DataError(f"unsupported pixel type {img.dtype}")


def decode_image_file(path: os.PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Tensor:
    """uint8 ``(3, H, W)`` RGB of an image file; any failure -> one-line ``DataError`` naming the file.

    Only regular files are read (:func:`_read_regular_file`); then :func:`decode_image_bytes`.
    """
    path = Path(path)
    return decode_image_bytes(_read_regular_file(path), str(path), max_pixels)


def decode_image_bytes(data: bytes, source: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                       min_side: Optional[int] = None) -> Tensor:
    """uint8 ``(3, H, W)`` RGB of an encoded image (a file's bytes, a shard record); any failure -> one-line
    ``DataError("cannot read image <source>: <reason>")``.

    An image declaring more than ``max_pixels`` pixels is refused before decoding (None: no limit); torchvision's
    ``decode_image`` reads JPEG, PNG, GIF (first frame) and WebP, Pillow the rest (BMP, TIFF); 16-bit images are
    scaled to 8 bits (:func:`_to_uint8`).

    ``min_side``: the short side the caller will resize to. A JPEG whose short side is at least twice that is decoded
    at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (Pillow's ``draft``), keeping the short side >= ``min_side``:
    a 12-megapixel photo decodes in a fraction of the time and memory, and the antialiased resize that follows starts
    closer to its target. ImageNet's typical ~500 x 375 images at 256 are not reduced.
    """
    from torchvision.io import ImageReadMode, decode_image

    if not data:
        raise DataError(f"cannot read image {source}: empty file")
    _check_pixels(source, data, max_pixels)
    if min_side is not None and data[:3] == _JPEG_MAGIC:
        reduced = _decode_jpeg_reduced(data, int(min_side))
        if reduced is not None:
            return reduced
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if img.ndim == 4:  # animated GIF: first frame
            img = img[0]
    except Exception as tv_exc:  # noqa: BLE001 - torchvision raises RuntimeError/ValueError; try Pillow (BMP, TIFF)
        try:
            img = _decode_pil(data)
        except Exception as pil_exc:  # noqa: BLE001
            reason = pil_exc if "nsupported image file" in str(tv_exc) else tv_exc
            raise DataError(f"cannot read image {source}: {_one_line(reason)}") from None
    if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
        raise DataError(f"cannot read image {source}: decoded to an unexpected shape {tuple(img.shape)}")
    try:
        return _to_uint8(img)
    except DataError as exc:
        raise DataError(f"cannot read image {source}: {exc}") from None


def _decode_jpeg_reduced(data: bytes, min_side: int) -> Optional[Tensor]:
    """A JPEG decoded by Pillow at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= ``min_side``; None
    when no reduction applies or Pillow cannot read it (the full decoder then decides and reports)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or min(im.size) < 2 * min_side:
                return None
            im.draft("RGB", (min_side, min_side))
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception:  # noqa: BLE001 - a broken file: the full decoder names the problem
        return None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _decode_pil(data: bytes) -> Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit gray: convert("RGB") would clip at 255;
            gray = torch.from_numpy(np.asarray(im).astype(np.int32))  # decode_image_file scales it (_to_uint8)
            return gray.expand(3, *gray.shape).contiguous()
        rgb = im.convert("RGB")
        arr = np.asarray(rgb, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_image(path: os.PathLike, size: int, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               max_aspect: float = 1.0) -> Tensor:
    """Decode ``path`` (:func:`decode_image_file`), then :func:`fit_image`."""
    return fit_image(decode_image_file(path, max_pixels), size, max_aspect)


def fit_image(img: Tensor, size: int, max_aspect: float = 1.0) -> Tensor:
    """Resize the short side of a uint8 image to ``size`` (antialiased, aspect kept), then cut the long side, centred,
    to at most ``round(max_aspect * size)`` pixels. ``max_aspect = 1`` gives the centre square."""
    from torchvision.transforms.v2 import functional as TF

    h, w = img.shape[-2:]
    if min(h, w) != size:
        img = TF.resize(img, [size], antialias=True)
    h, w = img.shape[-2:]
    long_max = max(size, int(round(max_aspect * size)))
    if h > long_max or w > long_max:
        img = TF.center_crop(img, [min(h, long_max), min(w, long_max)])
    return img.contiguous()


class EncodedImageDataset(ImageDataset):
    """Images stored encoded (files, shard records) and decoded lazily: what :class:`FolderDataset` and
    :class:`selfsup.data.shards.ShardDataset` share. Subclasses set ``labels``/``_label_list`` and implement
    :meth:`_read` (the encoded bytes and a name for messages, or a one-line ``DataError``); decoding is
    :func:`decode_image_bytes`.

    An item's image is fitted by :func:`fit_image`: short side ``image_size``, then the centre square, or with
    ``whole`` the whole image (the long side cut to at most ``max_aspect`` short sides). With ``skip_corrupt`` an
    unreadable item is ``None`` (named in a warning once, counted in ``num_skipped``) instead of an error.

    ``device_decode`` (``data.decode=device``): a JPEG item is returned still encoded (``encoded``: its bytes as a
    uint8 tensor, after the pixel-limit check on its header), for :func:`decode_on_device` to decode the whole batch
    at once on the training device (nvJPEG on CUDA); other formats are decoded here as usual.
    """

    device_decode: bool = False
    _label_list: List[int]  # python ints, set by subclasses with ``labels``

    def _setup(self, image_size: int, skip_corrupt: bool, max_pixels: Optional[int], whole: bool,
               max_aspect: float) -> None:
        self.image_size = int(image_size)
        self.skip_corrupt = skip_corrupt
        self.max_pixels = max_pixels
        self.whole = whole
        self.max_aspect = float(max_aspect)
        self.num_skipped = 0
        self._warned: set = set()

    def _read(self, i: int) -> Tuple[bytes, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def fit_aspect(self) -> float:
        """The ``max_aspect`` images are fitted with (1: the centre square)."""
        return self.max_aspect if self.whole else 1.0

    def skip(self, i: int, exc: DataError) -> None:
        """Count and name (once) an unreadable item under ``skip_corrupt``; re-raise otherwise."""
        if not self.skip_corrupt:
            raise exc
        self.num_skipped += 1
        if i not in self._warned:  # once per item, not once per epoch
            self._warned.add(i)
            log.warning("skipping %s", exc)

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:
        i = self._check_index(index)
        try:
            data, source = self._read(i)
            if self.device_decode and data[:3] == _JPEG_MAGIC:  # left encoded for decode_on_device
                _check_pixels(source, data, self.max_pixels)
                return {"encoded": torch.frombuffer(bytearray(data), dtype=torch.uint8), "source": source,
                        "label": self._label_list[i], "index": i}
            image = fit_image(decode_image_bytes(data, source, self.max_pixels, min_side=self.image_size),
                              self.image_size, self.fit_aspect)
        except DataError as exc:
            self.skip(i, exc)
            return None
        return {"image": image, "label": self._label_list[i], "index": i}

    def centre_square(self) -> "EncodedImageDataset":
        """The same images, decoded here and fitted as centre squares (what evaluation and ``selfsup saliency
        predict`` see)."""
        if not self.whole and not self.device_decode:
            return self
        square = copy.copy(self)
        square.whole = False
        square.device_decode = False
        return square


def decode_on_device(batch: Dict[str, Any], dataset: EncodedImageDataset, device: torch.device) -> Dict[str, Any]:
    """Finish a batch whose JPEG items are still encoded (``data.decode=device``): decode them together on ``device``
    (``torchvision.io.decode_jpeg`` on a list: one batched nvJPEG call on CUDA), fit each to the dataset's size there,
    and pad the batch into one canvas (:func:`selfsup.data.base.pad_stack`) with its ``size``. Items already decoded
    (other formats) join as they are. A JPEG the batched decoder refuses is decoded alone on the CPU, so a corrupt
    file gets the usual one-line error, or is skipped and counted (``skipped``) with ``data.skip_corrupt``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    items = batch.pop("items")
    encoded = [k for k, it in enumerate(items) if "encoded" in it]
    images: List[Optional[Tensor]] = [it.get("image") for it in items]
    if encoded:
        blobs = [items[k]["encoded"] for k in encoded]
        try:
            decoded = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [None] * len(blobs)  # one bad file fails the batched call: decode one by one below
        for k, img in zip(encoded, decoded):
            it = items[k]
            if img is None:
                try:
                    img = decode_image_bytes(it["encoded"].numpy().tobytes(), it["source"], None).to(device)
                except DataError as exc:
                    dataset.skip(int(it["index"]), exc)
                    batch["skipped"] += 1
                    continue
            images[k] = fit_image(img, dataset.image_size, dataset.fit_aspect)
    keep = [k for k, im in enumerate(images) if im is not None]
    if not keep:
        batch.update(image=torch.empty(0, 3, 0, 0, dtype=torch.uint8, device=device),
                     size=torch.empty(0, 2, dtype=torch.int64), label=batch["label"][:0], index=batch["index"][:0])
        return batch
    kept = [im.to(device) for im in images if im is not None]  # the images of ``keep``, in order
    sel = torch.tensor(keep, dtype=torch.int64)
    batch.update(image=pad_stack(kept), size=torch.tensor([tuple(im.shape[-2:]) for im in kept], dtype=torch.int64),
                 label=batch["label"].index_select(0, sel), index=batch["index"].index_select(0, sel))
    return batch
