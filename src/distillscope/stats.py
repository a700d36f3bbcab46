"""How sure is a number: resampling weights seeded by sample id, and the intervals built on them.

The engine's bootstrap (``analyze(bootstrap=B)``, ``docs/metrics.md#intervals``) is a **group
bootstrap**: every sample belongs to one of ``G`` groups by a hash of its id and a seed
(``sample_groups``), the accumulators keep one state per group, and replicate ``b`` weights
group ``g`` by ``w[b, g]``, multinomial counts over the groups (``replicate_weights``). The
groups depend on the ids alone, so a store read in other blocks, in shards merged, or rerun,
gives the same replicates. The delete-one-group jackknife of the same states gives the BCa
acceleration and the bias estimate. Everything here is also usable on plain arrays of
replicate values.

References
----------
Efron & Tibshirani, *An Introduction to the Bootstrap* (1993): percentile interval (ch. 13),
BCa (ch. 14, eqs. 14.9-14.15), jackknife bias (ch. 11). Steele, Lea & Flood, "Fast splittable
pseudorandom number generators" (OOPSLA 2014): splitmix64.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special

from ._errors import InputError

__all__ = ["splitmix64", "sample_groups", "replicate_weights", "jackknife_weights",
           "percentile_interval", "bca_interval", "jackknife_interval", "interval", "paired",
           "jackknife_bias",
           "t_interval", "INTERVAL_METHODS"]

#: the interval methods ``interval`` and ``analyze(interval=...)`` know
INTERVAL_METHODS = ("percentile", "bca", "jackknife")


def splitmix64(ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random 64-bit hash of each (integer) id: splitmix64's finaliser."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_groups(sample_ids: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """The resampling group of each sample: ``splitmix64(id XOR splitmix64(seed)) mod G``.

    A sample's group depends only on its id and the seed: not on the store's order, its
    blocks or which shard holds it.
    """
    if int(groups) < 2:
        raise InputError(f"bootstrap groups must be at least 2; got {groups!r}")
    key = splitmix64(np.array([seed], dtype=np.int64))[0]
    ids = np.asarray(sample_ids).astype(np.uint64)
    return (splitmix64(ids ^ key) % np.uint64(groups)).astype(np.int64)


def replicate_weights(replicates: int, groups: int, seed: int = 0) -> np.ndarray:
    """``(B, G)`` multinomial counts: replicate ``b`` draws ``G`` groups with replacement.

    Seeded by ``(seed, G)`` alone, so every reader of the same store draws the same ones.
    """
    if int(replicates) < 1:
        raise InputError(f"bootstrap replicates must be a positive integer; got {replicates!r}")
    rng = np.random.default_rng([int(seed), int(groups), 0x62_6F_6F_74])  # "boot"
    return rng.multinomial(int(groups), np.full(int(groups), 1.0 / groups),
                           size=int(replicates)).astype(np.float64)


def jackknife_weights(groups: int) -> np.ndarray:
    """``(G, G)`` weights of the delete-one-group jackknife: row ``g`` leaves group ``g`` out."""
    return 1.0 - np.eye(int(groups))


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise InputError(f"confidence level must be between 0 and 1 (0.95 for 95%); got {level}")
    return level


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
    r"""Percentile interval: the :math:`\alpha/2` and :math:`1-\alpha/2` quantiles of the
    replicate values along axis 0 (Efron & Tibshirani 1993, eq. 13.5).

    Replicates that are NaN (a metric refused on a replicate) are left out; an entry with
    fewer than half its replicates finite gets NaN.

    Returns
    -------
    ndarray of shape ``(2,) + replicates.shape[1:]``: low, high.
    """
    alpha = 1.0 - _check_level(level)
    return _quantiles(np.asarray(replicates, dtype=np.float64),
                      np.full(np.shape(replicates)[1:], alpha / 2),
                      np.full(np.shape(replicates)[1:], 1 - alpha / 2))


def _quantiles(reps: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-entry quantiles ``low`` and ``high`` (arrays of the entry shape) of ``reps``."""
    flat = reps.reshape(reps.shape[0], -1)
    lo, hi = np.ravel(low), np.ravel(high)
    out = np.full((2, flat.shape[1]), np.nan)
    finite = np.isfinite(flat)
    for j in range(flat.shape[1]):
        values = flat[finite[:, j], j]
        if values.size * 2 < flat.shape[0] or not (np.isfinite(lo[j]) and np.isfinite(hi[j])):
            continue
        out[:, j] = np.quantile(values, [lo[j], hi[j]])
    return out.reshape((2,) + reps.shape[1:])


