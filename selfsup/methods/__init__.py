"""Methods: one file each, holding its arguments, its networks and its loss over views. Importing this package
registers every method (``method.name`` in a config)."""

from selfsup.methods.base import (METHODS, EMASpec, Method, StepContext, StepOutput, build_method,
                                  forward_by_resolution, frozen_copy, register_method)
from selfsup.methods import relicv2  # noqa: F401  (registers "relicv2")

__all__ = ["METHODS", "EMASpec", "Method", "StepContext", "StepOutput", "build_method", "forward_by_resolution",
           "frozen_copy", "register_method"]
