"""Handcrafted saliency on SLIC superpixels: RBD, MR, DSR and MC, the four base methods of RELICv2's saliency pipeline.

RELICv2 (Appendix B.2.1) refines the maps of four classic unsupervised saliency methods into a saliency network. Each
method here is a function ``image (H, W, 3) float in [0, 1] -> map (H, W) float32 in [0, 1]``, written from its paper
with NumPy and SciPy sparse graphs (no per-pixel Python loops; the per-superpixel work is dense linear algebra on a
few hundred nodes). :func:`saliency_maps` runs one of them over a whole dataset in worker processes.

Common ground (:func:`superpixel_graph`): scikit-image SLIC superpixels (compactness 10, sigma 1), per-superpixel mean
CIE-Lab and RGB colours and mean position (x, y in [0, 1]), the 4-neighbour adjacency of superpixels and the boundary
superpixels of each image side.

* **RBD** (Zhu, Liang, Wei, Sun, CVPR 2014, "Saliency optimization from robust background detection"). Geodesic
  distances (Dijkstra over adjacent superpixels, edge length = Lab distance) give each superpixel a spanning area and a
  length along the image boundary; boundary connectivity ``BndCon = Len_bnd / sqrt(Area)`` gives the background
  probability ``w_bg = 1 - exp(-BndCon^2 / (2 sigma_bndcon^2))``; background-weighted contrast gives ``w_fg``; the map
  minimises ``sum w_bg s^2 + sum w_fg (s - 1)^2 + sum_adjacent w_ij (s_i - s_j)^2`` (one sparse linear solve).
  Paper values: ``sigma_clr = 10`` (Lab units), ``sigma_bndcon = 1``, ``sigma_spa = 0.25``, ``mu = 0.1``, 250
  superpixels. *Choice:* as in the authors' code, the boundary superpixels are also linked to each other for the
  geodesic distances (so a background split by the object still counts as boundary-connected); the smoothness sum
  counts each adjacent pair once.
* **MR** (Yang, Zhang, Lu, Ruan, Yang, CVPR 2013, "Saliency detection via graph-based manifold ranking"). A graph of
  adjacent and 2-hop superpixels plus a clique on the boundary, ``w_ij = exp(-d_ij / sigma^2)`` with the Lab distances
  of the edges scaled to [0, 1] and ``sigma^2 = 0.1``; ranking ``f = (D - alpha W)^-1 y`` with ``alpha = 0.99`` and the
  diagonal of the inverse zeroed. Stage 1 ranks against each side's boundary superpixels and multiplies the four
  ``1 - f`` maps; stage 2 thresholds that map at its **mean** (the paper; one public port uses the median) and ranks
  against the foreground. (The method is the subject of an OMRON patent; selfsup's code is written from the paper.)
* **MC** (Jiang, Wang, Lu, Yang, Yang, ICCV 2013, "Saliency detection via absorbing Markov chain"). Every superpixel is
  a transient state; the boundary superpixels are copied as absorbing states. Affinities ``exp(-d_ij / sigma^2)``
  (``sigma^2 = 0.1``, edge distances scaled as in MR) over adjacent and 2-hop superpixels and the boundary clique, with
  self-loops; a copy has its original's edges and an edge to its original. Saliency is the expected time to absorption
  ``(I - Q)^-1 1`` of the row-normalised chain. The paper's optional refinement step (for objects touching the border)
  is not applied.
* **DSR** (Li, Lu, Zhang, Ruan, Yang, ICCV 2013, "Saliency detection via dense and sparse reconstruction"). Superpixel
  features ``(L, a, b, R, G, B, x, y)`` scaled to [0, 1]; the boundary superpixels are the background templates. Dense
  error: residual of the PCA reconstruction from the templates' principal components (*choice:* the components that
  keep 95 % of the templates' variance; the paper does not say how many). Sparse error: residual of the Lasso coding
  over the templates, ``lambda = 0.01``, solved for all superpixels at once by FISTA. Each error is propagated within
  K-means clusters (K = 8, ``tau = 0.5``, Gaussian weights with ``sigma^2`` = the sum of the feature variances),
  combined over SLIC scales at the pixel level with weights ``1 / ||f_z - x_segment||``, refined by the object-biased
  Gaussian (centred at the error map's centroid, ``sigma = 0.25`` of the side), and the dense and sparse maps are fused
  by Bayesian integration (each map as the prior for the other's likelihood, 64-bin histograms, threshold at the mean).
  Paper scales: 8 from 50 to 400 superpixels (the default).

Every map is min-max normalised to [0, 1]; a map that is constant (a blank image) is all zeros. *Choice for small
images:* the superpixel count is capped at one per 16 pixels (:data:`MIN_SEGMENT_PIXELS`), so the papers' 200-400
superpixels become 64 on a 32 px image (DSR's scales then coincide and are computed once each).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, cast

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from scipy.sparse.linalg import spsolve
from scipy.spatial.distance import cdist
from skimage.color import rgb2lab
from skimage.segmentation import slic

__all__ = ["SuperpixelGraph", "superpixel_graph", "rbd", "rbd_optimise", "mr", "mc", "dsr", "HANDCRAFTED",
           "handcrafted", "saliency_maps", "normalise"]


#: Small images get fewer superpixels: at least this many pixels each (a 32 px image has 64 at most, not 250).
MIN_SEGMENT_PIXELS = 16
MIN_SEGMENTS = 8


def normalise(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as float32; a constant array becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros(x.shape, np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


@dataclass
class SuperpixelGraph:
    """SLIC superpixels of one image and their statistics.

    ``labels (H, W)`` superpixel index per pixel (0..n-1, every index used); ``lab (n, 3)`` mean CIE-Lab colour;
    ``rgb (n, 3)`` mean RGB in [0, 1]; ``xy (n, 2)`` mean position (x = column, y = row), both in [0, 1];
    ``adjacency`` symmetric boolean CSR ``(n, n)`` of 4-neighbour adjacent superpixels (no diagonal); ``sides (4, n)``
    whether a superpixel touches the top, bottom, left and right side; ``boundary (n,)`` any of them.
    """

    labels: np.ndarray
    lab: np.ndarray
    rgb: np.ndarray
    xy: np.ndarray
    adjacency: sp.csr_matrix
    sides: np.ndarray

    @property
    def n(self) -> int:
        return len(self.lab)

    @property
    def boundary(self) -> np.ndarray:
        return cast(np.ndarray, self.sides.any(0))  # sides is (n, 4): the reduction is an array, never a scalar

    def to_pixels(self, values: np.ndarray) -> np.ndarray:
        """Per-superpixel values painted onto the image grid."""
        return np.asarray(values)[self.labels]


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"saliency expects an (H, W, 3) or (H, W) image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def superpixel_graph(image: np.ndarray, n_segments: int = 250, compactness: float = 10.0,
                     sigma: float = 1.0) -> SuperpixelGraph:
    """SLIC superpixels of ``image`` (``(H, W, 3)`` in [0, 1] or uint8) and their colours, positions and adjacency."""
    image = _as_image(image)
    h, w = image.shape[:2]
    n_segments = max(MIN_SEGMENTS, min(int(n_segments), h * w // MIN_SEGMENT_PIXELS))
    raw = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0, channel_axis=-1)
    _, labels = np.unique(raw, return_inverse=True)
    labels = labels.reshape(h, w)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = [np.bincount(flat, values[:, c], minlength=n) for c in range(values.shape[1])]
        return np.stack(sums, 1) / count[:, None]

    lab = mean(rgb2lab(image).reshape(-1, 3))
    rgb = mean(image.reshape(-1, 3))
    rows, cols = np.mgrid[0:h, 0:w]
    xy = mean(np.stack([cols.ravel() / max(w - 1, 1), rows.ravel() / max(h - 1, 1)], 1))
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adj = sp.coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).tocsr()
    sides = np.zeros((4, n), bool)
    for k, edge in enumerate((labels[0], labels[-1], labels[:, 0], labels[:, -1])):
        sides[k, np.unique(edge)] = True
    return SuperpixelGraph(labels, lab, rgb, xy, adj, sides)


def _two_hop(adj: sp.csr_matrix) -> sp.csr_matrix:
    a = adj.astype(np.int32)
    two = ((a + a @ a) > 0).tolil()
    two.setdiag(False)
    return two.tocsr()


def _boundary_clique(g: SuperpixelGraph) -> sp.csr_matrix:
    b = g.boundary.astype(np.int8)
    clique = sp.csr_matrix(np.outer(b, b).astype(bool))
    clique.setdiag(False)
    clique.eliminate_zeros()
    return clique


def _edge_affinity(g: SuperpixelGraph, edges: np.ndarray, sigma2: float) -> np.ndarray:
    """Dense ``exp(-d_ij / sigma2)`` on the edges (boolean ``(n, n)``), Lab distances of the edges scaled to [0, 1]."""
    d = cdist(g.lab, g.lab)
    on = d[edges]
    lo, hi = (float(on.min()), float(on.max())) if on.size else (0.0, 1.0)
    scaled = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
    return np.where(edges, np.exp(-scaled / sigma2), 0.0)


def rbd(image: np.ndarray, n_segments: int = 250, compactness: float = 10.0, sigma_clr: float = 10.0,
        sigma_bndcon: float = 1.0, sigma_spa: float = 0.25, mu: float = 0.1) -> np.ndarray:
    """Robust Background Detection saliency (Zhu et al. 2014); see the module docstring."""
    g = superpixel_graph(image, n_segments, compactness)
    d_app = cdist(g.lab, g.lab)
    edges = (g.adjacency + _boundary_clique(g)).tocoo()
    # Edge length = colour distance; a tiny floor keeps equal-colour neighbours connected in the sparse graph.
    graph = sp.csr_matrix((d_app[edges.row, edges.col] + 1e-6, (edges.row, edges.col)), shape=(g.n, g.n))
    d_geo = dijkstra(graph, directed=False)
    span = np.exp(-d_geo ** 2 / (2 * sigma_clr ** 2))
    area = span.sum(1)
    len_bnd = span[:, g.boundary].sum(1)
    bndcon = len_bnd / np.sqrt(area)
    w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * sigma_bndcon ** 2))
    w_spa = np.exp(-cdist(g.xy, g.xy) ** 2 / (2 * sigma_spa ** 2))
    w_fg = normalise((d_app * w_spa * w_bg[None, :]).sum(1)).astype(np.float64)
    adj = g.adjacency.tocoo()
    w = sp.csr_matrix((np.exp(-d_app[adj.row, adj.col] ** 2 / (2 * sigma_clr ** 2)) + mu, (adj.row, adj.col)),
                      shape=(g.n, g.n))
    return normalise(g.to_pixels(np.clip(rbd_optimise(w_bg, w_fg, w), 0.0, None)))


def rbd_optimise(w_bg: np.ndarray, w_fg: np.ndarray, w: sp.spmatrix) -> np.ndarray:
    """RBD's saliency: the minimiser of ``sum_i w_bg_i s_i^2 + sum_i w_fg_i (s_i - 1)^2 + sum_{i<j} w_ij (s_i - s_j)^2``
    (``w`` symmetric, each pair once), i.e. the solution of ``(diag(w_bg + w_fg) + L) s = w_fg`` with ``L`` the graph
    Laplacian of ``w``."""
    w = sp.csr_matrix(w)
    laplacian = sp.diags(np.asarray(w.sum(1)).ravel()) - w
    return spsolve((sp.diags(w_bg + w_fg) + laplacian).tocsc(), np.asarray(w_fg, dtype=np.float64))


def _ranking(affinity: np.ndarray, alpha: float) -> np.ndarray:
    a = np.linalg.inv(np.diag(affinity.sum(1)) - alpha * affinity)
    np.fill_diagonal(a, 0.0)
    return a


def mr(image: np.ndarray, n_segments: int = 200, compactness: float = 10.0, sigma2: float = 0.1,
       alpha: float = 0.99) -> np.ndarray:
    """Graph-based manifold ranking saliency (Yang et al. 2013); see the module docstring."""
    g = superpixel_graph(image, n_segments, compactness)
    edges = (_two_hop(g.adjacency) + _boundary_clique(g)).toarray()
    a = _ranking(_edge_affinity(g, edges, sigma2), alpha)
    stage1 = np.ones(g.n)
    for side in g.sides:
        stage1 *= 1.0 - normalise(a @ side.astype(np.float64))
    query = (stage1 >= stage1.mean()).astype(np.float64)
    return normalise(g.to_pixels(normalise(a @ query)))


def mc(image: np.ndarray, n_segments: int = 250, compactness: float = 10.0, sigma2: float = 0.1) -> np.ndarray:
    """Absorbing Markov chain saliency (Jiang et al. 2013); see the module docstring."""
    g = superpixel_graph(image, n_segments, compactness)
    edges = (_two_hop(g.adjacency) + _boundary_clique(g)).toarray()
    w = _edge_affinity(g, edges, sigma2)
    transient = w + np.eye(g.n)  # a_ii = 1
    b = np.flatnonzero(g.boundary)
    absorbing = transient[:, b]  # the copy of boundary node j: j's edges, and an edge to j itself (weight 1)
    degree = transient.sum(1) + absorbing.sum(1)
    q = transient / degree[:, None]
    absorbed_time = np.linalg.solve(np.eye(g.n) - q, np.ones(g.n))
    return normalise(g.to_pixels(absorbed_time))


def _lasso_fista(x: np.ndarray, d: np.ndarray, lam: float, iters: int = 300, tol: float = 1e-7) -> np.ndarray:
    """``argmin_a ||x_i - D a_i||^2 + lam ||a_i||_1`` for every row ``x_i`` of ``x (n, f)``, ``D (f, m)``; ``(n, m)``.
    FISTA for all rows at once, stopped when no code moves by more than ``tol`` (or after ``iters`` steps)."""
    lipschitz = 2.0 * np.linalg.norm(d, 2) ** 2 + 1e-12
    gram, xd = d.T @ d, x @ d
    a = np.zeros((x.shape[0], d.shape[1]))
    y, t = a, 1.0
    for _ in range(iters):
        z = y - 2.0 * (y @ gram - xd) / lipschitz
        a_next = np.sign(z) * np.maximum(np.abs(z) - lam / lipschitz, 0.0)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = a_next + ((t - 1.0) / t_next) * (a_next - a)
        done = np.abs(a_next - a).max() < tol
        a, t = a_next, t_next
        if done:
            break
    return a


def _kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Labels of a small, seeded Lloyd k-means (k-means++ start); deterministic per image."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = cdist(x, np.stack(centres), "sqeuclidean").min(1)
        total = d2.sum()
        centres.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.stack(centres)
    labels = np.zeros(len(x), int)
    for _ in range(iters):
        new = cdist(x, c, "sqeuclidean").argmin(1)
        count = np.bincount(new, minlength=k)
        sums = np.stack([np.bincount(new, x[:, f], minlength=k) for f in range(x.shape[1])], 1)
        c = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], c)
        if (new == labels).all():
            break
        labels = new
    return labels


def _context_weights(feats: np.ndarray, clusters: int) -> np.ndarray:
    """DSR's propagation weights: Gaussian feature affinities within K-means clusters, self excluded."""
    labels = _kmeans(feats, clusters)
    sigma2 = float(feats.var(0).sum()) + 1e-12
    w = np.exp(-cdist(feats, feats, "sqeuclidean") / (2 * sigma2))
    w *= labels[:, None] == labels[None, :]
    np.fill_diagonal(w, 0.0)
    return w


