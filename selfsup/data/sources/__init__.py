"""The built-in datasets, one module per family, each registering its ``data.dataset`` names with
:func:`selfsup.data.registry.register_dataset` beside the check of its own settings:

* :mod:`~selfsup.data.sources.shapes`: ``shapes``, the procedural images of :mod:`selfsup.data.shapes`;
* :mod:`~selfsup.data.sources.fashion_mnist`: ``fashion_mnist`` (IDX files);
* :mod:`~selfsup.data.sources.cifar`: ``cifar10`` and ``cifar100`` (python pickles, read with a restricted unpickler);
* :mod:`~selfsup.data.sources.folder`: ``folder``, an ImageFolder layout or a flat folder of images;
* :mod:`~selfsup.data.sources.shards`: ``shards``, a ``selfsup data pack`` output (:mod:`selfsup.data.shards`).

Importing this package imports every module in it, so a new built-in dataset is one new file here (with its tests and
a recipe) and no list to edit. Once they are in, the registry's check joins the config layer's
(:data:`selfsup.config.DATA_CHECKS`): from then on ``load_config`` refuses an unknown ``data.dataset`` or a bad setting
of the chosen dataset's own, as ``build_dataset`` does.
"""

from __future__ import annotations

import importlib
import pkgutil

from selfsup.config import DATA_CHECKS
from selfsup.data.registry import check_data

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

if check_data not in DATA_CHECKS:
    DATA_CHECKS.append(check_data)
