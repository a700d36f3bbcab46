"""Teacher-student alignment and information retention: the array layer.

Rows of X (teacher, n x d1) and Y (student, n x d2) are the same inputs. The metrics here are
functions of the joint second moments of (X, Y), accumulated by streaming (``PairMoments``,
``distillscope.metrics.pairs``): every function takes ``(X, Y)`` arrays or a ``PairMoments``
as ``x`` alone. The sample-level metrics (mutual kNN, InfoNCE, uniformity) are in
``distillscope.metrics.neighbours``. Definitions and sources: ``docs/metrics.md`` section 2;
slow references in ``tests/reference_alignment.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._errors import InputError
from .linalg import along, eigh_desc, inv_sqrt, numerical_rank
from .pairs import PairMoments, check_pair, pair_moments
from .registry import REQUESTED, TEACHER_STUDENT, Metric, metric, register

__all__ = [
    "DegenerateWarning",
    "linear_cka",
    "linear_cka_debiased",
    "rbf_cka",
    "cca",
    "svcca",
    "svcca_correlations",
    "pwcca",
    "linear_hsic",
    "linreg_r2",
    "subspace_angles",
    "principal_angles",
    "procrustes_angular",
    "variance_captured",
    "N_ANGLES",
]

#: principal angles reported
N_ANGLES = 10


class DegenerateWarning(UserWarning):
    """A metric is computed where it is known to be biased or trivial (the message says why)."""


# ---------------------------------------------------------------------------------------- CKA
@metric("linear_cka", long_name="linear CKA", units="1", takes=TEACHER_STUDENT, statistic="pair",
        anchor="linear-cka", source="Kornblith et al., arXiv 1905.00414",
        tables={"alignment": "CKA", "headline": "CKA with teacher"},
        definition="||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); Kornblith et al., "
                   "arXiv 1905.00414", interval=True)
def linear_cka(x, y=None, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment.

    .. math:: \mathrm{CKA}(X, Y) = \frac{\lVert Y_c^\top X_c \rVert_F^2}
              {\lVert X_c^\top X_c \rVert_F \, \lVert Y_c^\top Y_c \rVert_F}

    computed from streamed cross-products. ``debiased=True`` replaces each HSIC by its unbiased estimator (Song et
    al. 2012), which is not inflated when d is not much smaller than n; it needs n >= 4 and can
    be negative.

    Parameters
    ----------
    x, y : array_like (n, d1), (n, d2), or a ``PairMoments`` as ``x`` alone.

    References
    ----------
    S. Kornblith, M. Norouzi, H. Lee, G. Hinton, "Similarity of neural network representations
    revisited", ICML 2019, arXiv 1905.00414. L. Song, A. Smola, A. Gretton, J. Bedo,
    K. Borgwardt, "Feature selection via dependence maximization", JMLR 2012, arXiv 0704.2668.
    """
    m = pair_moments(x, y)
    if not debiased and max(m.d1, m.d2) > m.count / 10:
        warnings.warn(f"linear_cka: max(d1, d2) = {max(m.d1, m.d2)} > n / 10 = {m.count / 10:.0f}; "
                      "the biased estimator is inflated at this sample size, use debiased=True",
                      DegenerateWarning, stacklevel=2)
    if debiased:
        kl, kk, ll = m.hsic_unbiased()
        denominator = math.sqrt(kk * ll) if kk > 0 and ll > 0 else 0.0
        return float(kl / denominator) if denominator else float("nan")
    sxx, syy, sxy = m.blocks()
    num, kk, ll = np.sum(sxy * sxy), np.sum(sxx * sxx), np.sum(syy * syy)
    denominator = math.sqrt(kk * ll)
    return float(num / denominator) if denominator > 0 else float("nan")



@metric("linear_cka_debiased", long_name="debiased linear CKA", units="1", takes=TEACHER_STUDENT,
        statistic="pair", anchor="linear-cka", source="Song et al. 2012 eq. 5, arXiv 0704.2668",
        tables={"alignment": "CKA debiased"},
        definition="CKA with unbiased HSIC (Song et al. 2012, eq. 5); can be negative",
        interval=True)
def linear_cka_debiased(x, y=None) -> float:
    """``linear_cka(x, y, debiased=True)``: CKA of unbiased HSICs; needs n >= 4."""
    return linear_cka(x, y, debiased=True)