def bca_interval(estimate, replicates: np.ndarray, jackknife: np.ndarray,
                 level: float = 0.95) -> np.ndarray:
    r"""Bias-corrected and accelerated (BCa) interval (Efron & Tibshirani 1993, ch. 14).

    With :math:`\hat z_0 = \Phi^{-1}(\#\{\theta^*_b < \hat\theta\}/B)` (ties count half) and
    the acceleration from the jackknife values :math:`\theta_{(i)}`,
    :math:`\hat a = \sum(\bar\theta - \theta_{(i)})^3 / (6 [\sum(\bar\theta -
    \theta_{(i)})^2]^{3/2})`, the bounds are the replicate quantiles at
    :math:`\alpha_{1,2} = \Phi(\hat z_0 + (\hat z_0 + z_{\alpha/2, 1-\alpha/2}) /
    (1 - \hat a(\hat z_0 + z)))`.

    Parameters
    ----------
    estimate : float or ndarray
        The estimate on all samples (the entry shape).
    replicates : ndarray ``(B, ...)``
    jackknife : ndarray ``(G, ...)``
        The estimate with each group left out in turn.
    level : float

    Returns
    -------
    ndarray ``(2, ...)``: low, high. NaN where the replicates all lie on one side of the
    estimate (a statistic biased by more than its spread: no bias correction exists; a
    percentile interval there would not contain the estimate) or fewer than half are finite.
    """
    alpha = 1.0 - _check_level(level)
    reps = np.asarray(replicates, dtype=np.float64)
    theta = np.broadcast_to(np.asarray(estimate, dtype=np.float64), reps.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        finite = np.isfinite(reps)
        count = finite.sum(axis=0)
        below = ((reps < theta) & finite).sum(axis=0) + 0.5 * ((reps == theta) & finite).sum(0)
        # every replicate on one side of the estimate (a statistic biased by more than its
        # spread): z0 is infinite, no bias correction exists, the interval is NaN
        z0 = special.ndtri(below / np.maximum(count, 1))
        jack = np.asarray(jackknife, dtype=np.float64)
        dev = np.nanmean(jack, axis=0) - jack
        a = np.nansum(dev**3, axis=0) / (6.0 * np.nansum(dev**2, axis=0) ** 1.5)
        a = np.where(np.isfinite(a), a, 0.0)
        z = special.ndtri(np.array([alpha / 2, 1 - alpha / 2]))
        shifted = [z0 + (z0 + zi) / (1 - a * (z0 + zi)) for zi in z]
        low, high = (special.ndtr(s) for s in shifted)
    bad = ~np.isfinite(z0)
    low, high = np.where(bad, np.nan, low), np.where(bad, np.nan, high)
    return _quantiles(reps, low, high)


def jackknife_interval(estimate, jackknife: np.ndarray, level: float = 0.95) -> np.ndarray:
    r"""Delete-one-group jackknife interval: the bias-corrected estimate
    :math:`\tilde\theta = G\hat\theta - (G - 1)\bar\theta_{(\cdot)}` (the mean of the
    pseudo-values :math:`G\hat\theta - (G - 1)\theta_{(g)}`) plus or minus
    :math:`t_{G-1, 1-\alpha/2}` times their standard error (Efron & Tibshirani 1993, ch. 11;
    Tukey's pseudo-values). No sample is repeated, so a statistic biased by repeated samples
    (an effective rank) is not pushed further; ``G`` replicates instead of ``B``.

    Returns
    -------
    ndarray ``(2, ...)``: low, high.
    """
    jack = np.asarray(jackknife, dtype=np.float64)
    g = jack.shape[0]
    pseudo = g * np.asarray(estimate, dtype=np.float64) - (g - 1) * jack
    found = t_interval(pseudo, level)
    return np.stack([found["low"], found["high"]])


def interval(estimate, replicates: np.ndarray, jackknife: np.ndarray | None = None, *,
             level: float = 0.95, method: str = "percentile") -> np.ndarray:
    """``percentile_interval``, ``bca_interval`` or ``jackknife_interval`` (the last two need
    ``jackknife``) by name."""
    if method == "percentile":
        return percentile_interval(replicates, level)
    if method == "jackknife":
        if jackknife is None:
            raise InputError("the jackknife interval needs the jackknife values (jackknife=)")
        return jackknife_interval(estimate, jackknife, level)
    if method == "bca":
        if jackknife is None:
            raise InputError("the BCa interval needs the jackknife values (jackknife=)")
        return bca_interval(estimate, replicates, jackknife, level)
    raise InputError(f"interval method must be one of {', '.join(INTERVAL_METHODS)}; "
                     f"got {method!r}")


def paired(a: tuple, b: tuple, *, op: str = "difference", level: float = 0.95,
           method: str = "percentile") -> tuple[np.ndarray, np.ndarray]:
    """The estimate and interval of ``a - b`` (``op="difference"``) or ``a / b`` (``"ratio"``)
    from replicates of both drawn with the same weights (paired: the same resampled samples),
    which is narrower than combining two separate intervals when ``a`` and ``b`` co-vary.

    Parameters
    ----------
    a, b : tuple
        ``(estimate, replicates)`` or ``(estimate, replicates, jackknife)`` of each, replicate
        ``i`` of ``a`` and of ``b`` from the same weights (``replicate_weights``).

    Returns
    -------
    (estimate, interval ``(2, ...)``)
    """
    ops = {"difference": np.subtract, "ratio": np.divide}
    if op not in ops:
        raise InputError(f"op must be one of {', '.join(ops)}; got {op!r}")
    f = ops[op]
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = f(np.asarray(a[0], float), np.asarray(b[0], float))
        reps = f(np.asarray(a[1], float), np.asarray(b[1], float))
        jack = (f(np.asarray(a[2], float), np.asarray(b[2], float))
                if len(a) > 2 and len(b) > 2 else None)
    return estimate, interval(estimate, reps, jack, level=level, method=method)


def jackknife_bias(estimate, jackknife: np.ndarray) -> np.ndarray:
    r"""The delete-one-group jackknife estimate of the bias,
    :math:`(G - 1)(\bar\theta_{(\cdot)} - \hat\theta)` (Efron & Tibshirani 1993, eq. 11.5)."""
    jack = np.asarray(jackknife, dtype=np.float64)
    return (jack.shape[0] - 1) * (np.nanmean(jack, axis=0) - np.asarray(estimate, float))


def t_interval(values: np.ndarray, level: float = 0.95, axis: int = 0) -> dict[str, np.ndarray]:
    r"""Mean, standard deviation (ddof 1) and Student-t interval over independent runs (seeds):
    :math:`\bar x \pm t_{k-1, 1-\alpha/2}\, s / \sqrt{k}`; NaN bounds below two runs.

    Returns
    -------
    dict with ``mean``, ``std``, ``low``, ``high``, ``count``.
    """
    alpha = 1.0 - _check_level(level)
    x = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    k = np.isfinite(x).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries stay NaN
        mean = np.nanmean(x, axis=0) if x.shape[0] else np.full(x.shape[1:], np.nan)
        std = np.sqrt(np.nansum((x - mean) ** 2, axis=0) / (k - 1))
        half = special.stdtrit(np.maximum(k - 1, 1), 1 - alpha / 2) * std / np.sqrt(k)
    half = np.where(k >= 2, half, np.nan)
    std = np.where(k >= 2, std, np.nan)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "count": k}
