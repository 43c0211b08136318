"""Fashion-MNIST benchmark: RELICv2 pretraining for a fixed wall-clock budget, then linear probe and kNN, next to
a random-init backbone, raw pixels, and supervised training of the same backbone for the same budget.

    .venv/bin/python benchmarks/fmnist_relicv2.py --minutes 10 [key=value overrides of relicv2_fmnist]

The schedule length is calibrated so that the cosine schedules finish inside the budget: a short timed run measures
steps/s on this machine first (the same for the supervised baseline). Results go to benchmarks/results/ as JSON, and the
printed Markdown table is what benchmarks/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfsup.config import load_config  # noqa: E402
from selfsup.data.views import train_crop_flip_sampler  # noqa: E402
from selfsup.engine.schedules import warmup_cosine  # noqa: E402
from selfsup.engine.trainer import generator_for, pretrain  # noqa: E402
from selfsup.eval.knn import knn_classify  # noqa: E402
from selfsup.eval.linear import fit_logistic_lbfgs  # noqa: E402
from selfsup.eval.metrics import topk_accuracy  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402

from common import calibrated_steps, probes  # noqa: E402


def supervised(cfg, data, budget_s: float) -> dict:
    """The same backbone + a linear classifier trained with labels (cross-entropy, random-resized-crop + flip, SGD
    momentum 0.9, cosine lr, weight decay 5e-4) for the same wall-clock budget; calibrated like the pretraining."""
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg, None).to(memory_format=torch.channels_last)
    head = torch.nn.Linear(backbone.num_features, 10)
    model = torch.nn.Sequential(backbone, head)
    params = [p for p in model.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    aug = train_crop_flip_sampler(data.size, (0.25, 1.0), data.train.mean, data.train.std)
    images, labels = data.train.images, data.train.labels
    bs = cfg.train.batch_size

    def step(k, total):
        idx = torch.randint(0, len(images), (bs,), generator=generator_for(cfg.seed, "sup", k))
        x = aug.sample(images[idx], None, generator_for(cfg.seed, "supaug", k)).large[0]
        x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(k, total, max(1, total // 20), 0.1 * bs / 256)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    model.train()
    step(0, 1000)  # warm-up step, not timed (allocations, first-call overheads)
    t0 = time.perf_counter()
    for k in range(1, 9):
        step(k, 1000)
    rate = 8 / (time.perf_counter() - t0)
    total = max(10, int(0.95 * budget_s * rate))
    torch.manual_seed(cfg.seed)  # restart cleanly after calibration
    backbone.load_state_dict(load_backbone(cfg, None).state_dict())
    head.reset_parameters()
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    t0 = time.perf_counter()
    for k in range(total):
        last = step(k, total)
        if time.perf_counter() - t0 > budget_s:
            break
    elapsed = time.perf_counter() - t0
    model.eval()
    pre = data.preprocess(cfg)
    with torch.no_grad():
        logits = torch.cat([model(pre(data.test.images[i:i + 1000]).contiguous(memory_format=torch.channels_last))
                            for i in range(0, len(data.test), 1000)])
    acc = topk_accuracy(logits, data.test.labels, ks=(1, 5))
    return {"classifier_top1": acc["top1"], "classifier_top5": acc["top5"], "steps": k + 1,
            "elapsed_s": elapsed, "last_loss": last, "backbone": backbone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="pretraining (and supervised) budget")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    budget = 60 * args.minutes
    out = args.out / f"fmnist_relicv2_{args.minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    import selfsup.methods  # noqa: F401

    cfg = load_config("relicv2_fmnist", [f"out={out / 'run'}", *args.overrides])
    steps = calibrated_steps(cfg, budget, out)
    cfg.train.steps, cfg.train.max_time_s = steps, budget
    print(f"RELICv2 pretraining: {steps} steps calibrated for {args.minutes:g} min")
    run = pretrain(cfg)
    data = probe_data(cfg)
    rows = {"RELICv2 (pretrained)": probes(cfg, load_backbone(cfg, str(out / "run" / "backbone.safetensors")), data),
            "random init": probes(cfg, load_backbone(cfg, None), data)}

    xtr, xte = data.train.images.float().flatten(1) / 255, data.test.images.float().flatten(1) / 255
    ytr, yte = data.train.labels, data.test.labels
    xtr, xte = xtr[:, ::3], xte[:, ::3]  # the 3 channels are copies of the gray image: 784 pixel features
    lin = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=10, l2_grid=cfg.eval.linear.l2_grid,
                             val_fraction=cfg.eval.linear.val_fraction, max_iter=cfg.eval.linear.max_iter, seed=0)
    knn = knn_classify(xtr, ytr, xte, yte, k=20, temperature=cfg.eval.knn.temperature, num_classes=10)
    rows["raw pixels (784-d)"] = {"linear_top1": lin["top1"], "linear_top5": lin["top5"], "l2": lin["l2"],
                                  "knn20_top1": knn["top1"]}

    sup = supervised(cfg, data, budget)
    sup_backbone = sup.pop("backbone")
    rows["supervised, same budget (features)"] = probes(cfg, sup_backbone, data)
    rows["supervised, same budget (features)"]["classifier_top1"] = sup["classifier_top1"]

    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
               f"threads, {platform.processor() or 'cpu'}", "torch": torch.__version__,
               "command": "python benchmarks/fmnist_relicv2.py " + " ".join(sys.argv[1:]),
               "budget_min": args.minutes, "pretrain_steps": run.step, "pretrain_images_per_s": run.images_per_s,
               "pretrain_views_per_s": run.images_per_s * (cfg.views.large.count + cfg.views.small.count),
               "data_wait_fraction": run.data_wait_fraction, "pretrain_elapsed_s": run.elapsed_s,
               "final_loss": run.losses[-1] if run.losses else math.nan, "supervised": sup, "rows": rows}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")

    print(f"\n{payload['command']}   ({payload['date']}, {payload['machine']})")
    print(f"pretraining: {run.step} steps in {run.elapsed_s / 60:.1f} min, {run.images_per_s:.0f} images/s "
          f"({payload['pretrain_views_per_s']:.0f} views/s), data wait {100 * run.data_wait_fraction:.1f}%")
    print(f"supervised: {sup['steps']} steps in {sup['elapsed_s'] / 60:.1f} min, classifier top-1 "
          f"{sup['classifier_top1']:.2f}%\n")
    print("| representation | linear top-1 | linear top-5 | kNN k=20 top-1 |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['linear_top1']:.2f} | {r['linear_top5']:.2f} | {r['knn20_top1']:.2f} |")


if __name__ == "__main__":
    main()
