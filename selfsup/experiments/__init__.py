"""Experiments: whole runs that pretrain and then evaluate, the layer above :mod:`selfsup.eval` and below
:mod:`selfsup.cli`.

* :mod:`~selfsup.experiments.pretraining`: pretraining as ``selfsup pretrain`` runs it, then the run's curves;
* :mod:`~selfsup.experiments.demo`: ``selfsup demo``, RELICv2 on the built-in data against random init;
* :mod:`~selfsup.experiments.study`: ``selfsup study``, the Revisiting grid of pretext tasks x architectures x widths.

Each name lives in one module; import it from there.
"""
