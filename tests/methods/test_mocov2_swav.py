"""MoCo-v2 and SwAV as methods: gradients, the key encoder, queues (FIFO, checkpointed), prototype freezing, the CLI."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.cli.main import main
from selfsup.config import load_config
from selfsup.data.views import Views
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain
from selfsup.errors import ConfigError
from selfsup.losses import moco_pair_loss
from selfsup.methods import swav as swav_module
from selfsup.methods.base import StepContext, build_method
from selfsup.methods.mocov2 import MoCoV2
from selfsup.methods.swav import SwAV
from tests.conftest import TINY

BASE = [o for o in TINY if not o.startswith("method.")]
MOCO = ["method.name=mocov2", "method.projector_hidden=32", "method.projector_dim=16", "method.queue_size=40"]
SWAV = ["method.name=swav", "method.projector_hidden=32", "method.projector_dim=16", "method.num_prototypes=12",
        "method.queue_length=32", "method.queue_start_epoch=0"]


def _cfg(tmp_path, method, *extra):
    return load_config(None, [*BASE, *method, f"out={tmp_path / 'run'}", *extra])


def _views(cfg, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = cfg.views
    return Views(large=[torch.randn(batch, 3, v.large.size, v.large.size, generator=g) for _ in range(v.large.count)],
                 small=[torch.randn(batch, 3, v.small.size, v.small.size, generator=g) for _ in range(v.small.count)])


def _ctx(step=0, epoch=0):
    return StepContext(step=step, total_steps=100, epoch=epoch, generator=torch.Generator().manual_seed(step))


def _log_losses(run_dir):
    with open(run_dir / "train_log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------------------- MoCo-v2


def test_mocov2_needs_two_large_views(tmp_path):
    with pytest.raises(ConfigError, match="views.large.count"):
        build_method(_cfg(tmp_path, MOCO, "views.large.count=3"))
    build_method(_cfg(tmp_path, MOCO, "views.small.count=0"))  # plain MoCo-v2


def test_mocov2_gradients_reach_the_query_encoder_only(tmp_path):
    method = build_method(_cfg(tmp_path, MOCO))
    assert isinstance(method, MoCoV2)
    method(_views(method.cfg), _ctx()).loss.backward()
    for name in ("backbone", "projector"):
        grads = [p.grad for p in getattr(method, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    for name in ("key_backbone", "key_projector"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(method, name).parameters()), name
    assert not method.queue.requires_grad and "queue" not in dict(method.named_parameters())
    assert method.ema.base == 0.999 and method.ema.schedule == "constant"
    assert [(o, t) for o, t in method.ema_pairs()] == [(method.backbone, method.key_backbone),
                                                      (method.projector, method.key_projector)]


def test_mocov2_key_sees_large_view_0_and_queries_the_rest(tmp_path, monkeypatch):
    method = build_method(_cfg(tmp_path, MOCO))
    views = _views(method.cfg)
    keys, queries = [], []
    key_forward, query_forward = method.key_backbone.forward, method.backbone.forward
    monkeypatch.setattr(method.key_backbone, "forward", lambda x: keys.append(x) or key_forward(x))
    monkeypatch.setattr(method.backbone, "forward", lambda x: queries.append(x) or query_forward(x))
    method(views, _ctx())
    assert len(keys) == 1 and torch.equal(keys[0], views.large[0])
    assert len(queries) == 2 and torch.equal(queries[0], views.large[1]) and torch.equal(queries[1], views.small[0])


def test_mocov2_queue_starts_normalised_and_is_fifo_with_wrap_around(tmp_path):
    method = build_method(_cfg(tmp_path, MOCO))
    assert method.queue.shape == (40, 16) and int(method.queue_ptr) == 0
    assert torch.allclose(method.queue.norm(dim=1), torch.ones(40))
    assert torch.equal(build_method(_cfg(tmp_path, MOCO)).queue, method.queue)  # from a fixed seed
    batches = [F.normalize(torch.randn(16, 16), dim=1) for _ in range(3)]
    initial = method.queue.clone()
    for b in batches:
        method.enqueue(b)
    # 40 rows, 16 keys a step: rows 0-15, 16-31, then 32-39 and (wrapping) 0-7
    assert int(method.queue_ptr) == 8
    assert torch.equal(method.queue[0:8], batches[2][8:])
    assert torch.equal(method.queue[8:16], batches[0][8:])
    assert torch.equal(method.queue[16:32], batches[1])
    assert torch.equal(method.queue[32:40], batches[2][:8])
    method.enqueue(torch.ones(45, 16))  # larger than the queue: the newest 40 survive, the pointer moves by 45
    assert int(method.queue_ptr) == (8 + 45) % 40 and torch.equal(method.queue, torch.ones(40, 16))
    assert not torch.equal(initial, method.queue)


def test_mocov2_step_enqueues_the_normalised_keys_of_view_0(tmp_path):
    method = build_method(_cfg(tmp_path, MOCO))
    views = _views(method.cfg)
    before = method.queue.clone()
    method(views, _ctx())
    assert torch.equal(method.queue, before)  # the queue changes only after the optimiser step
    method.after_optimizer_step(_ctx())
    with torch.no_grad():
        expected = F.normalize(method.key_projector(method.key_backbone(views.large[0])), dim=1)
    assert torch.allclose(method.queue[:8], expected, atol=1e-6) and torch.equal(method.queue[8:], before[8:])
    assert int(method.queue_ptr) == 8


def test_mocov2_symmetric_keys_both_large_views_and_queries_all_views(tmp_path, monkeypatch):
    """symmetric=true: the key encoder sees both large views in one forward, the queries are all views, the loss is the
    mean of (large 1, k0), (large 0, k1) and every small view against both keys, and both views' keys are enqueued."""
    method = build_method(_cfg(tmp_path, MOCO, "method.symmetric=true"))
    views = _views(method.cfg)
    keys = []
    key_forward = method.key_backbone.forward
    monkeypatch.setattr(method.key_backbone, "forward", lambda x: keys.append(x) or key_forward(x))
    before = method.queue.clone()
    out = method(views, _ctx())
    assert len(keys) == 1 and torch.equal(keys[0], torch.cat(views.large))
    with torch.no_grad():  # the method is in train mode, so BatchNorm uses batch statistics as in the step
        k0, k1 = F.normalize(method.key_projector(method.key_backbone(torch.cat(views.large))), dim=1).chunk(2)
        q = [method.projector(f) for f in [*method.backbone(torch.cat(views.large)).chunk(2),
                                            method.backbone(views.small[0])]]
    pair = lambda a, b: moco_pair_loss(a, b, before, temperature=0.2).item()  # noqa: E731
    expected = (pair(q[1], k0) + pair(q[0], k1) + pair(q[2], k0) + pair(q[2], k1)) / 4
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)
    out.loss.backward()
    assert all(p.grad is None for p in method.key_backbone.parameters())
    method.after_optimizer_step(_ctx())
    assert int(method.queue_ptr) == 16  # 2 x 8 keys
    assert torch.allclose(method.queue[:16], torch.cat([k0, k1]), atol=1e-5)


