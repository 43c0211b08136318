"""What every command's parser shares: the parser class whose errors are one line, the recipe-and-overrides
arguments, and the epilog on overrides and recipes."""

from __future__ import annotations

import argparse
from typing import Optional

EPILOG = """overrides: any config key as key=value, e.g. train.steps=100 views.large.count=2 method.temperature=0.1
recipes:   selfsup recipes   (lists the YAML files in selfsup/recipes/)"""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the option (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common(p: argparse.ArgumentParser, recipe_default: Optional[str] = None) -> None:
    """The recipe (positional or --recipe), the key=value overrides and --quiet."""
    p.add_argument("overrides", nargs="*", metavar="[RECIPE] key=value",
                   help="a recipe (name in selfsup/recipes/ or YAML path; also --recipe), then config overrides "
                        "(dotted keys)")
    p.add_argument("--recipe", "-r", default=None,
                   help=f"recipe name in selfsup/recipes/ or a YAML path (default: {recipe_default or 'none'})")
    p.set_defaults(recipe_default=recipe_default)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_command(sub, name: str, help: str, description: Optional[str] = None, epilog: bool = True,
                **kwargs) -> argparse.ArgumentParser:
    """A command's (or action's) parser, with the overrides epilog unless ``epilog`` is False."""
    if epilog:
        kwargs.update(epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    if description is not None:
        kwargs["description"] = description
    return sub.add_parser(name, help=help, **kwargs)


def with_actions(parser: argparse.ArgumentParser, dest: str, metavar: str = "ACTION"):
    """The sub-parsers of a command with actions (``selfsup data pack``); ``selfsup data`` alone prints its help."""
    parser.set_defaults(command_parser=parser)
    return parser.add_subparsers(dest=dest, parser_class=Parser, metavar=metavar)


def help_if_no_action(args: argparse.Namespace, dest: str) -> None:
    """``selfsup <command>`` without its action: the command's help, exit status 0 (as ``--help``)."""
    if getattr(args, dest) is None:
        args.command_parser.print_help()
        args.command_parser.exit()