def _propagate(errors: np.ndarray, w: np.ndarray, tau: float) -> np.ndarray:
    """DSR's context-based propagation of per-segment errors with :func:`_context_weights`."""
    total = w.sum(1)
    neighbours = np.divide(w @ errors, total, out=errors.copy(), where=total > 0)
    return np.where(total > 0, tau * neighbours + (1 - tau) * errors, errors)


def _dsr_features(lab: np.ndarray, rgb: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.concatenate([lab[..., :1] / 100.0, (lab[..., 1:] + 128.0) / 255.0, rgb, xy], -1)


def _bayes(prior: np.ndarray, other: np.ndarray, bins: int = 64) -> np.ndarray:
    fg = prior >= prior.mean()
    idx = np.minimum((other * bins).astype(int), bins - 1)
    like_fg = np.bincount(idx[fg], minlength=bins) / max(int(fg.sum()), 1)
    like_bg = np.bincount(idx[~fg], minlength=bins) / max(int((~fg).sum()), 1)
    num = prior * like_fg[idx]
    den = num + (1 - prior) * like_bg[idx]
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def dsr(image: np.ndarray, scales: Sequence[int] = (50, 100, 150, 200, 250, 300, 350, 400), compactness: float = 10.0,
        lam: float = 0.01, variance_kept: float = 0.95, clusters: int = 8, tau: float = 0.5) -> np.ndarray:
    """Dense and sparse reconstruction saliency (Li et al. 2013); see the module docstring."""
    img = _as_image(image)
    h, w = img.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    pixel_feats = _dsr_features(rgb2lab(img), img, np.stack([cols / max(w - 1, 1), rows / max(h - 1, 1)], -1))
    sums = {"dense": np.zeros((h, w)), "sparse": np.zeros((h, w))}
    weight = np.zeros((h, w))
    effective = sorted({max(MIN_SEGMENTS, min(int(n), h * w // MIN_SEGMENT_PIXELS)) for n in scales})
    for n_segments in effective:
        g = superpixel_graph(img, n_segments, compactness)
        feats = _dsr_features(g.lab, g.rgb, g.xy)
        templates = feats[g.boundary]
        centre = templates.mean(0)
        _, sv, vt = np.linalg.svd(templates - centre, full_matrices=False)
        var = sv ** 2
        keep = int(np.searchsorted(np.cumsum(var) / max(var.sum(), 1e-12), variance_kept) + 1)
        u = vt[:keep].T  # (f, keep)
        recon = (feats - centre) @ u @ u.T + centre
        dense = ((feats - recon) ** 2).sum(1)
        codes = _lasso_fista(feats, templates.T, lam)
        sparse = ((feats - codes @ templates) ** 2).sum(1)
        omega = 1.0 / (np.linalg.norm(pixel_feats - feats[g.labels], axis=-1) + 1e-6)
        weight += omega
        context = _context_weights(feats, clusters)
        for name, err in (("dense", dense), ("sparse", sparse)):
            sums[name] += omega * _propagate(err, context, tau)[g.labels]
    maps = []
    for name in ("dense", "sparse"):
        e = normalise(sums[name] / weight).astype(np.float64)
        mass = e.sum()
        x0, y0 = ((e * cols).sum() / mass, (e * rows).sum() / mass) if mass > 0 else ((w - 1) / 2, (h - 1) / 2)
        gauss = np.exp(-((cols - x0) ** 2 / (2 * (0.25 * w) ** 2) + (rows - y0) ** 2 / (2 * (0.25 * h) ** 2)))
        maps.append(normalise(e * gauss).astype(np.float64))
    s_d, s_s = maps
    return normalise(_bayes(s_d, s_s) + _bayes(s_s, s_d))


HANDCRAFTED: Dict[str, Callable[..., np.ndarray]] = {"rbd": rbd, "mr": mr, "dsr": dsr, "mc": mc}


def handcrafted(name: str) -> Callable[..., np.ndarray]:
    """The handcrafted method called ``name`` (one of :data:`HANDCRAFTED`)."""
    if name not in HANDCRAFTED:
        raise ValueError(f"unknown handcrafted saliency method {name!r}; choose from {', '.join(HANDCRAFTED)}")
    return HANDCRAFTED[name]


def _map_chunk(args: Tuple[str, np.ndarray]) -> np.ndarray:
    name, images = args
    fn = HANDCRAFTED[name]
    return np.stack([np.round(fn(im.transpose(1, 2, 0)) * 255).astype(np.uint8) for im in images])


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def saliency_maps(images: np.ndarray, method: str, workers: Optional[int] = None, chunk: int = 16,
                  progress: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, float]:
    """``method``'s map of every image of ``images (N, 3, H, W) uint8`` as ``uint8 (N, H, W)`` (255 = salient), computed
    in ``workers`` processes (default: the CPU count), and the images/s it ran at. ``progress(k)`` is called with the
    number of images of each finished chunk, in order."""
    handcrafted(method)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"saliency_maps expects uint8 images (N, 3, H, W), got {images.dtype} {images.shape}")
    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(method, images[i:i + chunk]) for i in range(0, len(images), chunk)]
    start = time.perf_counter()
    out = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            out.append(_map_chunk(job))
            if progress:
                progress(len(job[1]))
    else:
        with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
            for job, maps in zip(jobs, pool.map(_map_chunk, jobs)):
                out.append(maps)
                if progress:
                    progress(len(job[1]))
    seconds = time.perf_counter() - start
    maps = np.concatenate(out) if out else np.zeros((0, *images.shape[2:]), np.uint8)
    return maps, len(images) / max(seconds, 1e-9)