# ------------------------------------------------------------------------------------------------------------- SwAV


def test_swav_gradients_and_codes_without_gradient(tmp_path, monkeypatch):
    method = build_method(_cfg(tmp_path, SWAV))
    assert isinstance(method, SwAV)
    codes = []
    original = swav_module.sinkhorn
    monkeypatch.setattr(swav_module, "sinkhorn", lambda s, **kw: codes.append(original(s, **kw)) or codes[-1])
    out = method(_views(method.cfg), _ctx())
    assert len(codes) == 2 and all(not c.requires_grad for c in codes)  # one assignment per large view
    out.loss.backward()
    for name in ("backbone", "projector", "prototypes"):
        grads = [p.grad for p in getattr(method, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(12))


def test_swav_prototypes_gradients_dropped_in_frozen_epochs(tmp_path):
    method = build_method(_cfg(tmp_path, SWAV, "method.freeze_prototypes_epochs=2"))
    for epoch, frozen in ((0, True), (1, True), (2, False)):
        method.zero_grad()
        method(_views(method.cfg), _ctx(epoch=epoch)).loss.backward()
        method.on_after_backward(_ctx(epoch=epoch))
        assert (method.prototypes.weight.grad is None) == frozen, epoch
        assert all(p.grad is not None for p in method.projector.parameters())


def test_swav_queue_fills_then_joins_the_codes(tmp_path, monkeypatch):
    method = build_method(_cfg(tmp_path, SWAV, "method.queue_start_epoch=1"))
    assert method.queue.shape == (2, 32, 16)
    rows = []
    original = swav_module.sinkhorn
    monkeypatch.setattr(swav_module, "sinkhorn", lambda s, **kw: rows.append(s.shape[0]) or original(s, **kw))

    def step(epoch, seed):
        out = method(_views(method.cfg, seed=seed), _ctx(epoch=epoch))
        method.after_optimizer_step(_ctx(epoch=epoch))
        return out

    step(0, 0)  # before queue_start_epoch: nothing is stored
    assert not method.queue.any()
    used = []
    for seed in range(1, 7):  # batch 8, queue 32: full after 4 steps of epoch 1
        used.append(step(1, seed).logs["queue_in_use"])
        z, _ = method.embed(_views(method.cfg, seed=seed))
        assert torch.allclose(method.queue[0, :8], z[0].detach(), atol=1e-6)  # newest first
    assert used == [0, 0, 0, 0, 1, 1]
    assert rows == [8] * 2 * 5 + [8 + 32] * 2 * 2


def test_swav_queue_length_is_rounded_to_the_global_batch(tmp_path):
    assert build_method(_cfg(tmp_path, SWAV, "method.queue_length=40")).queue.shape == (2, 32, 16)
    assert build_method(_cfg(tmp_path, SWAV, "method.queue_length=0")).queue.shape == (2, 0, 16)
    with pytest.raises(ConfigError, match="method.queue_length"):
        build_method(_cfg(tmp_path, SWAV, "method.queue_length=8"))
    with pytest.raises(ConfigError, match="method.epsilon"):
        _cfg(tmp_path, SWAV, "method.epsilon=0")


def test_swav_prototypes_frozen_during_epoch_0_of_a_run_then_trained(tmp_path):
    """64 images, batch 16: epoch 0 = steps 0-3. The prototypes stay at their (normalised) start, then move."""
    # plain SGD: LARS would move them by only ~lr * 1e-3 relative per step
    cfg = _cfg(tmp_path, SWAV, "method.queue_length=0", "train.ckpt_every_steps=100", "optim.name=sgd")
    torch.manual_seed(cfg.seed)  # the trainer seeds the same way before building the method
    initial = build_method(cfg).prototypes.weight.detach().clone()
    first = pretrain(cfg, stop_at_step=4)
    assert first.step == 4
    after_epoch0 = load_checkpoint(tmp_path / "run" / "last.ckpt")["method"]["prototypes.weight"]
    assert torch.allclose(after_epoch0, initial, atol=1e-6)
    pretrain(cfg, resume="auto")
    after_epoch1 = load_checkpoint(tmp_path / "run" / "last.ckpt")["method"]["prototypes.weight"]
    assert (after_epoch1 - initial).abs().max() > 1e-4


# ------------------------------------------------------------------------------------ checkpoints and the CLI


@pytest.mark.parametrize("method", ["mocov2", "swav"])
def test_resume_restores_the_queue_and_reproduces_the_run(tmp_path, method):
    overrides = [*(MOCO if method == "mocov2" else SWAV), "train.steps=4"]  # SwAV's queue is in use from step 2
    full = pretrain(load_config(None, [*BASE, *overrides, f"out={tmp_path / 'a'}"]))
    cfg_b = load_config(None, [*BASE, *overrides, f"out={tmp_path / 'b'}"])
    first = pretrain(cfg_b, stop_at_step=2)
    saved = load_checkpoint(tmp_path / "b" / "last.ckpt")["method"]
    assert "queue" in saved and saved["queue"].abs().sum() > 0
    rest = pretrain(cfg_b, resume="auto")
    assert first.losses + rest.losses == full.losses  # bit-exact only if the queue came back
    a = load_checkpoint(tmp_path / "a" / "last.ckpt")["method"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["method"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("recipe,overrides", [
    ("mocov2_shapes", ["views.small.count=2", "method.queue_size=24"]),
    ("swav_shapes", ["method.num_prototypes=10", "method.queue_length=16", "method.queue_start_epoch=0"]),
])
def test_cli_pretrain_end_to_end(tmp_path, recipe, overrides):
    out = tmp_path / recipe
    tiny = [o for o in BASE if not o.startswith(("views.large.count", "views.small.count"))]
    args = ["pretrain", "--quiet", recipe, *tiny, "views.large.count=2", "method.projector_hidden=32",
            "method.projector_dim=16", *overrides, f"out={out}"]
    assert main(args) == 0
    losses = _log_losses(out)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert (out / "backbone.safetensors").is_file()


@pytest.mark.parametrize("recipe", ["mocov2_fmnist", "mocov2_shapes", "swav_fmnist", "swav_shapes"])
def test_recipes_load(recipe):
    cfg = load_config(recipe)
    assert cfg.model.backbone == "convnet_tiny" and cfg.views.large.count == 2


def test_swav_shapes_has_no_queue_at_temperature_half():
    """RESULTS 16: on the built-in data SwAV learns only at temperature 0.5 without the queue; queue_length=0 must mean
    an empty queue that is never used, whatever the epoch."""
    cfg = load_config("swav_shapes")
    assert (cfg.method.temperature, cfg.method.queue_length, cfg.train.steps) == (0.5, 0, 1800)
    method = build_method(cfg)
    assert method.queue.shape == (2, 0, cfg.method.projector_dim)
    assert not any(method.queue_in_use(epoch) for epoch in (0, 1, 15, 100))