@metric("rbf_cka", long_name="RBF CKA", units="1", takes=TEACHER_STUDENT, statistic="samples",
        anchor="rbf-cka", source="Kornblith et al., arXiv 1905.00414", default=False,
        compute=lambda sx, sy, threshold=0.5: rbf_cka(sx.values, sy.values, threshold=threshold),
        params={"threshold": 0.5},
        definition="CKA of Gaussian kernels, sigma^2 = threshold^2 median squared distance "
                   "(diagonal included), threshold 0.5; two n x n kernels in memory")
def rbf_cka(x, y, *, threshold: float = 0.5, max_samples: int = 20_000) -> float:
    r"""CKA with Gaussian kernels, :math:`k(x, x') = \exp(-\lVert x - x'\rVert^2 / (2\sigma^2))`.

    :math:`\sigma^2 = \theta^2 \cdot \mathrm{median}` of the squared distances (diagonal
    included), as in Kornblith et al.'s reference code; biased HSIC with ``H K H`` centring.
    Needs two ``n x n`` kernel matrices: refused above ``max_samples`` (subsample first).
    """
    x, y = check_pair(x, y)
    n = x.shape[0]
    if n > max_samples:
        raise InputError(
            f"rbf_cka needs two n x n kernels ({2 * n * n * 8 / 2**30:.1f} GiB at n = {n}); "
            f"subsample to at most max_samples={max_samples} rows or raise max_samples"
        )

    def centred_kernel(z):
        z = z.astype(np.float64)
        dot = z @ z.T
        sq = np.diag(dot)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2 * dot, 0.0)
        kernel = np.exp(-dist / (2 * threshold**2 * np.median(dist)))
        kernel -= kernel.mean(axis=0)
        kernel -= kernel.mean(axis=1, keepdims=True)
        return kernel

    k, l_ = centred_kernel(x), centred_kernel(y)
    return float(np.sum(k * l_) / math.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


for _threshold, _suffix in ((0.2, "02"), (0.4, "04"), (0.8, "08")):
    register(Metric(
        name=f"rbf_cka_{_suffix}", long_name=f"RBF CKA, bandwidth {_threshold} x median distance",
        units="1", takes=TEACHER_STUDENT, statistic="samples", anchor="rbf-cka", default=False,
        source="Kornblith et al., arXiv 1905.00414 (Table 2: RBF CKA sigma 0.2 / 0.4 / 0.8)",
        compute=lambda sx, sy, threshold: rbf_cka(sx.values, sy.values, threshold=threshold),
        params={"threshold": _threshold}, function=rbf_cka,
        definition=f"rbf_cka with threshold {_threshold}; two n x n kernels in memory"))


# ---------------------------------------------------------------------------------------- CCA
def _guard_cca(n: int, d1: int, d2: int, name: str) -> None:
    if d1 + d2 >= n:
        raise InputError(
            f"{name} is degenerate: d1 + d2 = {d1 + d2} >= n = {n} makes canonical correlations "
            "trivially 1; use more samples or linear_cka_debiased"
        )
    if max(d1, d2) > n / 10:
        warnings.warn(f"{name}: max(d1, d2) = {max(d1, d2)} > n / 10 = {n / 10:.0f}; canonical "
                      "correlations are inflated at this sample size", DegenerateWarning,
                      stacklevel=3)


def _canonical(sxx, syy, sxy, eig_x=None, eig_y=None, weights: bool = False):
    """Canonical correlations (and with ``weights`` the X-side canonical weights)."""
    eig_x = eigh_desc(sxx) if eig_x is None else eig_x
    eig_y = eigh_desc(syy) if eig_y is None else eig_y
    wx, wy = inv_sqrt(sxx, eig_x), inv_sqrt(syy, eig_y)
    rank = min(numerical_rank(eig_x[0]), numerical_rank(eig_y[0]))
    if not weights:
        rho = np.linalg.svd(wx @ sxy @ wy, compute_uv=False)
        return np.clip(rho[:rank], 0.0, 1.0), None
    u, rho, _ = np.linalg.svd(wx @ sxy @ wy)
    return np.clip(rho[:rank], 0.0, 1.0), wx @ u[:, :rank]


def _whitening(side) -> np.ndarray:
    """``S^-1/2`` of one side's centred scatter, cached on its moments (a teacher's is shared
    by every student)."""
    def compute():
        lam, vec = side.eigh()
        return inv_sqrt(side.centered()[2], (lam, vec))

    return side.cached("whitening", compute)


def _canonical_pair(m: PairMoments):
    """The SVD of ``Sxx^-1/2 Sxy Syy^-1/2`` of a PairMoments, with the whitening and the rank,
    computed once per state: CCA and PWCCA read the same decomposition."""
    def compute():
        wx, wy = _whitening(m.x), _whitening(m.y)
        rank = min(numerical_rank(m.eig("x")[0]), numerical_rank(m.eig("y")[0]))
        u, rho, vt = np.linalg.svd(wx @ m.blocks()[2] @ wy, full_matrices=False)
        return np.clip(rho[:rank], 0.0, 1.0), u[:, :rank], vt[:rank].T, wx, wy

    return m.cached("canonical", compute)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def cca(x, y=None, *, center: bool = True) -> np.ndarray:
    r"""Canonical correlations :math:`\rho_i = s_i(Q_x^\top Q_y)`, descending.

    Computed from scatter blocks as the singular values of
    :math:`S_{xx}^{-1/2} S_{xy} S_{yy}^{-1/2}`; ``cca_mean`` is their mean and ``cca_r2`` the
    mean of their squares. Refused when ``d1 + d2 >= n``; warns when ``max(d) > n / 10``.
    """
    m = pair_moments(x, y)
    _guard_cca(m.count, m.d1, m.d2, "cca")
    if center:
        return _canonical_pair(m)[0]
    return _canonical(*m.blocks(center=False))[0]


metric("cca_mean", long_name="mean canonical correlation", units="1", interval=REQUESTED,
       takes=TEACHER_STUDENT,
       statistic="pair", anchor="cca", source="Hotelling 1936",
       compute=lambda pair: _mean_or_nan(cca(pair)),
       definition="mean of s_i(Qx^T Qy) of centred data; NaN when d1 + d2 >= n")(cca)
metric("cca_r2", long_name="mean squared canonical correlation", units="1",
       interval=REQUESTED,
       takes=TEACHER_STUDENT, statistic="pair", anchor="cca", source="Hotelling 1936",
       compute=lambda pair: _mean_or_nan(cca(pair) ** 2),
       definition="mean of rho_i^2; NaN when d1 + d2 >= n")(cca)


@metric("svcca", long_name="SVCCA", units="1", interval=REQUESTED,
        takes=TEACHER_STUDENT, statistic="pair",
        anchor="cca", source="Raghu et al., arXiv 1706.05806", tables={"alignment": "SVCCA"},
        definition="CCA mean after keeping 99% of each side's variance; Raghu et al., "
                   "arXiv 1706.05806")
def svcca(x, y=None, *, variance: float = 0.99) -> float:
    """SVCCA: CCA mean after keeping each side's top principal directions explaining
    ``variance`` of its variance (Raghu et al., NeurIPS 2017, arXiv 1706.05806)."""
    return _mean_or_nan(svcca_correlations(x, y, variance=variance))


def svcca_correlations(x, y=None, *, variance: float = 0.99) -> np.ndarray:
    """The canonical correlations of SVCCA (``svcca``), descending."""
    m = pair_moments(x, y)
    sxy = m.blocks()[2]

    def top(side):
        lam, vec = m.eig(side)
        p = np.cumsum(np.clip(lam, 0, None)) / max(lam.clip(0).sum(), 1e-300)
        k = int(np.searchsorted(p, variance - 1e-12) + 1)
        return lam[:k], vec[:, :k]

    (lx, vx), (ly, vy) = top("x"), top("y")
    _guard_cca(m.count, vx.shape[1], vy.shape[1], "svcca")
    # in the principal bases each side's scatter is diag(lam): its whitening is 1/sqrt(lam)
    keep_x, keep_y = (lam > lam[0] * lam.size * np.finfo(np.float64).eps if lam.size
                      else lam > 0 for lam in (lx, ly))
    cross = (vx[:, keep_x] / np.sqrt(lx[keep_x])).T @ sxy @ (vy[:, keep_y] / np.sqrt(ly[keep_y]))
    return np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)


