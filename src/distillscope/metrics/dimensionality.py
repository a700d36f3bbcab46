"""Effective dimensionality of a representation: the array layer (ndarrays in, ndarrays out).

Every estimator is a function of an eigen-spectrum ``lam`` (eigenvalues of ``Zc^T Zc / (n-1)``,
descending, float64) so that streamed and in-memory data share one code path; ``effective_rank``
and ``eigenspectrum`` take the data matrix ``Z`` (n samples x d features) directly.
Natural log everywhere, ``0 ln 0 = 0``. Definitions and sources: ``docs/metrics.md``.

Always true on the same centred spectrum:
``stable_rank <= participation_ratio <= erank_variance <= erank_singular <= rank``.
A spectrum that is all zero (constant features) has every rank equal to 0 and no power law.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from .._errors import InputError
from .moments import SecondMoments
from .registry import (FAMILY, REGISTRY, REPRESENTATION, STUDENT_STUDENT, TEACHER_STUDENT,
                       Metric, metric, register)

__all__ = [
    "ESTIMATORS",
    "eigenspectrum",
    "effective_rank",
    "erank_variance",
    "erank_singular",
    "rankme",
    "participation_ratio",
    "stable_rank",
    "seed_averaged_spectrum",
    "n_components",
    "powerlaw_alpha",
    "seed_averaged_erank",
    "rank_from_spectrum",
]


def _normalised(weights: np.ndarray) -> np.ndarray | None:
    total = weights.sum()
    if not total > 0:
        return None
    return weights / total


def _entropy(p: np.ndarray, eps: float) -> float:
    """``-sum_{p_k > 0} p_k ln(p_k + eps)``."""
    p = p[p > 0]
    return float(-(p * np.log(p + eps)).sum())


def erank_variance(lam: np.ndarray, eps: float = 0.0) -> float:
    r"""Variance-based Shannon effective rank.

    .. math:: \exp\Big(-\sum_k p_k \ln(p_k + \epsilon)\Big), \quad p_k = \lambda_k / \sum_j \lambda_j

    Parameters
    ----------
    lam : ndarray
        Eigenvalues of the (centred) covariance, ``lam_k = s_k^2 / (n - 1)``.
    eps : float, default 0
        Added inside the logarithm; arXiv 2603.06698's code uses 1e-10.

    Returns
    -------
    float
        Between 1 and the number of non-zero eigenvalues; 0 for an all-zero spectrum.

    References
    ----------
    arXiv 2603.06698, eq. 2 (variance-based effective rank of distilled embeddings).
    """
    p = _normalised(np.asarray(lam, dtype=np.float64))
    return 0.0 if p is None else float(np.exp(_entropy(p, eps)))


def erank_singular(lam: np.ndarray, eps: float = 0.0) -> float:
    r"""Effective rank of Roy & Vetterli on singular values.

    .. math:: \exp\Big(-\sum_k p_k \ln(p_k + \epsilon)\Big), \quad p_k = s_k / \sum_j s_j,
       \; s_k = \sqrt{\lambda_k}

    References
    ----------
    O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.
    """
    s = np.sqrt(np.asarray(lam, dtype=np.float64))
    p = _normalised(s)
    return 0.0 if p is None else float(np.exp(_entropy(p, eps)))


def rankme(lam: np.ndarray, n_values: int | None = None, eps: float = 1e-7) -> float:
    r"""RankMe, as published: singular-value entropy with ``eps`` added to every probability.

    .. math:: \exp\Big(-\sum_{k=1}^{\min(n,d)} p_k \ln p_k\Big), \quad
       p_k = s_k / \lVert s \rVert_1 + \epsilon

    Parameters
    ----------
    lam : ndarray
        Eigenvalues of ``Z^T Z / n`` of the *uncentred* embeddings, as published (pass a
        centred spectrum for a centred variant).
    n_values : int, optional
        ``min(n, d)``, the number of singular values of Z; defaults to ``len(lam)``. The
        ``eps`` terms of zero singular values count, as in the official code.
    eps : float, default 1e-7

    References
    ----------
    Q. Garrido, R. Balestriero, L. Najman, Y. LeCun, "RankMe: assessing the downstream
    performance of pretrained self-supervised representations by their rank",
    arXiv 2210.02885 (ICML 2023).
    """
    lam = np.asarray(lam, dtype=np.float64)
    if n_values is not None:
        lam = lam[:n_values]
    s = np.sqrt(lam)
    p = _normalised(s)
    if p is None:
        return 0.0
    p = p + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(lam: np.ndarray) -> float:
    r"""Participation ratio :math:`(\sum_k \lambda_k)^2 / \sum_k \lambda_k^2`.

    The exponential of the order-2 Rényi entropy of ``p = lam / sum(lam)``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    total = lam.sum()
    return 0.0 if not total > 0 else float(total**2 / (lam**2).sum())


