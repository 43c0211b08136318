"""RELICv2's negative sampling at paper batch sizes: Floyd's sampler (``sample_candidates`` when 8 n_e < B) against
the dense draw it replaced (B x (B-1) uniform keys, the n_e smallest per row), same process, one thread, per call
(RELICv2 draws for every view pair: 4 x 4 + 2 x 4 = 24 a step with the paper's views; it now draws them in one call,
``count=24``, the last column).

    .venv/bin/python benchmarks/negative_sampling.py [--batches 256 1024 4096] [--negatives 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfsup.losses.relic import sample_candidates  # noqa: E402


def dense(batch: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, batch - 1, generator=g).topk(k, dim=1, largest=False, sorted=True).indices


def timed(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--negatives", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    print("| global batch B | n_e | Floyd (ms a call) | dense (ms a call) | speed-up | 24 calls, Floyd (ms a step) "
          "| 24 pairs in one call, unordered (ms a step) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for b in args.batches:
        floyd = timed(lambda: sample_candidates(b, args.negatives, generator=g), 20)
        old = timed(lambda: dense(b, args.negatives, g), 5)
        batched = timed(lambda: sample_candidates(b, args.negatives, generator=g, count=24, ordered=False), 10)
        print(f"| {b} | {args.negatives} | {floyd:.2f} | {old:.2f} | {old / floyd:.0f}x | {24 * floyd:.0f} "
              f"| {batched:.1f} |")


if __name__ == "__main__":
    main()
