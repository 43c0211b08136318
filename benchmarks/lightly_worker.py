"""The lightly side of ``benchmarks/lightly_compare.py``; it runs in the separate lightly 1.6 virtual environment.

    .venv-lightly/bin/python benchmarks/lightly_worker.py --recipe simclr_fmnist --minutes 5 --out DIR [key=value ...]

It reads the same selfsup recipe (and overrides) as the selfsup side, builds the same backbone from selfsup's registry
(so the weights load into selfsup's probes unchanged), and trains it the way lightly's documentation does: lightly's
transforms (``SimCLRTransform``, ``BYOLTransform``, ``DINOTransform``) on PIL images in a ``DataLoader``, lightly's
heads (``SimCLRProjectionHead``, ``BYOLProjectionHead``/``BYOLPredictionHead``, ``DINOProjectionHead``), losses
(``NTXentLoss``, ``NegativeCosineSimilarity``, ``DINOLoss``), ``update_momentum`` with ``cosine_schedule``, and
lightly's ``LARS`` when the recipe uses LARS (torch's AdamW/SGD otherwise). Every number of the transform, the heads,
the loss and the optimiser comes from the recipe; the schedule (warm-up + cosine) is calibrated to the budget as on the
selfsup side. Writes ``backbone.safetensors`` and ``stats.json`` (steps, images/s, minutes) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss  # noqa: E402
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead, SimCLRProjectionHead  # noqa: E402
from lightly.models.utils import deactivate_requires_grad, get_weight_decay_parameters, update_momentum  # noqa: E402
from lightly.transforms import DINOTransform, SimCLRTransform  # noqa: E402
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform  # noqa: E402
from lightly.utils.lars import LARS  # noqa: E402
from lightly.utils.scheduler import cosine_schedule  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import selfsup.methods  # noqa: E402,F401  (registers the methods: load_config knows their arguments)
from selfsup.config import load_config, to_yaml  # noqa: E402
from selfsup.data.datasets import build_dataset  # noqa: E402
from selfsup.models.registry import create_backbone  # noqa: E402


class PILDataset(torch.utils.data.Dataset):
    """The selfsup dataset's uint8 images as PIL images through a lightly transform (lightly's documented input)."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) uint8
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i])))


def transform_for(cfg, mean, std):
    v, norm = cfg.views, {"mean": list(mean), "std": list(std)}
    jitter = dict(cj_prob=v.jitter_p, cj_strength=1.0, cj_bright=v.brightness, cj_contrast=v.contrast,
                  cj_sat=v.saturation, cj_hue=v.hue, random_gray_scale=v.grayscale_p, sigmas=tuple(v.blur_sigma),
                  hf_prob=v.flip_p, normalize=norm)
    large = v.large
    name = cfg.method.name
    if name == "simclr":
        return SimCLRTransform(input_size=large.size, min_scale=large.scale_min[0], gaussian_blur=large.blur_p[0],
                               **jitter)
    if name == "byol":
        def view(i, cls):
            return cls(input_size=large.size, min_scale=large.scale_min[i % len(large.scale_min)],
                       gaussian_blur=large.blur_p[i % len(large.blur_p)],
                       solarization_prob=large.solarize_p[i % len(large.solarize_p)], **jitter)
        return BYOLTransform(view_1_transform=view(0, BYOLView1Transform), view_2_transform=view(1, BYOLView2Transform))
    if name == "dino":
        small = v.small
        blur = (large.blur_p[0], large.blur_p[1 % len(large.blur_p)], small.blur_p[0])
        jitter.pop("hf_prob")
        return DINOTransform(global_crop_size=large.size, global_crop_scale=(large.scale_min[0], large.scale_max),
                             local_crop_size=small.size, local_crop_scale=(small.scale_min[0], small.scale_max),
                             n_local_views=small.count, hf_prob=v.flip_p, gaussian_blur=blur,
                             solarization_prob=large.solarize_p[1 % len(large.solarize_p)], **jitter)
    raise SystemExit(f"the lightly comparison covers simclr, byol and dino, not {name}")


