"""The dataset registry: a dataset registered in a test module is built through ``build_dataset`` from a loaded config,
its own check runs at load time and at build time, and an unknown name is one line with a did-you-mean."""

import pytest
import torch

from selfsup.config import DataConfig, load_config
from selfsup.data import registry
from selfsup.data.base import InMemoryDataset
from selfsup.data.datasets import build_dataset
from selfsup.data.registry import list_datasets, register_dataset
from selfsup.errors import ConfigError

BUILT_IN = ["cifar10", "cifar100", "fashion_mnist", "folder", "shapes", "shards"]


@pytest.fixture
def toy(monkeypatch):
    """Register ``toy_squares`` for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))

    def validate(cfg: DataConfig) -> None:
        if cfg.image_size > 64:
            raise ConfigError(f"data.image_size must be <= 64 for data.dataset=toy_squares, got {cfg.image_size}")

    @register_dataset("toy_squares", validate=validate)
    def build(cfg: DataConfig, split: str, **kw) -> InMemoryDataset:
        n = 6 if split == "train" else 4
        images = torch.zeros(n, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
        for i in range(n):  # image i: a bright square of side i + 1 in the top-left corner
            images[i, :, :i + 1, :i + 1] = 255
        return InMemoryDataset(images, torch.arange(n) % 2, num_classes=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                               class_names=["even", "odd"])

    return build


def test_built_ins_are_registered():
    assert set(BUILT_IN) <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_a_dataset_registered_here_is_built_from_a_config(toy):
    cfg = load_config(None, ["data.dataset=toy_squares", "data.image_size=8", "data.std=[0.5,0.5,0.5]"])
    train, test = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    assert (len(train), len(test)) == (6, 4) and train.num_classes == 2
    assert train.images.shape == (6, 3, 8, 8) and int(train.images[2, 0, :3, :3].min()) == 255
    assert train.mean == (0.5,) * 3 and train.std == (0.5,) * 3  # data.std replaces the dataset's own
    assert "toy_squares" in list_datasets()


def test_a_registered_check_runs_at_load_and_at_build(toy):
    with pytest.raises(ConfigError, match="must be <= 64 for data.dataset=toy_squares"):
        load_config(None, ["data.dataset=toy_squares", "data.image_size=96"])
    with pytest.raises(ConfigError, match="must be <= 64"):
        build_dataset(DataConfig(dataset="toy_squares", image_size=96), "train")
    # the shapes' own settings are the shapes' only: another dataset does not read them
    cfg = load_config(None, ["data.dataset=toy_squares", "data.image_size=8", "data.train_size=0"])
    assert len(build_dataset(cfg.data, "train")) == 6
    with pytest.raises(ConfigError, match="data.train_size must be > 0, got 0"):
        load_config(None, ["data.dataset=shapes", "data.train_size=0"])


def test_unknown_dataset_is_one_line_with_a_did_you_mean():
    for call in (lambda: load_config(None, ["data.dataset=cifar01"]),
                 lambda: build_dataset(DataConfig(dataset="cifar01"), "train")):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "data.dataset must be one of" in msg and "did you mean 'cifar10'" in msg
        assert all(name in msg for name in BUILT_IN)


def test_a_name_is_registered_once(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_squares")(toy)