def stable_rank(lam: np.ndarray) -> float:
    r"""Stable (numerical) rank :math:`\lVert Z \rVert_F^2 / \lVert Z \rVert_2^2 = \sum_k \lambda_k / \lambda_1`.

    References
    ----------
    M. Rudelson and R. Vershynin, "Sampling from large matrices: an approach through geometric
    functional analysis", J. ACM 54(4), 2007.
    """
    lam = np.asarray(lam, dtype=np.float64)
    top = lam.max(initial=0.0)
    return 0.0 if not top > 0 else float(lam.sum() / top)


def n_components(lam: np.ndarray, threshold: float = 0.90) -> int:
    r"""Smallest k whose leading components explain at least ``threshold`` of the variance.

    .. math:: \min\{k : \sum_{i \le k} p_i \ge t - 10^{-12}\}, \quad p = \lambda / \sum \lambda

    arXiv 2603.06698 reports ``threshold = 0.90``. Returns 0 for an all-zero spectrum.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must lie in (0, 1]; got {threshold!r}")
    p = _normalised(np.asarray(lam, dtype=np.float64))
    if p is None:
        return 0
    k = int(np.searchsorted(np.cumsum(p), threshold - 1e-12, side="left")) + 1
    return min(k, p.size)


def powerlaw_alpha(lam: np.ndarray, fit_range: tuple[int, int] = (11, 100)) -> float:
    r"""Power-law decay coefficient alpha of the spectrum, fitted as alpha-ReQ does.

    Weighted least squares of :math:`\ln \hat\lambda_i` on :math:`[-\ln i, 1]` with weights
    :math:`1/i` over ranks ``i = fit_range[0] .. fit_range[1]`` (1-based, inclusive) of the
    normalised spectrum :math:`\hat\lambda = \lambda / \sum \lambda`. A spectrum
    :math:`\lambda_i \propto i^{-a}` gives exactly ``a``.

    Returns NaN when fewer than ``fit_range[1]`` eigenvalues are positive (the fit would use
    rounding noise), and for an all-zero spectrum.

    References
    ----------
    K. K. Agrawal, A. K. Mondal, A. Ghosh, B. Richards, "alpha-ReQ: Assessing representation
    quality in self-supervised learning by measuring eigenspectrum decay", NeurIPS 2022.
    """
    start, stop = int(fit_range[0]), int(fit_range[1])
    if not 1 <= start < stop:
        raise InputError(f"fit_range must be (start, stop) with 1 <= start < stop; got {fit_range!r}")
    lam = np.asarray(lam, dtype=np.float64)
    total = lam.sum()
    if not total > 0 or lam.size < stop or not lam[stop - 1] > 0:
        return float("nan")
    ranks = np.arange(start, stop + 1, dtype=np.float64)
    y = np.log(lam[start - 1 : stop] / total)
    design = np.stack([-np.log(ranks), np.ones_like(ranks)], axis=1)
    root_w = np.sqrt(1.0 / ranks)
    coef, *_ = np.linalg.lstsq(design * root_w[:, None], y * root_w, rcond=None)
    return float(coef[0])


def _estimator(name: str, center: bool, eps: float, definition: str, compute,
               source: str = "", tables: dict | None = None) -> Metric:
    """Declare an effective-rank estimator: one value along ``estimator`` of ``effective_rank``.

    ``compute(lam, eps=..., n_values=...)``: the engine passes the convention's eps and
    ``min(n, d)``; ``center`` and ``eps`` here are what the estimator's source publishes.
    """
    return register(Metric(
        name=name, long_name="effective rank", units="dimensions", takes=REPRESENTATION,
        statistic="spectrum", compute=compute, function=compute, definition=definition,
        anchor="estimators", source=source, family="dimensionality", variable="effective_rank",
        coordinate="estimator", center=center, eps=eps, tables=tables or {}, interval=True))


_estimator("erank_variance", True, 0.0,
           "exp(-sum p ln(p + eps)), p = lam / sum(lam); arXiv 2603.06698 eq. 2",
           lambda lam, eps=0.0, n_values=None: erank_variance(lam, eps),
           "arXiv 2603.06698 eq. 2")
_estimator("erank_singular", True, 0.0,
           "exp(-sum p ln(p + eps)), p = s / sum(s); Roy & Vetterli, EUSIPCO 2007",
           lambda lam, eps=0.0, n_values=None: erank_singular(lam, eps),
           "Roy & Vetterli, EUSIPCO 2007")
_estimator("rankme", False, 1e-7,
           "exp(-sum p ln p), p = s / sum(s) + eps over min(n, d) singular values of the "
           "uncentred embeddings; Garrido et al., arXiv 2210.02885",
           lambda lam, eps=1e-7, n_values=None: rankme(lam, n_values, eps),
           "Garrido et al., arXiv 2210.02885")
_estimator("participation_ratio", True, 0.0, "(sum lam)^2 / sum lam^2",
           lambda lam, eps=0.0, n_values=None: participation_ratio(lam))
_estimator("stable_rank", True, 0.0, "sum lam / lam_1; Rudelson & Vershynin, J. ACM 2007",
           lambda lam, eps=0.0, n_values=None: stable_rank(lam), "Rudelson & Vershynin, J. ACM 2007")
for _percent in (90, 95, 99):
    _estimator(f"n_components_{_percent}", True, 0.0,
               f"min k with cumsum(p)_k >= {_percent / 100:.2f} - 1e-12, p = lam / sum(lam)",
               lambda lam, eps=0.0, n_values=None, t=_percent / 100: float(n_components(lam, t)),
               "PCA convention; arXiv 2603.06698 reports 90%",
               {"rank": "dims@90%", "headline": "dims@90%"} if _percent == 90 else None)

#: the effective-rank estimators by name (registry entries: ``center``, ``eps``, ``definition``)
ESTIMATORS: Mapping[str, Metric] = MappingProxyType({
    name: m for name, m in REGISTRY.items() if m.variable == "effective_rank"})

def _collapse_ratio(teacher, student):
    """Student rank over teacher rank, NaN where the teacher's is not positive (arrays too)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.asarray(teacher) > 0, np.divide(student, teacher), np.nan)
    return float(ratio) if ratio.ndim == 0 else ratio


