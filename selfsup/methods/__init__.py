"""Methods: one file each, holding its arguments, its networks and its loss over views
(:mod:`~selfsup.methods.base` says what every method is).

Importing this package imports every module in it, and each method module registers itself (``method.name`` in a
config) with its arguments: ``@register_method("relicv2", args=RELICv2Args)``. A new method is so one new file here
(with its tests and a recipe) and no list to edit. Whoever loads a config imports this package first, so that
:func:`selfsup.config.load_config` knows every method's arguments (:mod:`selfsup.method_args`).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
