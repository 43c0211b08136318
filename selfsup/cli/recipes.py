"""``selfsup recipes``: the recipes and the evaluation presets, with where each file is."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    sub.add_parser("recipes", help="list the recipes").set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.config import find_preset, find_recipe, list_presets, list_recipes

    for name in list_recipes():
        print(f"{name:28s} {find_recipe(name)}")
    print("\nevaluation presets (selfsup eval ... --preset NAME):")
    for name in list_presets():
        print(f"{name[len('eval/'):]:28s} {find_preset(name)}")
    return 0
