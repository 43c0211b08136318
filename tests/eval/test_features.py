"""Feature extraction (order, shapes, eval mode and its restoration) and the safetensors feature cache."""

import pytest
import torch
from torch import nn

from selfsup.eval.features import FeatureCache, default_collate, eval_mode, extract_features

pytestmark = pytest.mark.usefixtures("one_thread")


class IndexedImages(torch.utils.data.Dataset):
    """Image i is filled with the value i (mod 256); its label is i mod 3."""

    def __init__(self, n, size=4, batched=False):
        self.n, self.size = n, size
        if batched:  # the data layer's datasets fetch whole batches; the DataLoader calls this when present
            self.__getitems__ = lambda idx: [self[i] for i in idx]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.full((3, self.size, self.size), i % 256, dtype=torch.uint8), "label": i % 3,
                "index": i}


class MeanNet(nn.Module):
    """Per-channel mean, scaled by BN: its output depends on the train/eval mode."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Identity())
        self.num_features = 3

    def forward(self, x):
        assert x.is_contiguous(memory_format=torch.channels_last)
        return self.head(self.bn(x).mean((2, 3)))


def _pre(images):
    return images.float() / 255.0


@pytest.mark.parametrize("batched", [False, True])
def test_order_shapes_and_values(batched):
    net = MeanNet()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.25)
        net.bn.running_var.fill_(4.0)
    x, y = extract_features(net, IndexedImages(23, batched=batched), preprocess=_pre, batch_size=5, progress=False)
    assert x.shape == (23, 3) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [i % 3 for i in range(23)]
    expected = (torch.arange(23).float() / 255.0 - 0.25) / (4.0 + net.bn.eps) ** 0.5  # eval mode: running stats
    torch.testing.assert_close(x, expected[:, None].expand(23, 3))


def test_restores_modes_and_keeps_buffers():
    net = MeanNet().train()
    net.head.eval()  # mixed modes come back as they were
    before = {k: v.clone() for k, v in net.state_dict().items()}
    extract_features(net, IndexedImages(10), preprocess=_pre, batch_size=4, progress=True, desc="test")
    assert net.training and net.bn.training and not net.head.training and not net.head[0].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running statistics untouched
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net.head.training


def test_backbone_mode_restored_after_an_error():
    net = MeanNet().train()

    def broken(images):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(net, IndexedImages(4), preprocess=broken, progress=False)
    assert net.training


def test_custom_collate_and_flattening():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))  # (B, 2, 4, 4) output, flattened to 32 features
    seen = []

    def collate(items):
        seen.append(len(items))
        return default_collate([None if it["index"] == 3 else it for it in items])  # drop item 3 like a corrupt image

    x, y = extract_features(net, IndexedImages(7), preprocess=_pre, batch_size=4, collate_fn=collate, progress=False)
    assert seen == [4, 3]
    assert x.shape == (6, 32) and y.tolist() == [0, 1, 2, 1, 2, 0]


def test_feature_cache_round_trip(tmp_path):
    path = tmp_path / "feats" / "train.safetensors"
    cache = FeatureCache(path)
    assert cache.load() is None
    x, y = torch.randn(11, 5), torch.arange(11)
    key = FeatureCache.make_key("ckpt.safetensors", 123.0, size=32)
    assert key == FeatureCache.make_key("ckpt.safetensors", 123.0, size=32) != FeatureCache.make_key("other", size=32)
    cache.save(x, y, key=key, metadata={"split": "train"})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    lx, ly = FeatureCache(path).load(key)
    assert torch.equal(lx, x) and torch.equal(ly, y) and ly.dtype == torch.int64
    meta = cache.metadata()
    assert meta["key"] == key and meta["split"] == "train" and meta["num"] == "11" and meta["dim"] == "5"
    assert cache.load("another key") is None

    calls = []

    def compute():
        calls.append(1)
        return x * 2, y

    fx, _ = cache.get_or_compute("new key", compute)  # stale key: recomputed and rewritten
    fx2, _ = cache.get_or_compute("new key", compute)  # now a hit
    assert len(calls) == 1 and torch.equal(fx, x * 2) and torch.equal(fx2, x * 2)

    path.write_bytes(b"not a safetensors file")
    assert cache.load() is None  # a corrupt cache is ignored, not fatal
