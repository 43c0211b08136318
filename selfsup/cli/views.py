"""``selfsup views inspect``: the views a recipe samples (:mod:`selfsup.eval.views_inspect`)."""

from __future__ import annotations

import argparse

from selfsup.cli.common import add_command, add_common, help_if_no_action, with_actions


def add_parser(sub) -> None:
    vw = add_command(sub, "views", help="inspect the views a recipe samples (crop and pixel scales, a picture)",
                     epilog=False)
    vw.set_defaults(handler=run)
    vsub = with_actions(vw, "views_command")
    vi = add_command(vsub, "inspect", help="print crop-scale and pixel-scale statistics and save a grid of views",
                     description="Draws the views of a recipe with the training sampler and prints, per view "
                                 "group, the crop-area and pixel-scale statistics, SSLight's mean(PS_g/PS_l) "
                                 "(eq. 1), and the per-view blur/solarize rates; saves a PNG grid of example "
                                 "views of the recipe's dataset (the built-in data if that is not available).")
    add_common(vi)
    vi.add_argument("--out", default=None, help="PNG path (default: views-<recipe name>.png)")
    vi.add_argument("--images", type=int, default=4096, help="images drawn for the statistics (default: 4096)")
    vi.add_argument("--rows", type=int, default=6, help="source images in the picture (default: 6)")


def run(args: argparse.Namespace) -> int:
    from selfsup.errors import ConfigError
    from selfsup.eval.views_inspect import describe_views, draw_view_grid, recipe_views

    help_if_no_action(args, "views_command")
    if args.recipe is None:
        raise ConfigError("views inspect needs a recipe: selfsup views inspect RECIPE [key=value ...]")
    if args.images < 1 or args.rows < 1:
        raise ConfigError("--images and --rows must be >= 1")
    cfg, png, stats = recipe_views(args.recipe, args.overrides, args.out, args.images)
    print(describe_views(args.recipe, cfg))
    print(stats.table())
    source = draw_view_grid(cfg, png, args.rows, stats)
    print(f"views of {source}: {png}")
    return 0
