"""Slow, obvious reference implementations that the fast paths are tested against.

Everything here works on the whole data matrix in memory, with SVDs and Python loops, and
follows the written definitions in docs/metrics.md line by line. Nothing here is fast.
"""

from __future__ import annotations

import math

import numpy as np


def preprocess(z, *, center: bool, l2_normalize: bool) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if l2_normalize:
        norms = np.sqrt((z * z).sum(axis=1, keepdims=True))
        z = z / np.maximum(norms, 1e-12)
    if center:
        z = z - z.mean(axis=0)
    return z


def singular_values(z, *, center: bool = True, l2_normalize: bool = False) -> np.ndarray:
    """All min(n, d) singular values of the (preprocessed) data matrix, descending."""
    return np.linalg.svd(preprocess(z, center=center, l2_normalize=l2_normalize),
                         compute_uv=False)


def spectrum(z, *, center: bool = True, l2_normalize: bool = False) -> np.ndarray:
    """Eigenvalues of Zc^T Zc / (n - 1) (or Z^T Z / n), length d, descending."""
    z = np.asarray(z)
    n, d = z.shape
    s = singular_values(z, center=center, l2_normalize=l2_normalize)
    lam = np.zeros(d)
    lam[: s.size] = s**2 / ((n - 1) if center else n)
    return lam


def entropy_rank(weights, eps: float = 0.0) -> float:
    """exp(-sum p ln(p + eps)) with p = w / sum(w), 0 ln 0 = 0, as a plain loop."""
    total = math.fsum(float(w) for w in weights)
    if total <= 0:
        return 0.0
    h = 0.0
    for w in weights:
        p = float(w) / total
        if p > 0:
            h -= p * math.log(p + eps)
    return math.exp(h)


def rankme(singular, eps: float = 1e-7) -> float:
    total = math.fsum(float(s) for s in singular)
    h = 0.0
    for s in singular:
        p = float(s) / total + eps
        h -= p * math.log(p)
    return math.exp(h)


def participation_ratio(lam) -> float:
    return math.fsum(lam) ** 2 / math.fsum(x * x for x in lam)


def stable_rank(lam) -> float:
    return math.fsum(lam) / max(lam)


def n_components(lam, threshold: float) -> int:
    total = math.fsum(lam)
    running = 0.0
    for k, x in enumerate(sorted(lam, reverse=True), start=1):
        running += x / total
        if running >= threshold - 1e-12:
            return k
    return len(lam)


def powerlaw_alpha(lam, start: int = 11, stop: int = 100) -> float:
    """Weighted least squares by the normal equations, written out."""
    total = math.fsum(lam)
    sw = swx = swy = swxx = swxy = 0.0
    for i in range(start, stop + 1):
        w = 1.0 / i
        x = -math.log(i)
        y = math.log(lam[i - 1] / total)
        sw += w; swx += w * x; swy += w * y; swxx += w * x * x; swxy += w * x * y
    return (sw * swxy - swx * swy) / (sw * swxx - swx * swx)


def all_estimators(z, *, center=True, l2_normalize=False, eps=0.0):
    """Every estimator of distillscope.ESTIMATORS by its definition (rankme uncentred)."""
    lam = spectrum(z, center=center, l2_normalize=l2_normalize)
    s = singular_values(z, center=center, l2_normalize=l2_normalize)
    s_uncentred = singular_values(z, center=False, l2_normalize=l2_normalize)
    return {
        "erank_variance": entropy_rank(lam, eps),
        "erank_singular": entropy_rank(np.sqrt(lam), eps),
        "rankme": rankme(s_uncentred),
        "participation_ratio": participation_ratio(lam),
        "stable_rank": stable_rank(lam),
        "n_components_90": n_components(lam, 0.90),
        "n_components_95": n_components(lam, 0.95),
        "n_components_99": n_components(lam, 0.99),
        "_singular": s,
    }


def with_spectrum(singular, n: int, rng: np.random.Generator, d: int | None = None) -> np.ndarray:
    """An n x d matrix whose centred singular values are exactly ``singular`` (columns of U
    orthogonal to the ones vector, so centring leaves it unchanged)."""
    singular = np.asarray(singular, dtype=np.float64)
    k = singular.size
    d = k if d is None else d
    a = rng.standard_normal((n, k))
    a -= a.mean(axis=0)
    u, _ = np.linalg.qr(a)
    v, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return (u * singular) @ v.T
