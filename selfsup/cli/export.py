"""``selfsup export``: a run's backbone as safetensors for selfsup, timm or torchvision
(:func:`selfsup.eval.run.export_backbone`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.cli.common import add_command, add_common


def add_parser(sub) -> None:
    ex = add_command(sub, "export", help="write a run's backbone as safetensors for selfsup, timm or torchvision",
                     description="Writes the pretrained backbone of a run as safetensors: in selfsup's layout, or "
                                 "with the keys of the timm / torchvision model of the same architecture (ResNets, "
                                 "MobileNetV2, ViTs), for downstream detection or segmentation code. The file's "
                                 "metadata names the model to build; the command prints how to load it.")
    add_common(ex)
    ex.add_argument("--checkpoint", "-c", required=True, help="a run folder, last.ckpt or backbone.safetensors")
    ex.add_argument("--format", "-f", default="selfsup", choices=["selfsup", "timm", "torchvision"],
                    help="key layout of the written state dict (default: selfsup)")
    ex.add_argument("--out", "-o", required=True, help="the .safetensors file to write")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.eval.run import export_backbone, load_instructions

    out = Path(args.out)
    count, meta = export_backbone(args.checkpoint, args.format, out, args.recipe, args.overrides)
    print(f"wrote {count} tensors ({args.format} layout) to {out}")
    print(f"load: {load_instructions(args.format, out, meta)}")
    return 0
