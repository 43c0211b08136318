"""RELICv2 ResNet-50 on one GPU: training images/s and model-FLOP utilisation (bf16 autocast, channels_last, optionally
``torch.compile``), the GPU data path's decode+views rate, and what the CPU-side sampling costs next to a step.

    .venv/bin/python benchmarks/gpu_relicv2.py [--batch 256] [--steps 30] [--compile] [--json OUT]

One command, nothing to download (scikit-image's photos are the JPEGs). Parts, each timed after warm-up with CUDA
synchronisation:

1. **Model step** of ``relicv2_imagenet_r50`` (4 x 224 + 2 x 96 views through the online network, 4 large through the
   EMA target, LARS, EMA update) on views already on the GPU: images/s. FLOPs per step are counted by
   ``torch.utils.flop_counter.FlopCounterMode`` on the real step (forward + backward, matmuls and convolutions), so
   MFU = counted FLOPs x steps/s / peak (``--peak-tflops``, default 989: H100/H200 dense bf16).
2. **Data path**: a batch of JPEG bytes -> ``decode_on_device`` (batched nvJPEG, fit to short side 256, padded canvas)
   -> the multi-view renderer on the GPU: images/s and views/s.
3. **Sampling**: the CPU draws of a step at the global batch ``--global-batch`` (the view parameters, and RELICv2's
   negatives for 24 view pairs in one ``sample_candidates`` call), as a fraction of the measured step time.

``--device cpu --tiny`` runs every part at toy sizes on the CPU (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from selfsup.config import load_config  # noqa: E402
from selfsup.data.base import collate  # noqa: E402
from selfsup.data.views import MultiViewSampler, Views  # noqa: E402
from selfsup.engine.ema import ema_update  # noqa: E402
from selfsup.engine.optim import build_optimizer  # noqa: E402
from selfsup.losses.relic import sample_candidates  # noqa: E402
from selfsup.methods.base import StepContext, build_method  # noqa: E402
from selfsup.schedules import scaled_lr  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def model_step(args, device):
    import selfsup.methods  # noqa: F401  (registers the methods)

    size_l, size_s = (64, 32) if args.tiny else (224, 96)
    cfg = load_config("relicv2_imagenet_r50", [f"train.batch_size={args.batch}", "views.mask_p=0",
                                               f"views.large.size={size_l}", f"views.small.size={size_s}"])
    method = build_method(cfg).to(device).to(memory_format=torch.channels_last)
    if args.compile:
        method.backbone.compile()
    opt = build_optimizer(method, cfg.optim, lr=scaled_lr(cfg.optim.base_lr, args.batch),
                          depthwise_no_decay=cfg.optim.depthwise_no_decay)
    B = args.batch
    views = Views(large=[torch.randn(B, 3, size_l, size_l, device=device).contiguous(memory_format=torch.channels_last)
                         for _ in range(cfg.views.large.count)],
                  small=[torch.randn(B, 3, size_s, size_s, device=device).contiguous(memory_format=torch.channels_last)
                         for _ in range(cfg.views.small.count)])
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    state = {"step": 0}

    def step():
        ctx = StepContext(step=state["step"], total_steps=10**6, epoch=0,
                          generator=torch.Generator().manual_seed(state["step"]), steps_per_epoch=1000)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = method(views, ctx)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        for online, target in method.ema_pairs():
            ema_update(target, online, 0.996)
        state["step"] += 1

    from torch.utils.flop_counter import FlopCounterMode

    step()  # build lazily created state before counting
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = timed(step, args.steps, 3, device)
    return {"batch": B, "bf16": bf16, "compile": args.compile, "step_s": seconds, "images_per_s": B / seconds,
            "flops_per_step": flops, "tflops_per_s": flops / seconds / 1e12,
            "mfu": flops / seconds / (args.peak_tflops * 1e12)}, cfg


def data_path(args, cfg, device):
    from data_path import jpeg_sources  # benchmarks/data_path.py: the same JPEG photos as the CPU benchmark

    from selfsup.data.images import EncodedImageDataset, decode_on_device

    blobs = jpeg_sources(args.batch)

    class Photos(EncodedImageDataset):
        def __init__(self):
            self.labels = torch.zeros(len(blobs), dtype=torch.int64)
            self._label_list = self.labels.tolist()
            self._setup(64 if args.tiny else 256, False, None, True, 3.0)
            self.device_decode = True

        def _read(self, i):
            return blobs[i], f"photo {i}"

    ds = Photos()
    items = [ds[i] for i in range(len(ds))]
    sampler = MultiViewSampler(cfg.views, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    g = torch.Generator().manual_seed(0)
    nviews = cfg.views.large.count + cfg.views.small.count

    def run():
        batch = decode_on_device(collate(items), ds, device)
        sampler(batch["image"], None, sampler.sample_params(len(items), g), batch["size"])

    seconds = timed(run, max(3, args.steps // 3), 2, device)
    return {"images_per_s": len(items) / seconds, "views_per_s": len(items) * nviews / seconds}


def sampling(args, cfg, step_s):
    sampler = MultiViewSampler(cfg.views, (0.5,) * 3, (0.25,) * 3)
    g = torch.Generator().manual_seed(0)
    G = args.global_batch
    views_s = timed(lambda: sampler.sample_params(G, g), 5, 1, torch.device("cpu"))
    pairs = cfg.views.large.count * (cfg.views.large.count + cfg.views.small.count)
    neg_s = timed(lambda: sample_candidates(G, cfg.method.num_negatives, generator=g, count=pairs), 3, 1,
                  torch.device("cpu"))  # one call for all pairs, as relic_multiview_loss draws them
    return {"global_batch": G, "view_params_s": views_s, "negatives_s": neg_s, "pairs": pairs,
            "fraction_of_step": (views_s + neg_s) / step_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="images per step on this GPU")
    ap.add_argument("--global-batch", type=int, default=4096, help="the global batch the sampling is drawn for")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200: 989)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (a smoke test on the CPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_relicv2.py: no CUDA device here (run it where a GPU is, or --device cpu --tiny for a smoke test)")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    model, cfg = model_step(args, device)
    print(f"model step: {model['images_per_s']:.0f} images/s, {model['tflops_per_s']:.0f} TFLOP/s, MFU "
          f"{100 * model['mfu']:.1f} % (batch {args.batch}, bf16 {model['bf16']}, compile {args.compile})", flush=True)
    data = data_path(args, cfg, device)
    print(f"data path: {data['images_per_s']:.0f} images/s decode+fit+views ({data['views_per_s']:.0f} views/s)",
          flush=True)
    samp = sampling(args, cfg, model["step_s"])
    print(f"sampling at global batch {samp['global_batch']}: views {1e3 * samp['view_params_s']:.1f} ms + "
          f"{samp['pairs']} negative draws {1e3 * samp['negatives_s']:.1f} ms = "
          f"{100 * samp['fraction_of_step']:.1f} % of a {1e3 * model['step_s']:.0f} ms step", flush=True)
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": name, "torch": torch.__version__,
               "command": " ".join(["benchmarks/gpu_relicv2.py", *sys.argv[1:]]), "model": model, "data": data,
               "sampling": samp}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
