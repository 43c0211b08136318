"""Networks: the backbone registry (:mod:`selfsup.models.registry`), the shared base classes and layers
(:mod:`selfsup.models.base`), one module per backbone family, the heads, and export to timm / torchvision layouts.

As timm's ``timm/models/__init__.py``, importing this package imports every family module, and each registers its
names with :mod:`~selfsup.models.registry`'s decorators; so ``from selfsup.models.registry import create_backbone``
finds every backbone. A new family is a new module here plus one line below.
"""

from selfsup.models import convnet, mobilenet, resnet, revisiting, vit  # noqa: F401  (each registers its backbones)
