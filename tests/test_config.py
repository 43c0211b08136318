"""Config: recipes load and validate, overrides apply, and mistakes are one-line errors naming the option."""

import pytest

from selfsup.config import Config, find_recipe, list_recipes, load_config, to_dict
from selfsup.errors import ConfigError
from selfsup.methods.relicv2 import RELICv2Args


def test_every_recipe_loads():
    names = list_recipes()
    assert {"demo", "relicv2_shapes", "relicv2_fmnist", "relicv2_imagenet_r50"} <= set(names)
    for name in names:
        overrides = ["data.root=/nonexistent"] if name in ("relicv2_imagenet_r50", "relicv2_cifar10_r18") else []
        cfg = load_config(name, overrides)
        assert isinstance(cfg, Config)
        assert isinstance(cfg.method, RELICv2Args)


def test_paper_recipe_matches_relicv2():
    cfg = load_config("relicv2_imagenet_r50", ["data.root=/x"])
    assert (cfg.views.large.count, cfg.views.large.size, cfg.views.small.count, cfg.views.small.size) == (4, 224, 2, 96)
    assert cfg.train.batch_size == 4096 and cfg.train.epochs == 1000 and cfg.optim.name == "lars"
    assert cfg.method.num_negatives == 10 and cfg.method.temperature == 0.2 and cfg.method.beta == 1.0
    assert cfg.views.large.scale_min == [0.14, 0.08] and cfg.views.small.scale_max == 0.14
    assert cfg.views.mask_p == 0.1


def test_overrides_apply_and_interpolate(tmp_path):
    cfg = load_config("relicv2_shapes", ["method.temperature=0.5", "views.large.count=2", "name=abc"])
    assert cfg.method.temperature == 0.5 and cfg.views.large.count == 2
    assert cfg.out == "runs/abc"
    assert to_dict(cfg)["out"] == "runs/abc"


@pytest.mark.parametrize("overrides, fragment", [
    (["method.temprature=0.5"], "unknown option 'method.temprature' (did you mean 'method.temperature'?)"),
    (["optim.base_lr=abc"], "optim.base_lr"),
    (["optim.name=adam"], "optim.name must be one of lars, sgd, adamw"),
    (["views.large.scale_min=[0.0]"], "views.large.scale_min"),
    (["train.batch_size=0"], "train.batch_size must be > 0"),
    (["method.name=simclr2"], "unknown method.name 'simclr2'"),
    (["noequals"], "must look like key=value"),
    (["train.devices=3", "train.batch_size=256"], "not divisible"),
])
def test_bad_values_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("relicv2_shapes", overrides)
    msg = str(err.value)
    assert fragment in msg
    assert "\n" not in msg


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'relicv2_shape'.*did you mean 'relicv2_shapes'"):
        find_recipe("relicv2_shape")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse recipe .*bad.yaml"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(str(tmp_path / "missing.yaml"))
