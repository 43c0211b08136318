"""Methods: one file each, holding its arguments, its networks and its loss over views. Importing this package
registers every method (``method.name`` in a config)."""

from selfsup.methods.base import (METHODS, EMASpec, Method, StepContext, StepOutput, build_method,
                                  forward_by_resolution, frozen_copy, register_method)
from selfsup.methods import relicv2  # noqa: F401  (registers "relicv2")
from selfsup.methods import simclr  # noqa: F401  (registers "simclr")
from selfsup.methods import byol  # noqa: F401  (registers "byol")
from selfsup.methods import relic  # noqa: F401  (registers "relic")
from selfsup.methods import dino  # noqa: F401  (registers "dino")
from selfsup.methods import mocov2  # noqa: F401  (registers "mocov2")
from selfsup.methods import swav  # noqa: F401  (registers "swav")
from selfsup.methods import rotation  # noqa: F401  (registers "rotation")
from selfsup.methods import exemplar  # noqa: F401  (registers "exemplar")
from selfsup.methods import patch_tasks  # noqa: F401  (registers "jigsaw" and "relpatch")

__all__ = ["METHODS", "EMASpec", "Method", "StepContext", "StepOutput", "build_method", "forward_by_resolution",
           "frozen_copy", "register_method"]
