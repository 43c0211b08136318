"""selfsup: self-supervised visual representation learning and its evaluation.

Layers, lowest first: ``data`` -> ``models`` -> ``losses``/``methods`` -> ``engine`` -> ``saliency`` -> ``eval`` ->
``experiments`` -> ``cli``.
A lower layer never imports a higher one.
"""

__version__ = "0.1.0"
