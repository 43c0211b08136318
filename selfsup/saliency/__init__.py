"""RELICv2's unsupervised saliency (Appendix B.2.1, DeepUSPS on a selfsup encoder), one feature in one package.

It sits above :mod:`selfsup.engine` (its networks train with the one supervised loop) and below :mod:`selfsup.eval`.
Pretraining never imports it: it only reads the mask cache this package writes, through the hook in
:mod:`selfsup.data.masks` (``MaskProvider``, ``MaskCache``).

* :mod:`~selfsup.saliency.handcrafted`: the four handcrafted maps (RBD, MR, DSR, MC) on SLIC superpixels;
* :mod:`~selfsup.saliency.network`: the saliency network (encoder + light decoder), its file and loading;
* :mod:`~selfsup.saliency.train`: training one network (the refinement rounds' moving average, the guided filter);
* :mod:`~selfsup.saliency.fit`: ``selfsup saliency fit``, the whole pipeline (handcrafted -> refinement -> fusion);
* :mod:`~selfsup.saliency.images`: the fit set and the images and ground-truth masks read from a dataset;
* :mod:`~selfsup.saliency.predict`: mask prediction, ``selfsup saliency predict`` into a mask cache;
* :mod:`~selfsup.saliency.cache`: writing a mask cache (kill-safe replacement);
* :mod:`~selfsup.saliency.scores`: F-beta, max F-beta, MAE and IoU against ground truth;
* :mod:`~selfsup.saliency.sources`: ``selfsup saliency show | score``, every source's maps on the same images.

Each name lives in one module; import it from there.
"""