metric("svcca_r2", long_name="SVCCA mean squared correlation", units="1",
       interval=REQUESTED, takes=TEACHER_STUDENT, statistic="pair", anchor="cca", default=False,
       source="Kornblith et al., arXiv 1905.00414 (Table 1: R^2_SVCCA)",
       compute=lambda pair: _mean_or_nan(svcca_correlations(pair) ** 2),
       definition="mean of rho_i^2 of the CCA after keeping 99% of each side's "
                  "variance")(svcca_correlations)


@metric("linear_hsic", long_name="linear HSIC", units="feature units squared (product)",
        interval=REQUESTED,
        takes=TEACHER_STUDENT, statistic="pair", anchor="linear-hsic", default=False,
        source="Kornblith et al., arXiv 1905.00414 (Eq. 3, Table 1)",
        definition="||Yc^T Xc||_F^2 / (n - 1)^2: the biased HSIC of linear kernels, "
                   "tr(K H L H) / (n - 1)^2")
def linear_hsic(x, y=None) -> float:
    r"""Linear HSIC, :math:`\lVert Y_c^	op X_c
Vert_F^2 / (n-1)^2 = \mathrm{tr}(KHLH)/(n-1)^2`
    with :math:`K = XX^	op`, :math:`L = YY^	op` (Kornblith et al., ICML 2019, Eq. 3): the
    unnormalised numerator of linear CKA, so it scales with both sides' units."""
    m = pair_moments(x, y)
    return float(np.sum(m.blocks()[2] ** 2) / (m.count - 1) ** 2)