class Model(torch.nn.Module):
    """lightly's documented model for each method, around selfsup's backbone."""

    def __init__(self, cfg, backbone) -> None:
        super().__init__()
        a, d = cfg.method, backbone.num_features
        self.name, self.backbone = a.name, backbone
        if a.name == "simclr":
            self.head = SimCLRProjectionHead(d, a.projector_hidden, a.projector_dim)
            self.criterion = NTXentLoss(temperature=a.temperature)
        elif a.name == "byol":
            self.head = BYOLProjectionHead(d, a.projector_hidden, a.projector_dim)
            self.predictor = BYOLPredictionHead(a.projector_dim, a.predictor_hidden, a.projector_dim)
            self.criterion = NegativeCosineSimilarity()
        else:
            self.head = DINOProjectionHead(d, a.hidden_dim, a.bottleneck_dim, a.out_dim,
                                           batch_norm=a.head_norm == "batch",
                                           freeze_last_layer=a.freeze_last_layer_epochs,
                                           norm_last_layer=a.norm_last_layer)
            self.criterion = DINOLoss(output_dim=a.out_dim, warmup_teacher_temp=a.warmup_teacher_temperature,
                                      teacher_temp=a.teacher_temperature,
                                      warmup_teacher_temp_epochs=max(1, round(a.teacher_temperature_warmup_epochs)),
                                      student_temp=a.student_temperature, center_momentum=a.center_momentum)
        if a.name in ("byol", "dino"):
            self.target_backbone = copy.deepcopy(backbone)
            if a.name == "dino":
                # as lightly's DINO example: a second head (its weight-normed layer cannot be deep-copied)
                self.target_head = DINOProjectionHead(d, a.hidden_dim, a.bottleneck_dim, a.out_dim,
                                                      batch_norm=a.head_norm == "batch",
                                                      norm_last_layer=a.norm_last_layer)
                self.target_head.load_state_dict(self.head.state_dict())  # teacher starts as the student (DINO)
            else:
                self.target_head = copy.deepcopy(self.head)
            deactivate_requires_grad(self.target_backbone)
            deactivate_requires_grad(self.target_head)

    def loss(self, views, epoch: int):
        if self.name == "simclr":
            z0, z1 = self.head(self.backbone(torch.cat(views))).chunk(2)
            return self.criterion(z0, z1)
        if self.name == "byol":
            p0, p1 = self.predictor(self.head(self.backbone(torch.cat(views)))).chunk(2)
            with torch.no_grad():
                z0, z1 = self.target_head(self.target_backbone(torch.cat(views))).chunk(2)
            return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        n_global = 2  # DINOTransform: 2 global views, then the local views
        with torch.no_grad():
            teacher = list(self.target_head(self.target_backbone(torch.cat(views[:n_global]))).chunk(n_global))
        student = list(self.head(self.backbone(torch.cat(views[:n_global]))).chunk(n_global))
        if len(views) > n_global:
            student += list(self.head(self.backbone(torch.cat(views[n_global:]))).chunk(len(views) - n_global))
        return self.criterion(teacher, student, epoch=epoch)

    def after_backward(self, epoch: int) -> None:
        if self.name == "dino":
            self.head.cancel_last_layer_gradients(current_epoch=epoch)

    def momentum_update(self, m: float) -> None:
        if self.name in ("byol", "dino"):
            update_momentum(self.backbone, self.target_backbone, m=m)
            update_momentum(self.head, self.target_head, m=m)


def optimizer_for(cfg, model, lr):
    """The recipe's optimiser over lightly's parameter groups (lightly's benchmarks: norms and biases without weight
    decay, which its LARS also leaves unscaled)."""
    o = cfg.optim
    decay, no_decay = get_weight_decay_parameters([model])  # the EMA targets are dropped below (no gradient)
    groups = [{"params": [p for p in decay if p.requires_grad]},
              {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0}]
    if o.name == "lars":
        return LARS(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                    trust_coefficient=o.trust_coefficient)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers running lightly's transforms")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    cfg = load_config(args.recipe, args.overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    data = build_dataset(cfg.data, "train")
    loader = torch.utils.data.DataLoader(
        PILDataset(data.images, transform_for(cfg, data.mean, data.std)), batch_size=cfg.train.batch_size,
        shuffle=True, drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0)
    backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
    model = Model(cfg, backbone).to(memory_format=torch.channels_last)
    peak = cfg.optim.base_lr * cfg.train.batch_size / 256
    opt = optimizer_for(cfg, model, peak)
    steps_per_epoch = len(loader)
    ema_base = getattr(cfg.method, "ema_base", 0.99)

    def batches():  # lightly's transforms give each item as its list of views; the loader stacks them per view
        while True:
            yield from loader

    def step(k, total, warmup, it):
        views = [v.contiguous(memory_format=torch.channels_last) for v in next(it)]
        lr = (peak * (k + 1) / warmup if k < warmup
              else peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / max(1, total - warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        epoch = k // steps_per_epoch
        loss = model.loss(views, epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        model.after_backward(epoch)
        opt.step()
        model.momentum_update(cosine_schedule(k, total, ema_base, 1.0))
        return loss.item()

    # calibration, as on the selfsup side: time a few steps (the first excluded), then restart from scratch
    it = batches()
    init = copy.deepcopy(model.state_dict())
    step(0, 1000, 10, it)
    t0 = time.perf_counter()
    for k in range(1, 13):
        step(k, 1000, 10, it)
    rate = 12 / (time.perf_counter() - t0)
    total = max(10, int(0.95 * 60 * args.minutes * rate))
    model.load_state_dict(init)
    opt = optimizer_for(cfg, model, peak)
    warmup = (cfg.optim.warmup_steps if cfg.optim.warmup_steps is not None
              else round(cfg.optim.warmup_epochs * steps_per_epoch))
    warmup = max(1, min(warmup, total))
    model.train()
    t0 = time.perf_counter()
    timed, t_timed = 0, 0.0
    for k in range(total):
        ts = time.perf_counter()
        last = step(k, total, warmup, it)
        if k > 0:
            timed, t_timed = timed + cfg.train.batch_size, t_timed + time.perf_counter() - ts
        if time.perf_counter() - t0 > 60 * args.minutes:
            break
    elapsed = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in backbone.state_dict().items()},
              str(args.out / "backbone.safetensors"),
              metadata={"format": "selfsup-checkpoint-v1", "config": to_yaml(cfg)})
    stats = {"steps": k + 1, "planned_steps": total, "images_per_s": timed / t_timed if t_timed else 0.0,
             "minutes": elapsed / 60, "final_loss": last, "workers": args.workers}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