register(Metric(
    name="collapse_ratio", long_name="collapse ratio: student rank over teacher rank", units="1",
    takes=TEACHER_STUDENT, statistic="spectrum", family="dimensionality", anchor="intervals",
    compute=_collapse_ratio, interval=True,
    tables={"headline": "rank / teacher"},
    definition="primary effective rank (the convention's) of the student divided by the "
               "teacher's, same condition; its interval from the same bootstrap replicates"))
register(Metric(
    name="rank_difference", long_name="teacher rank minus student rank", units="dimensions",
    takes=TEACHER_STUDENT, statistic="spectrum", family="dimensionality", anchor="intervals",
    compute=lambda teacher, student: teacher - student, interval=True,
    definition="primary effective rank of the teacher minus the student's, same condition; "
               "a paired difference: its interval from the same bootstrap replicates"))

register(Metric(
    name="student_rank_difference", long_name="student rank minus another student's rank",
    units="dimensions", takes=STUDENT_STUDENT, statistic="spectrum", family="dimensionality",
    anchor="intervals", compute=lambda student, versus: student - versus, interval=True,
    definition="primary effective rank of the student minus that of the student named by "
               "versus, same condition and layer; a paired difference: its interval from the "
               "same bootstrap replicates"))

register(Metric(
    name="spectrum", long_name="covariance eigenvalue", units="feature units squared",
    takes=REPRESENTATION, statistic="spectrum", family="dimensionality", dims=("component",),
    anchor="the-spectrum", source="Jing et al., arXiv 2110.09348 (plot)",
    definition="eigenvalues of Zc^T Zc / (n - 1), descending, float64, values below "
               "lam_max * m * eps set to 0; NaN beyond n_features",
    compute=np.asarray, interval=True))
metric("powerlaw_alpha", long_name="power-law decay coefficient", units="1",
       takes=REPRESENTATION, statistic="spectrum", family="dimensionality", anchor="estimators",
       source="alpha-ReQ, Agrawal et al., NeurIPS 2022", tables={"headline": "power-law alpha"},
       definition="WLS of ln(lam_i / sum lam) on [-ln i, 1], weights 1/i, over the ranks "
                  "fit_range (11..100 by default, 4..100 under agrawal_neurips2022); NaN if "
                  "fewer positive eigenvalues than its last rank",
       convention_params=lambda c: {"fit_range": tuple(c.powerlaw_range)},
       interval=True)(powerlaw_alpha)