@metric("linreg_r2", long_name="linear regression R^2 of the teacher from the student",
        units="1", interval=REQUESTED,
        takes=TEACHER_STUDENT, statistic="pair", anchor="linear-regression-r2",
        default=False, source="Kornblith et al., arXiv 1905.00414 (Table 1: R^2_LR)",
        definition="||Q_Y^T Xc||_F^2 / ||Xc||_F^2, X the teacher, Q_Y an orthonormal basis of "
                   "the centred student (in sample, no penalty); NaN when d2 >= n")
def linreg_r2(x, y=None) -> float:
    r"""In-sample linear-regression fit of X (the teacher) from Y (the student):
    :math:`R^2_{LR} = \lVert Q_Y^	op X_c
Vert_F^2 / \lVert X_c
Vert_F^2`, from moments as
    :math:`\lVert S_{xy} S_{yy}^{-1/2}
Vert_F^2 / \mathrm{tr}\,S_{xx}` (the whitening on Y's
    numerical rank). Kornblith et al., ICML 2019, Table 1; ``linear_predictivity`` is the
    cross-validated, ridge-penalised counterpart."""
    m = pair_moments(x, y)
    if m.d2 >= m.count:
        raise InputError(f"linreg_r2 needs fewer student features than samples; got d2 = "
                         f"{m.d2}, n = {m.count}")
    sxx, _, sxy = m.blocks()
    total = float(np.trace(sxx))
    if not total > 0:
        raise InputError("linreg_r2: the teacher is constant")
    return float(np.sum((sxy @ _whitening(m.y)) ** 2) / total)


@metric("pwcca", long_name="PWCCA", units="1", interval=REQUESTED,
        takes=TEACHER_STUDENT, statistic="pair",
        anchor="cca", source="Morcos et al., arXiv 1806.05759",
        definition="sum a_i rho_i / sum a_i, a_i = sum_j |<h_i, x_j>| on the narrower layer; "
                   "Morcos et al., arXiv 1806.05759")
def pwcca(x, y=None) -> float:
    r"""Projection-weighted CCA: :math:`\sum_i a_i \rho_i / \sum_i a_i`,
    :math:`a_i = \sum_j |\langle h_i, x_j \rangle|`.

    ``h_i`` are the unit-norm canonical variates of the layer with fewer non-constant neurons
    and ``x_j`` that layer's centred neurons (Morcos et al., NeurIPS 2018, arXiv 1806.05759;
    unlike the official code, the narrower layer's own activations are used whichever side it
    is on).
    """
    m = pair_moments(x, y)
    _guard_cca(m.count, m.d1, m.d2, "pwcca")
    sxx, syy, _ = m.blocks()
    rho, u, v, wx, wy = _canonical_pair(m)
    if not rho.size:  # a constant layer has no canonical direction
        return float("nan")
    if numerical_rank(m.eig("y")[0]) < numerical_rank(m.eig("x")[0]):  # the narrower layer: Y (the SVD of the
        scatter, weights = syy, wy @ v  # transposed matrix has the singular vectors swapped)
    else:
        scatter, weights = sxx, wx @ u
    a = np.abs(scatter @ weights).sum(axis=0)  # <h_i, x_j> = (Sxx w_i)_j with ||h_i|| = 1
    return float(a @ rho / a.sum())


