"""``selfsup data pack``: an image folder packed into streaming shards (:mod:`selfsup.data.shards`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from selfsup.cli.common import add_command, help_if_no_action, with_actions


def add_parser(sub) -> None:
    da = add_command(sub, "data", help="data tools: pack an image folder into streaming shards", epilog=False)
    da.set_defaults(handler=run)
    dsub = with_actions(da, "data_command")
    pk = add_command(dsub, "pack", help="write an image folder (flat or class tree, with its test split) into litdata "
                                        "shards for data.dataset=shards",
                     description="Packs SRC's training images into OUT/train and its test split (SRC/val, "
                                 "SRC/test or --test-root, found as data.dataset=folder finds them) into OUT/test. "
                                 "Records keep the files' bytes (no re-encoding); train from them with "
                                 "data.dataset=shards data.root=OUT.", epilog=False)
    pk.add_argument("src", help="image folder")
    pk.add_argument("out", help="shard folder to write (only its train/ and test/ are written; an existing one is "
                                "replaced only if an earlier pack wrote it)")
    pk.add_argument("--test-root", default=None, help="the test images, if not SRC/val or SRC/test")
    pk.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                    help="packing processes (default: the cores, at most 8)")
    pk.add_argument("--chunk-bytes", default="64MB",
                    help="target chunk size: a positive integer with an optional unit B, KB, MB, GB or TB "
                         "(default 64MB)")
    pk.add_argument("--limit", type=int, default=None, help="pack only the first N images of each split")
    pk.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from selfsup.data.shards import folder_pack_plan, pack

    help_if_no_action(args, "data_command")
    plan = folder_pack_plan(args.src, args.out, test_root=args.test_root, limit=args.limit, workers=args.workers,
                            chunk_bytes=args.chunk_bytes)
    if "test" not in plan["splits"]:
        print(f"no test split in {args.src}: packing the training images only")
    written = pack(plan["splits"], plan["out"], chunk_bytes=plan["chunk_bytes"], workers=args.workers,
                   progress=not args.quiet, sources=plan["sources"])
    for name, meta in written.items():
        classes = f"{len(meta['classes'])} classes" if meta["classes"] else "unlabelled"
        bad = f", {meta['unreadable_files']} unreadable files stored empty" if meta["unreadable_files"] else ""
        print(f"{name}: {meta['records']} images ({classes}{bad}) -> {Path(args.out) / name} "
              f"in {meta['seconds']:.1f} s")
    if plan["stale_test"]:
        print(f"removed {Path(args.out) / 'test'}, the test split of an earlier pack (this source has none)")
    print(f"train from them with: data.dataset=shards data.root={args.out}")
    return 0