def rank_from_spectrum(lam: np.ndarray, estimator: str, *, eps: float | None = None,
                       n_values: int | None = None) -> float:
    """Apply the estimator named ``estimator`` (a key of ``ESTIMATORS``) to a spectrum.

    ``eps`` defaults to the estimator's published value; ``n_values`` (``min(n, d)``) is used
    by ``rankme`` only.
    """
    spec = get_estimator(estimator)
    eps = spec.eps if eps is None else float(eps)
    return spec.compute(lam, eps=eps, n_values=n_values)


def get_estimator(name: str) -> Metric:
    """The estimator ``name``, or InputError listing the valid ones."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise InputError(
            f"estimator must be one of {', '.join(ESTIMATORS)}; got {name!r}"
        ) from None


def check_matrix(z, name: str = "Z") -> np.ndarray:
    """Return ``z`` as a 2-D float ndarray (n samples, d features), or raise InputError."""
    z = np.asarray(z)
    if z.dtype.kind not in "f":
        raise InputError(
            f"{name} must hold floating-point features (float16/32/64); got dtype {z.dtype} "
            f"(convert with {name}.astype(np.float32) if the values are real features)"
        )
    if z.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (samples x features); got shape {z.shape} "
            "(pool or reshape feature maps and tokens first)"
        )
    if z.shape[0] < 1 or z.shape[1] < 1:
        raise InputError(f"{name} must have at least one sample and one feature; got shape {z.shape}")
    if z.dtype not in (np.float16, np.float32, np.float64):
        z = z.astype(np.float64)
    return z


def _moments(z, l2_normalize: bool) -> SecondMoments:
    z = check_matrix(z)
    moments = SecondMoments(z.shape[1], l2_normalize=l2_normalize)
    try:
        moments.update(z)
    except InputError as err:  # NonFiniteError names rows of the chunk, here of Z itself
        raise InputError(f"Z: {err}") from None
    return moments


def eigenspectrum(z, *, center: bool = True, l2_normalize: bool = False) -> np.ndarray:
    """Eigenvalues of ``Zc^T Zc / (n - 1)`` (or ``Z^T Z / n`` uncentred), descending, float64.

    Parameters
    ----------
    z : array_like, shape (n, d)
        Samples in rows, float16/32/64.
    center : bool, default True
    l2_normalize : bool, default False
        L2-normalise each row first (before centring).

    Returns
    -------
    ndarray, shape (d,)
        Values below ``lam_max * m * eps`` (rounding noise) are zero. Jing et al.
        (arXiv 2110.09348) plot this spectrum on a log scale to show dimensional collapse.
    """
    return _moments(z, l2_normalize).eigenvalues(center=center)


def effective_rank(z, estimator: str = "erank_variance", *, center: bool | None = None,
                   l2_normalize: bool = False, eps: float | None = None) -> float:
    """Effective dimensionality of the rows of ``z`` by the named estimator.

    Parameters
    ----------
    z : array_like, shape (n, d)
    estimator : str
        One of ``ESTIMATORS``: erank_variance, erank_singular, rankme, participation_ratio,
        stable_rank, n_components_90, n_components_95, n_components_99.
    center : bool, optional
        Defaults to the estimator's source (True for all but rankme).
    l2_normalize : bool, default False
    eps : float, optional
        Defaults to the estimator's source (1e-7 for rankme, 0 otherwise).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).standard_normal((5000, 16))
    >>> round(effective_rank(z), 1)  # isotropic: close to d = 16
    16.0
    """
    spec = get_estimator(estimator)
    center = spec.center if center is None else bool(center)
    moments = _moments(z, l2_normalize)
    lam = moments.eigenvalues(center=center)
    return rank_from_spectrum(lam, estimator, eps=eps,
                              n_values=min(moments.count, moments.n_features))


def seed_averaged_erank(spectra: Sequence[np.ndarray], eps: float = 0.0) -> float:
    r"""Variance-based effective rank of the seed-averaged singular-value vector.

    arXiv 2603.06698 summarises several seeds of one student by averaging their singular
    values, :math:`\bar s_k = \mathrm{mean}_{seed}\, s_k`, and reporting
    ``erank_variance`` of :math:`\bar s^2` (not the mean of per-seed ranks).

    Parameters
    ----------
    spectra : sequence of ndarray
        One covariance spectrum per seed, all from the same number of samples and features.
    eps : float
        As in ``erank_variance`` (the paper's code: 1e-10).
    """
    return erank_variance(seed_averaged_spectrum(spectra), eps)


def seed_averaged_spectrum(spectra: Sequence[np.ndarray]) -> np.ndarray:
    r"""The spectrum of the seed-averaged singular values, :math:`\bar s_k^2` with
    :math:`\bar s_k = \mathrm{mean}_{seed} \sqrt{\lambda_k}` (arXiv 2603.06698's notebook,
    cell 4: ``np.mean(np.vstack(S_list), axis=0)``)."""
    spectra = [np.asarray(s, dtype=np.float64) for s in spectra]
    if not spectra:
        raise InputError("spectra must hold at least one seed's spectrum")
    if len({s.shape for s in spectra}) != 1:
        raise InputError(
            f"every seed's spectrum must have the same length; got {[s.size for s in spectra]}"
        )
    return np.mean([np.sqrt(s) for s in spectra], axis=0) ** 2


def _seed_aggregate(spectra: Sequence[np.ndarray], eps: float = 0.0,
                    aggregation: str = "rank_mean") -> float:
    """``seed_averaged_erank`` (aggregation "spectrum_mean") or the mean of per-seed ranks."""
    if aggregation == "spectrum_mean":
        return seed_averaged_erank(spectra, eps)
    return float(np.mean([erank_variance(s, eps) for s in spectra]))


register(Metric(
    name="seed_averaged_rank", long_name="seed-aggregated effective rank", units="dimensions",
    takes=FAMILY, statistic="spectrum", family="dimensionality", anchor="named-conventions",
    compute=_seed_aggregate, source="arXiv 2603.06698 (spectrum_mean)",
    definition="erank_variance of the seed-averaged singular values (arXiv 2603.06698) under "
               "aggregation spectrum_mean; mean of per-seed erank_variance under rank_mean",
    convention_params=lambda c: {"aggregation": c.seed_aggregation}))
def _seed_summary(estimator: Callable[[np.ndarray], float]):
    """A family metric: ``estimator`` of the seed-averaged spectrum (aggregation
    "spectrum_mean") or the mean of its per-seed values ("rank_mean")."""
    def compute(spectra: Sequence[np.ndarray], eps: float = 0.0, aggregation: str = "rank_mean",
                **params) -> float:
        if aggregation == "spectrum_mean":
            return float(estimator(seed_averaged_spectrum(spectra), eps=eps, **params))
        return float(np.mean([estimator(s, eps=eps, **params) for s in spectra]))

    return compute


register(Metric(
    name="seed_averaged_dims", long_name="seed-aggregated dimensions for the variance threshold",
    units="dimensions", takes=FAMILY, statistic="spectrum", family="dimensionality",
    anchor="named-conventions", source="arXiv 2603.06698 (spectrum_mean; its notebook, cell 4)",
    compute=_seed_summary(lambda lam, eps, threshold: n_components(lam, threshold)),
    definition="n_components at the convention's threshold (90%) of the seed-averaged singular "
               "values under aggregation spectrum_mean (arXiv 2603.06698: 19 / 20 / 20); mean "
               "of per-seed values under rank_mean",
    convention_params=lambda c: {"aggregation": c.seed_aggregation, "threshold": c.threshold}))
register(Metric(
    name="seed_averaged_singular_rank", long_name="seed-aggregated singular-value effective rank",
    units="dimensions", takes=FAMILY, statistic="spectrum", family="dimensionality",
    anchor="named-conventions", source="arXiv 2603.06698's notebook, cell 3",
    compute=_seed_summary(erank_singular),
    definition="erank_singular (p = s / sum s) of the seed-averaged singular values under "
               "aggregation spectrum_mean (the older cell of arXiv 2603.06698's notebook); mean "
               "of per-seed values under rank_mean",
    convention_params=lambda c: {"aggregation": c.seed_aggregation}))
register(Metric(
    name="seed_rank_std", long_name="spread of per-seed effective rank", units="dimensions",
    takes=FAMILY, statistic="spectrum", family="dimensionality", anchor="named-conventions",
    compute=lambda spectra, eps=0.0, ddof=1: float(
        np.std([erank_variance(s, eps) for s in spectra], ddof=ddof)),
    definition="standard deviation of erank_variance over seeds, ddof from the convention (1, "
               "the sample standard deviation; 0 under arxiv_2603_06698)",
    convention_params=lambda c: {"ddof": c.seed_ddof}))