# ------------------------------------------------------------------------------------ angles
def subspace_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of ``a`` and ``b``.

    Bjorck & Golub (1973): ``arccos`` of the singular values of ``Qa^T Qb``, with the sine
    formula for small angles as in ``scipy.linalg.subspace_angles``.
    """
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.float64))
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    angles = np.arccos(cosines)
    small = cosines > 1 / np.sqrt(2)  # accurate sines for small angles
    if small.any():
        if qa.shape[1] >= qb.shape[1]:
            residual = qb - qa @ (qa.T @ qb)
        else:
            residual = qa - qb @ (qb.T @ qa)
        sines = np.clip(np.linalg.svd(residual, compute_uv=False)[::-1][: cosines.size], 0, 1)
        angles[small] = np.arcsin(np.sort(sines)[: small.sum()])
    return np.sort(angles)


@metric("principal_angles", long_name="principal angle between top-k principal subspaces",
        units="rad", interval=REQUESTED, takes=TEACHER_STUDENT, statistic="pair", dims=("angle",),
        anchor="principal-angles", source="Bjorck & Golub 1973", params={"k": N_ANGLES},
        compute=lambda pair, k: principal_angles(pair, k=min(k, pair.d1, pair.d2, pair.count - 1)),
        definition=f"sample space, k = {N_ANGLES} (fewer when a side is narrower), ascending; "
                   "Bjorck & Golub 1973")
def principal_angles(x, y=None, *, k: int = 10, space: str = "sample") -> np.ndarray:
    """Principal angles between the top-k principal subspaces of X and Y (radians, ascending).

    ``space="sample"``: between the spans of the top-k left singular vectors of the centred
    data (n-dimensional; works for any widths), from moments as
    ``diag(1/s_x) V_x^T S_xy V_y diag(1/s_y)``. ``space="feature"``: between the top-k principal
    directions, only when both live in the same coordinates (d1 == d2), as cosine-distilled
    students do.
    """
    m = pair_moments(x, y)
    sxx, syy, sxy = m.blocks()
    lx, vx = m.eig("x")
    ly, vy = m.eig("y")
    k = int(k)
    if not 1 <= k <= min(m.d1, m.d2, m.count - 1):
        raise InputError(f"k must lie in 1..min(d1, d2, n - 1) = {min(m.d1, m.d2, m.count - 1)}; got {k}")
    if space == "feature":
        if m.d1 != m.d2:
            raise InputError(f"feature-space angles need d1 == d2; got {m.d1} and {m.d2} "
                             "(use space='sample')")
        return subspace_angles(vx[:, :k], vy[:, :k])
    if space != "sample":
        raise InputError(f"space must be 'sample' or 'feature'; got {space!r}")
    if not (lx[k - 1] > 0 and ly[k - 1] > 0):
        raise InputError(f"fewer than k = {k} non-zero principal directions; lower k")
    cross = (vx[:, :k] / np.sqrt(lx[:k])).T @ sxy @ (vy[:, :k] / np.sqrt(ly[:k]))
    return np.sort(np.arccos(np.clip(np.linalg.svd(cross, compute_uv=False), -1.0, 1.0)))


@metric("procrustes_angular", long_name="angular Procrustes distance", units="rad",
        interval=REQUESTED, takes=TEACHER_STUDENT, statistic="pair", anchor="procrustes",
        source="Williams et al., arXiv 2110.14739",
        definition="arccos(||Xc^T Yc||_* / (||Xc||_F ||Yc||_F)) (alpha = 1); Williams et al., "
                   "arXiv 2110.14739")
def procrustes_angular(x, y=None, *, alpha: float = 1.0) -> float:
    r"""Angular Procrustes distance with partial whitening (radians, 0 = identical shape).

    .. math:: \arccos \frac{\lVert \phi(X)^\top \phi(Y) \rVert_*}
              {\lVert \phi(X) \rVert_F \lVert \phi(Y) \rVert_F}, \quad
              \phi(X) = X_c\,(\alpha I + (1 - \alpha) C_x^{-1/2})

    with :math:`C_x = X_c^\top X_c / n`. ``alpha = 1`` is plain shape Procrustes (invariant to
    rotations, translation, isotropic scaling), ``alpha = 0`` whitens fully (CCA-like).

    References
    ----------
    A. H. Williams, E. Kunz, S. Kornblith, S. W. Linderman, "Generalized shape metrics on neural
    representations", NeurIPS 2021, arXiv 2110.14739.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1]; got {alpha!r}")
    m = pair_moments(x, y)
    sxx, syy, sxy = m.blocks()
    n = m.count
    if alpha == 1.0:  # no whitening: the blocks themselves
        nuclear = np.linalg.svd(sxy, compute_uv=False).sum()
        norms = math.sqrt(max(np.trace(sxx) * np.trace(syy), 0.0))
    else:
        (lx, vx), (ly, vy) = m.eig("x"), m.eig("y")
        wx = alpha * np.eye(m.d1) + (1 - alpha) * inv_sqrt(sxx / n, (lx / n, vx))
        wy = alpha * np.eye(m.d2) + (1 - alpha) * inv_sqrt(syy / n, (ly / n, vy))
        nuclear = np.linalg.svd(wx.T @ sxy @ wy, compute_uv=False).sum()
        norms = math.sqrt(max(np.trace(wx.T @ sxx @ wx) * np.trace(wy.T @ syy @ wy), 0.0))
    if not norms > 0:  # a constant representation has no shape
        return float("nan")
    return float(np.arccos(np.clip(nuclear / norms, -1.0, 1.0)))


