"""Config: recipes load and validate, overrides apply, and mistakes are one-line errors naming the option."""

import pytest

from selfsup.config import Config, find_recipe, list_recipes, load_config, to_dict
from selfsup.errors import ConfigError
from selfsup.methods.relicv2 import RELICv2Args


def test_every_recipe_loads():
    names = list_recipes()
    assert {"demo", "relicv2_shapes", "relicv2_fmnist", "relicv2_imagenet_r50"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        prefix = name.split("_")[1 if name.startswith("sslight_") else 0]
        # saliency_*: RELICv2 data
        assert cfg.method.name == {"demo": "relicv2", "saliency": "relicv2"}.get(prefix, prefix)
        assert cfg.name == name


def test_recipes_extend_recipes_and_switching_method_replaces_its_block(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nmethod: {name: relicv2, temperature: 0.5, num_negatives: 3}\n"
                      "train: {batch_size: 32}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {parent}\nname: child\nmethod: {{num_negatives: 7}}\n")
    cfg = load_config(str(child))
    assert (cfg.name, cfg.method.temperature, cfg.method.num_negatives, cfg.train.batch_size) == ("child", 0.5, 7, 32)
    # another method over a relicv2 recipe: relicv2's arguments are dropped instead of being rejected as unknown
    other = load_config(str(child), ["method.name=relic"])
    assert other.method.name == "relic" and other.method.temperature == RELICv2Args().temperature
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(str(loop))


def test_sslight_recipes_follow_table_7():
    base = load_config("sslight_dino_cnn_baseline")
    ss = load_config("sslight_dino_cnn")
    assert (base.views.large.scale_min, base.views.small.scale_max, base.views.small.size) == ([0.14], 0.14, 96)
    assert (ss.views.large.scale_min, ss.views.small.scale_max, ss.views.small.size) == ([0.3], 0.3, 128)
    assert (ss.views.large.count, ss.views.small.count, ss.method.alpha, base.method.alpha) == (2, 6, 0.4, None)
    assert ss.optim.name == "lars" and ss.optim.depthwise_no_decay and ss.model.backbone == "mobilenetv2"
    vit = load_config("sslight_dino_vit")
    assert (vit.views.small.count, vit.views.small.size, vit.method.alpha) == (10, 128, 0.4)
    assert (vit.optim.name, vit.optim.weight_decay, vit.optim.weight_decay_end) == ("adamw", 0.04, 0.4)
    for method in ("mocov2", "swav"):
        for arch in ("cnn", "vit"):
            b, s = load_config(f"sslight_{method}_{arch}_baseline"), load_config(f"sslight_{method}_{arch}")
            assert b.method.name == s.method.name == method
            assert (b.method.alpha, s.method.alpha) == (None, 0.4)
            assert s.views.small.size == 128 and s.views.large.scale_min == [0.3]
            assert s.optim.name == ("lars" if arch == "cnn" else "adamw")


def test_paper_recipe_matches_relicv2():
    cfg = load_config("relicv2_imagenet_r50", ["data.root=/x"])
    assert (cfg.views.large.count, cfg.views.large.size, cfg.views.small.count, cfg.views.small.size) == (4, 224, 2, 96)
    assert cfg.train.batch_size == 4096 and cfg.train.epochs == 1000 and cfg.optim.name == "lars"
    assert cfg.method.num_negatives == 10 and cfg.method.temperature == 0.2 and cfg.method.beta == 1.0
    assert cfg.views.large.scale_min == [0.14, 0.08] and cfg.views.small.scale_max == 0.14
    assert cfg.views.mask_p == 0.1 and cfg.views.mask_source == "cache"  # the saliency masks (App. B.2)


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
