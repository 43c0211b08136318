"""Features as packages: saliency and the experiments each live in one package, every name at one address."""

import importlib
import json

import numpy as np
import pytest
import torch

#: where these names lived before the saliency and experiments packages; nothing is left there, not even a shim
GONE = ["selfsup.data.saliency", "selfsup.engine.saliency", "selfsup.models.saliency", "selfsup.metrics.saliency",
        "selfsup.eval.saliency", "selfsup.eval.study", "selfsup.eval.demo", "selfsup.eval.pretraining"]

#: the one address of each moved name
ADDRESSES = {
    "selfsup.saliency.handcrafted": ["superpixel_graph", "rbd", "mr", "mc", "dsr", "handcrafted", "saliency_maps"],
    "selfsup.saliency.network": ["SaliencyNet", "build_saliency_net", "save_saliency_net", "load_saliency_net"],
    "selfsup.saliency.train": ["guided_filter", "epoch_batches", "train_saliency_net"],
    "selfsup.saliency.images": ["dataset_images", "dataset_images_masks", "fit_subset"],
    "selfsup.saliency.fit": ["fit_saliency", "load_stage_maps"],
    "selfsup.saliency.predict": ["predict_saliency", "predict_cache"],
    "selfsup.saliency.cache": ["check_writable", "create_cache", "write_cache"],
    "selfsup.saliency.scores": ["f_measure", "max_f_measure", "mae", "iou", "saliency_scores"],
    "selfsup.saliency.sources": ["Sources", "method_list", "network_maps", "cache_maps", "show_maps", "score_sources"],
    "selfsup.data.masks": ["MaskProvider", "MaskCache", "dataset_fingerprint", "resize_masks", "place_masks"],
    "selfsup.experiments.study": ["run_study", "study_cells", "pretext_accuracy"],
    "selfsup.experiments.demo": ["run_demo", "budget_overrides"],
    "selfsup.experiments.pretraining": ["pretrain_with_curves", "draw_curves"],
}


@pytest.mark.parametrize("module", GONE)
def test_the_old_addresses_are_gone(module):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)


@pytest.mark.parametrize("module", sorted(ADDRESSES))
def test_each_name_is_defined_at_its_address(module):
    mod = importlib.import_module(module)
    for name in ADDRESSES[module]:
        obj = getattr(mod, name)
        assert obj.__module__ == module, f"{module}.{name} is defined in {obj.__module__}"


def test_the_mask_cache_reader_does_not_write():
    """Pretraining's hook reads caches; writing one is the saliency package's (``selfsup saliency predict``)."""
    from selfsup.data.masks import MaskCache

    for writer in ("write", "create", "check_writable"):
        assert not hasattr(MaskCache, writer)


def test_a_cache_keeps_its_format(tmp_path):
    """A cache written now has the files and fingerprint fields caches had before, so older caches still read."""
    from selfsup.data.base import InMemoryDataset
    from selfsup.data.masks import FORMAT, MaskCache, dataset_fingerprint
    from selfsup.saliency.cache import write_cache

    ds = InMemoryDataset(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.arange(5) % 2, num_classes=2,
                         mean=[0.5] * 3, std=[0.25] * 3)
    fp = dataset_fingerprint(ds, "folder", "train")
    cache = write_cache(tmp_path, "train", np.full((5, 4, 4), 255, np.uint8), fp)
    record = json.loads((tmp_path / "train.json").read_text())
    assert FORMAT == "selfsup-mask-cache-1"
    assert record == dict(fp, format=FORMAT, mask_size=4, array=cache.path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["train.json", cache.path.name])
    assert int(MaskCache.open(tmp_path, "train", fp).masks.min()) == 255
