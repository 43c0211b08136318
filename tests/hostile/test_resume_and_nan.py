"""Resume with a changed config, "nothing to resume", bad checkpoints, and a NaN stop whose checkpoint is truly good."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from selfsup.engine.trainer import pretrain
from selfsup.errors import CheckpointError, NonFiniteLossError
from tests.conftest import TINY


def _cfg(tmp_path, *extra):
    return load_config(None, [*TINY, f"out={tmp_path / 'run'}", "monitor.online_linear=false", *extra])


@pytest.fixture
def finished(tmp_path, one_thread):
    pretrain(_cfg(tmp_path), stop_at_step=2)
    return tmp_path


@pytest.mark.parametrize("change", ["model.width=2.0", "method.projector_dim=8", "optim.name=sgd",
                                    "method.temperature=0.5", "train.batch_size=8", "seed=3", "train.steps=9"])
def test_resume_with_a_changed_config_is_refused_in_one_line(finished, change):
    key = change.partition("=")[0]
    with pytest.raises(CheckpointError) as err:
        pretrain(_cfg(finished, change), resume="auto")
    msg = str(err.value)
    assert "\n" not in msg and key in msg and "--allow-changes" in msg


def test_allow_changes_continues_or_says_why_not(finished):
    res = pretrain(_cfg(finished, "method.temperature=0.5"), resume="auto", allow_changes=True)
    assert res.step == 6
    with pytest.raises(CheckpointError, match=r"cannot resume from .*\(changed: .*model.width.*\)"):
        pretrain(_cfg(finished, "model.width=2.0"), resume="auto", allow_changes=True)


def test_checkpoint_from_before_an_option_existed_resumes(finished):
    """A key the checkpoint's config lacks (an option added later) counts as its default; a non-default value of it
    is still a change."""
    path = finished / "run" / "last.ckpt"
    state = load_checkpoint(path)
    del state["config"]["model"]["representation_dim"]
    del state["config"]["optim"]["schedule"]
    save_checkpoint(path, state)
    assert pretrain(_cfg(finished), resume="auto").step == 6
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="model.representation_dim"):
        pretrain(_cfg(finished, "model.representation_dim=8"), resume="auto")


def test_free_keys_may_change(finished):
    res = pretrain(_cfg(finished, "train.log_every_steps=1", "train.ckpt_every_steps=3", "eval.batch_size=8"),
                   resume="auto")
    assert res.step == 6 and len(res.losses) == 4


def test_nothing_to_resume_is_said(tmp_path, caplog, one_thread):
    with caplog.at_level(logging.WARNING, logger="selfsup"):
        res = pretrain(_cfg(tmp_path, "train.steps=1"), resume="auto")
    assert res.step == 1 and "nothing to resume" in caplog.text


def _damaged(path, **changes):
    state = load_checkpoint(path)
    state.update(changes)
    state.pop("format")
    bad = path.parent / "bad.ckpt"
    save_checkpoint(bad, state)
    return bad


@pytest.mark.parametrize("changes, words", [
    ({"step": -4}, "'step' must be a non-negative integer"),
    ({"step": "x"}, "'step' must be a non-negative integer"),
    ({"method": {"a": 1}}, "'method' must map parameter names to tensors"),
    ({"optimizer": [1, 2]}, "'optimizer' must be a dict"),
    ({"config": "yaml?"}, "'config' must be a dict"),
    ({"trained_s": float("nan")}, "'trained_s' must be a non-negative number"),
])
def test_well_formed_checkpoints_with_the_wrong_structure(finished, changes, words):
    bad = _damaged(finished / "run" / "last.ckpt", **changes)
    with pytest.raises(CheckpointError, match=words):
        pretrain(_cfg(finished), resume=str(bad))


def test_wrong_tensors_and_foreign_files_are_one_line(finished):
    path = finished / "run" / "last.ckpt"
    state = load_checkpoint(path)
    state["method"] = {k: v[..., :1] if v.ndim else v for k, v in state["method"].items()}  # shapes that do not fit
    state.pop("format")
    save_checkpoint(finished / "shapes.ckpt", state)
    with pytest.raises(CheckpointError, match="cannot resume from"):
        pretrain(_cfg(finished), resume=str(finished / "shapes.ckpt"))
    buf = io.BytesIO()
    torch.save({"format": FORMAT}, buf)
    (finished / "empty.ckpt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="damaged selfsup checkpoint"):
        load_checkpoint(finished / "empty.ckpt")


def test_eval_with_a_width_that_does_not_fit_the_checkpoint(finished):
    from selfsup.eval.run import config_for, load_backbone

    cfg = config_for(str(finished / "run"), None, ["model.width=2.0"])
    with pytest.raises(CheckpointError, match="does not fit model.backbone=convnet_tiny width=2.0"):
        load_backbone(cfg, str(finished / "run"))


def test_nan_stop_names_a_checkpoint_that_resumes_at_a_sane_lr(tmp_path, one_thread):
    """A diverging learning rate with a checkpoint every step: the checkpoint the stop names holds finite weights whose
    loss was finite, and resuming from it at a sane learning rate trains on without a NaN."""
    diverge = ["optim.name=sgd", "optim.base_lr=1e12", "optim.warmup_steps=0", "train.ckpt_every_steps=1",
               "train.steps=6"]
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(_cfg(tmp_path, *diverge))
    msg = str(err.value)
    assert "\n" not in msg and "Last good checkpoint" in msg
    ckpt = tmp_path / "run" / "last.ckpt"
    state = load_checkpoint(ckpt)
    assert all(bool(torch.isfinite(v).all()) for v in state["method"].values() if v.is_floating_point())
    assert f"(step {state['step']})" in msg
    assert list((tmp_path / "run").glob("nonfinite_step*.ckpt")) or state["step"] == 0
    sane = [o for o in diverge if "base_lr" not in o] + ["optim.base_lr=0.1"]
    res = pretrain(_cfg(tmp_path, *sane), resume="auto", allow_changes=True)
    assert res.step == 6 and all(loss == loss for loss in res.losses)
