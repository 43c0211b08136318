"""``selfsup eval <protocol>``: one subcommand per protocol of the registry (:mod:`selfsup.eval.protocols`)."""

from __future__ import annotations

import argparse

from selfsup.cli.common import add_command, add_common, help_if_no_action, with_actions
from selfsup.eval.protocols import get_protocol, protocols


def add_parser(sub) -> None:
    registered = protocols()
    ev = add_command(sub, "eval", help="evaluate a pretrained backbone "
                                       f"({', '.join(p.name for p in registered)})", epilog=False)
    ev.set_defaults(handler=run)
    esub = with_actions(ev, "protocol", metavar="PROTOCOL")
    for protocol in registered:
        e = add_command(esub, protocol.name, help=protocol.help, description=protocol.help)
        add_common(e)
        src = e.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", "-c", help="a run folder, last.ckpt or backbone.safetensors")
        src.add_argument("--random-init", action="store_true",
                         help="evaluate a randomly initialised backbone of the configured architecture (a baseline)")
        e.add_argument("--out", help="write the results as JSON here")
        common = {a.dest for a in e._actions}
        protocol.add_arguments(e)
        e.set_defaults(protocol_options=[a.dest for a in e._actions if a.dest not in common])
        e.add_argument("--preset", "-p", action="append", default=[], metavar="PRESET",
                       help="an evaluation protocol from selfsup/recipes/eval/ (e.g. relicv2_semi_10pct), layered over "
                            "the run's config and the recipe; repeatable")


def run(args: argparse.Namespace) -> int:
    from selfsup.eval.run import keep_result, prepare_eval, run_protocol

    help_if_no_action(args, "protocol")
    protocol = get_protocol(args.protocol)
    ctx = prepare_eval(protocol, None if args.random_init else args.checkpoint, args.recipe, args.overrides,
                       presets=args.preset, out=args.out, progress=not args.quiet,
                       options={k: getattr(args, k) for k in args.protocol_options})
    res = run_protocol(protocol, ctx)
    for line in protocol.summary(res, ctx):
        print(line)
    keep_result(protocol, ctx, res, command="selfsup " + " ".join(args.argv))
    return 0