# ---------------------------------------------------------------------------- information kept
@metric("variance_captured", long_name="student variance captured by the teacher's top-k directions",
        units="1", interval=REQUESTED, takes=TEACHER_STUDENT, statistic="pair", dims=("component",),
        anchor="variance-captured", source="arXiv 2603.06698 Fig. 1",
        definition="A(k) = sum_{j<=k} ||Yc v_j||^2 / ||Yc||_F^2, v_j teacher principal "
                   "directions; same-space pairs only (arXiv 2603.06698 Fig. 1)")
def variance_captured(x, y=None, *, center_student: bool = True) -> np.ndarray:
    r"""The curve :math:`A(k) = \sum_{j \le k} \lVert Y_c v_j \rVert^2 / \lVert Y_c \rVert_F^2`.

    ``v_j`` are the teacher's principal directions (descending variance); the student must live
    in the teacher's space (d1 == d2), as cosine-distilled students do (arXiv 2603.06698,
    Fig. 1). Returns A(1..d). The paper's text centres the student ("centered Student
    embeddings"); its notebook's cell 5 projects the student rows as given:
    ``center_student=False`` (``variance_captured_uncentred``) is that reading, with
    :math:`Y` in place of :math:`Y_c`.
    """
    m = pair_moments(x, y)
    if m.d1 != m.d2:
        raise InputError(f"variance_captured needs the student in the teacher's space (d1 == d2); "
                         f"got {m.d1} and {m.d2}")
    syy = m.blocks(center=center_student)[1]
    _, vx = m.eig("x")
    captured = along(vx, syy)
    total = np.trace(syy)
    return np.cumsum(captured) / total if total > 0 else np.full(m.d1, np.nan)


register(Metric(
    name="variance_captured_uncentred",
    long_name="uncentred student variance captured by the teacher's top-k directions", units="1",
    interval=REQUESTED,
    takes=TEACHER_STUDENT, statistic="pair", dims=("component",), anchor="variance-captured",
    family="alignment", compute=variance_captured, params={"center_student": False},
    default=False, source="arXiv 2603.06698's notebook, cell 5",
    definition="A(k) = sum_{j<=k} ||Y v_j||^2 / ||Y||_F^2 with the student rows as given (not "
               "centred), v_j teacher principal directions; same-space pairs only"))
register(Metric(
    name="small_sample", long_name="pair with max(d1, d2) > n / 10", units="1",
    takes=TEACHER_STUDENT, statistic="pair", anchor="guards", family="alignment",
    compute=lambda pair: max(pair.d1, pair.d2) > pair.count / 10, fill=False,
    definition="True where the CCA family and biased linear CKA are known to be inflated by "
               "the sample size; prefer linear_cka_debiased there"))
