"""Errors that reach the user as one line.

Everything the user can cause (a bad option, a missing file, a corrupt image, a diverging run) raises a subclass of
:class:`SelfsupError`. The CLI prints ``selfsup: error: <message>`` and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class SelfsupError(Exception):
    """Base class of the errors that are the user's to fix; the message is one line."""


class ConfigError(SelfsupError):
    """A bad option, value or recipe."""


class DataError(SelfsupError):
    """A dataset that cannot be found or an image that cannot be read (the message names the file)."""


class CheckpointError(SelfsupError):
    """A checkpoint that is missing, truncated or does not match the configuration."""


class NonFiniteLossError(SelfsupError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""
