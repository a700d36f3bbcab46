"""Teacher-student alignment and information retention: the array layer.

Rows of X (teacher, n x d1) and Y (student, n x d2) are the same inputs. Most metrics here are
functions of the joint second moments of (X, Y), accumulated by streaming
(``PairMoments``); the rest (RBF CKA, mutual kNN, InfoNCE, uniformity) need the samples
themselves and say how much memory they take. Definitions and sources: ``docs/metrics.md``
section 2; slow references in ``tests/reference_alignment.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._errors import InputError
from .dimensionality import check_matrix
from .moments import SecondMoments

__all__ = [
    "PairMoments",
    "DegenerateWarning",
    "linear_cka",
    "rbf_cka",
    "cca",
    "svcca",
    "pwcca",
    "subspace_angles",
    "principal_angles",
    "procrustes_angular",
    "variance_captured",
    "ridge_retention",
    "mutual_knn",
    "infonce",
    "uniformity",
]


class DegenerateWarning(UserWarning):
    """A metric is computed where it is known to be biased or trivial (the message says why)."""


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = check_matrix(x, "X")
    y = check_matrix(y, "Y")
    if x.shape[0] != y.shape[0]:
        raise InputError(
            f"X and Y must hold the same samples in the same order; got {x.shape[0]} and "
            f"{y.shape[0]} rows"
        )
    return x, y


def _eigh_desc(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, vec = np.linalg.eigh(matrix)
    return lam[::-1], vec[:, ::-1]


def _along(v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``diag(V^T S V)``: the scatter of ``S`` along each column of ``V`` (one BLAS call)."""
    return np.sum(v * (s @ v), axis=0)


def _rank(lam: np.ndarray) -> int:
    """Numerical rank from descending eigenvalues of a scatter matrix."""
    if not lam.size or not lam[0] > 0:
        return 0
    return int(np.count_nonzero(lam > lam[0] * lam.size * np.finfo(np.float64).eps))


def _inv_sqrt(matrix: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Pseudo-inverse square root of a symmetric PSD matrix (rank-revealing)."""
    lam, vec = _eigh_desc(matrix) if eig is None else eig
    keep = lam > lam[0] * matrix.shape[0] * np.finfo(np.float64).eps if lam.size else lam > 0
    return (vec[:, keep] / np.sqrt(lam[keep])) @ vec[:, keep].T


# ------------------------------------------------------------------------------- joint moments
class PairMoments:
    """Streamed, mergeable joint moments of teacher rows X (d1) and student rows Y (d2).

    Holds a ``SecondMoments`` of the concatenated rows ``[x, y]`` (centred scatter blocks
    ``Sxx``, ``Syy``, ``Sxy``) and, for the debiased CKA, sums over rows shifted by a fixed
    vector: squared norms ``a = ||x - cx||^2``, ``b = ||y - cy||^2`` and their products with the
    rows. Memory is ``O((d1 + d2)^2)``, independent of n.

    Parameters
    ----------
    d1, d2 : int
    shift : tuple of ndarray, optional
        The shift ``(cx, cy)``; by default the mean of the first chunk. Accumulators merged
        together must share it (pass the same one to every worker).
    """

    def __init__(self, d1: int, d2: int, *, shift: tuple[np.ndarray, np.ndarray] | None = None):
        self.d1, self.d2 = int(d1), int(d2)
        self._shift = None if shift is None else (np.asarray(shift[0], float), np.asarray(shift[1], float))
        self.joint = SecondMoments(self.d1 + self.d2, shift=None if shift is None
                                   else np.concatenate(self._shift))
        self._input = np.empty((0, self.d1 + self.d2), np.float32)
        self._scalars = np.zeros(5)  # sum a, sum b, sum ab, sum a^2, sum b^2
        self._u = np.zeros(self.d1)  # sum zx * b
        self._wx = np.zeros(self.d1)  # sum zx * a
        self._v = np.zeros(self.d2)  # sum zy * a
        self._wy = np.zeros(self.d2)  # sum zy * b
        self._cache: dict = {}  # blocks and eigen-decompositions, cleared by update and merge

    @property
    def count(self) -> int:
        return self.joint.count

    def update(self, x: np.ndarray, y: np.ndarray) -> "PairMoments":
        """Add a chunk of paired rows; returns ``self``."""
        x = np.asarray(x)
        y = np.asarray(y)
        if x.shape[0] != y.shape[0] or x.ndim != 2 or y.ndim != 2:
            raise InputError(f"paired chunks must be 2-D with equal rows; got {x.shape}, {y.shape}")
        if x.shape[0] == 0:
            return self
        self._cache.clear()
        m = x.shape[0]
        dtype = np.promote_types(np.promote_types(x.dtype, y.dtype), np.float32)
        if self._input.shape[0] < m or self._input.dtype != dtype:
            self._input = np.empty((m, self.d1 + self.d2), dtype)
        joint = self._input[:m]
        joint[:, : self.d1] = x
        joint[:, self.d1:] = y
        self.joint.update(joint)
        if self._shift is None:  # the joint accumulator chose the first chunk's mean
            self._shift = (self.joint._shift[: self.d1], self.joint._shift[self.d1:])
        z = self.joint.last_block  # the chunk in float64, minus the shared shift
        zx, zy = z[:, : self.d1], z[:, self.d1:]
        norms = np.stack([np.einsum("ij,ij->i", zx, zx), np.einsum("ij,ij->i", zy, zy)])
        a, b = norms
        self._scalars += (a.sum(), b.sum(), a @ b, a @ a, b @ b)
        weighted = norms @ z  # one pass: rows [a @ zx | a @ zy] and [b @ zx | b @ zy]
        self._wx += weighted[0, : self.d1]
        self._v += weighted[0, self.d1:]
        self._u += weighted[1, : self.d1]
        self._wy += weighted[1, self.d1:]
        return self

    def merge(self, other: "PairMoments") -> "PairMoments":
        """Combine with the moments of other rows (the same shift is required)."""
        if other.count == 0:
            return self
        if self.count == 0 and self._shift is None:
            self._shift = other._shift
            self.joint._shift = np.concatenate(other._shift)
        if (self._shift is None or other._shift is None
                or not all(np.array_equal(a, b) for a, b in zip(self._shift, other._shift))):
            raise InputError("PairMoments can only be merged when they share the same shift; "
                             "pass shift=(cx, cy) to every accumulator")
        self._cache.clear()
        self.joint.merge(other.joint)
        self._scalars += other._scalars
        self._u += other._u
        self._wx += other._wx
        self._v += other._v
        self._wy += other._wy
        return self

    # -- blocks ---------------------------------------------------------------------------
    def blocks(self, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scatter blocks ``(Sxx, Syy, Sxy)`` of the centred (or raw) rows (cached)."""
        key = ("blocks", center)
        if key not in self._cache:
            s = self.joint.scatter(center=center)
            self._cache[key] = (s[: self.d1, : self.d1], s[self.d1:, self.d1:],
                                s[: self.d1, self.d1:])
        return self._cache[key]

    def eig(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Descending eigen-decomposition of the centred ``Sxx`` (side "x") or ``Syy`` (cached)."""
        key = ("eig", side)
        if key not in self._cache:
            sxx, syy, _ = self.blocks()
            self._cache[key] = _eigh_desc(sxx if side == "x" else syy)
        return self._cache[key]

    def gram(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Centred Gram matrices ``(K, L)`` when the rows are still held (n <= d1 + d2)."""
        rows = self.joint._rows
        if rows is None:
            return None
        z = np.concatenate(rows)
        z = z - z.mean(axis=0)
        x, y = z[:, : self.d1], z[:, self.d1:]
        return x @ x.T, y @ y.T

    def _about_shift(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(sx, sy, Cxx, Cyy, Cxy): sums and cross-products of the shifted rows."""
        n, mean, m2 = self.joint._centered()
        delta = mean - np.concatenate(self._shift)
        s = m2 + n * np.outer(delta, delta)
        total = n * delta
        d1 = self.d1
        return total[:d1], total[d1:], s[:d1, :d1], s[d1:, d1:], s[:d1, d1:]

    def hsic_unbiased(self) -> tuple[float, float, float]:
        """Unbiased HSIC of the linear kernels: (HSIC(K, L), HSIC(K, K), HSIC(L, L)).

        Song et al. (2012), eq. 5, written in sums over the rows (translation invariant, so
        computed on the shifted rows):
        ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``, ``K~`` being
        ``K`` with its diagonal set to zero.
        """
        n = self.count
        if n < 4:
            raise InputError(f"the debiased CKA needs at least 4 samples; got {n}")
        sx, sy, cxx, cyy, cxy = self._about_shift()
        sum_a, sum_b, sum_ab, sum_aa, sum_bb = self._scalars

        def hsic(trace_kl, diag_kl, one_k, one_l, one_kl):
            value = ((trace_kl - diag_kl) + one_k * one_l / ((n - 1) * (n - 2))
                     - 2.0 / (n - 2) * one_kl)
            return value / (n * (n - 3))

        one_k = sx @ sx - sum_a
        one_l = sy @ sy - sum_b
        kl = hsic(np.sum(cxy * cxy), sum_ab, one_k, one_l,
                  sx @ cxy @ sy - sx @ self._u - sy @ self._v + sum_ab)
        kk = hsic(np.sum(cxx * cxx), sum_aa, one_k, one_k,
                  sx @ cxx @ sx - 2 * sx @ self._wx + sum_aa)
        ll = hsic(np.sum(cyy * cyy), sum_bb, one_l, one_l,
                  sy @ cyy @ sy - 2 * sy @ self._wy + sum_bb)
        return float(kl), float(kk), float(ll)


def _pair(x, y) -> PairMoments:
    x, y = _check_pair(x, y)
    return PairMoments(x.shape[1], y.shape[1]).update(x, y)


def _moments_or_pair(x, y=None) -> PairMoments:
    return x if isinstance(x, PairMoments) else _pair(x, y)


# ---------------------------------------------------------------------------------------- CKA
def linear_cka(x, y=None, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment.

    .. math:: \mathrm{CKA}(X, Y) = \frac{\lVert Y_c^\top X_c \rVert_F^2}
              {\lVert X_c^\top X_c \rVert_F \, \lVert Y_c^\top Y_c \rVert_F}

    computed from streamed cross-products (the Gram form ``tr(KL) / (||K|| ||L||)`` when
    ``n <= d1 + d2``). ``debiased=True`` replaces each HSIC by its unbiased estimator (Song et
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
    m = _moments_or_pair(x, y)
    if not debiased and max(m.d1, m.d2) > m.count / 10:
        warnings.warn(f"linear_cka: max(d1, d2) = {max(m.d1, m.d2)} > n / 10 = {m.count / 10:.0f}; "
                      "the biased estimator is inflated at this sample size, use debiased=True",
                      DegenerateWarning, stacklevel=2)
    if debiased:
        kl, kk, ll = m.hsic_unbiased()
        denominator = math.sqrt(kk * ll) if kk > 0 and ll > 0 else 0.0
        return float(kl / denominator) if denominator else float("nan")
    gram = m.gram()
    if gram is not None:
        k, l_ = gram
        num, kk, ll = np.sum(k * l_), np.sum(k * k), np.sum(l_ * l_)
    else:
        sxx, syy, sxy = m.blocks()
        num, kk, ll = np.sum(sxy * sxy), np.sum(sxx * sxx), np.sum(syy * syy)
    denominator = math.sqrt(kk * ll)
    return float(num / denominator) if denominator > 0 else float("nan")


def rbf_cka(x, y, *, threshold: float = 0.5, max_samples: int = 20_000) -> float:
    r"""CKA with Gaussian kernels, :math:`k(x, x') = \exp(-\lVert x - x'\rVert^2 / (2\sigma^2))`.

    :math:`\sigma^2 = \theta^2 \cdot \mathrm{median}` of the squared distances (diagonal
    included), as in Kornblith et al.'s reference code; biased HSIC with ``H K H`` centring.
    Needs two ``n x n`` kernel matrices: refused above ``max_samples`` (subsample first).
    """
    x, y = _check_pair(x, y)
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
    eig_x = _eigh_desc(sxx) if eig_x is None else eig_x
    eig_y = _eigh_desc(syy) if eig_y is None else eig_y
    wx, wy = _inv_sqrt(sxx, eig_x), _inv_sqrt(syy, eig_y)
    rank = min(_rank(eig_x[0]), _rank(eig_y[0]))
    if not weights:
        rho = np.linalg.svd(wx @ sxy @ wy, compute_uv=False)
        return np.clip(rho[:rank], 0.0, 1.0), None
    u, rho, _ = np.linalg.svd(wx @ sxy @ wy)
    return np.clip(rho[:rank], 0.0, 1.0), wx @ u[:, :rank]


def cca(x, y=None, *, center: bool = True) -> np.ndarray:
    r"""Canonical correlations :math:`\rho_i = s_i(Q_x^\top Q_y)`, descending.

    Computed from scatter blocks as the singular values of
    :math:`S_{xx}^{-1/2} S_{xy} S_{yy}^{-1/2}`; ``cca_mean`` is their mean and ``cca_r2`` the
    mean of their squares. Refused when ``d1 + d2 >= n``; warns when ``max(d) > n / 10``.
    """
    m = _moments_or_pair(x, y)
    _guard_cca(m.count, m.d1, m.d2, "cca")
    if center:
        return _canonical(*m.blocks(), m.eig("x"), m.eig("y"))[0]
    return _canonical(*m.blocks(center=False))[0]


def svcca(x, y=None, *, variance: float = 0.99) -> float:
    """SVCCA: CCA mean after keeping each side's top principal directions explaining
    ``variance`` of its variance (Raghu et al., NeurIPS 2017, arXiv 1706.05806)."""
    m = _moments_or_pair(x, y)
    sxx, syy, sxy = m.blocks()

    def top(side):
        lam, vec = m.eig(side)
        p = np.cumsum(np.clip(lam, 0, None)) / max(lam.clip(0).sum(), 1e-300)
        k = int(np.searchsorted(p, variance - 1e-12) + 1)
        return vec[:, :k]

    vx, vy = top("x"), top("y")
    _guard_cca(m.count, vx.shape[1], vy.shape[1], "svcca")
    rho, _ = _canonical(vx.T @ sxx @ vx, vy.T @ syy @ vy, vx.T @ sxy @ vy)
    return float(rho.mean()) if rho.size else float("nan")


def pwcca(x, y=None) -> float:
    r"""Projection-weighted CCA: :math:`\sum_i a_i \rho_i / \sum_i a_i`,
    :math:`a_i = \sum_j |\langle h_i, x_j \rangle|`.

    ``h_i`` are the unit-norm canonical variates of the layer with fewer non-constant neurons
    and ``x_j`` that layer's centred neurons (Morcos et al., NeurIPS 2018, arXiv 1806.05759;
    unlike the official code, the narrower layer's own activations are used whichever side it
    is on).
    """
    m = _moments_or_pair(x, y)
    _guard_cca(m.count, m.d1, m.d2, "pwcca")
    sxx, syy, sxy = m.blocks()
    eig_x, eig_y = m.eig("x"), m.eig("y")

    if _rank(eig_y[0]) < _rank(eig_x[0]):
        sxx, syy, sxy, eig_x, eig_y = syy, sxx, sxy.T, eig_y, eig_x
    rho, weights = _canonical(sxx, syy, sxy, eig_x, eig_y, weights=True)
    if not rho.size:  # a constant layer has no canonical direction
        return float("nan")
    a = np.abs(sxx @ weights).sum(axis=0)  # <h_i, x_j> = (Sxx w_i)_j with ||h_i|| = 1
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


def principal_angles(x, y=None, *, k: int = 10, space: str = "sample") -> np.ndarray:
    """Principal angles between the top-k principal subspaces of X and Y (radians, ascending).

    ``space="sample"``: between the spans of the top-k left singular vectors of the centred
    data (n-dimensional; works for any widths), from moments as
    ``diag(1/s_x) V_x^T S_xy V_y diag(1/s_y)``. ``space="feature"``: between the top-k principal
    directions, only when both live in the same coordinates (d1 == d2), as cosine-distilled
    students do.
    """
    m = _moments_or_pair(x, y)
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
    m = _moments_or_pair(x, y)
    sxx, syy, sxy = m.blocks()
    n = m.count
    if alpha == 1.0:
        wx, wy = np.eye(m.d1), np.eye(m.d2)
    else:
        (lx, vx), (ly, vy) = m.eig("x"), m.eig("y")
        wx = alpha * np.eye(m.d1) + (1 - alpha) * _inv_sqrt(sxx / n, (lx / n, vx))
        wy = alpha * np.eye(m.d2) + (1 - alpha) * _inv_sqrt(syy / n, (ly / n, vy))
    nuclear = np.linalg.svd(wx.T @ sxy @ wy, compute_uv=False).sum()
    norms = math.sqrt(max(np.trace(wx.T @ sxx @ wx) * np.trace(wy.T @ syy @ wy), 0.0))
    if not norms > 0:  # a constant representation has no shape
        return float("nan")
    return float(np.arccos(np.clip(nuclear / norms, -1.0, 1.0)))


# ---------------------------------------------------------------------------- information kept
def variance_captured(x, y=None) -> np.ndarray:
    r"""The curve :math:`A(k) = \sum_{j \le k} \lVert Y_c v_j \rVert^2 / \lVert Y_c \rVert_F^2`.

    ``v_j`` are the teacher's principal directions (descending variance); the student must live
    in the teacher's space (d1 == d2), as cosine-distilled students do (arXiv 2603.06698,
    Fig. 1). Returns A(1..d).
    """
    m = _moments_or_pair(x, y)
    if m.d1 != m.d2:
        raise InputError(f"variance_captured needs the student in the teacher's space (d1 == d2); "
                         f"got {m.d1} and {m.d2}")
    _, syy, _ = m.blocks()
    _, vx = m.eig("x")
    along = _along(vx, syy)
    total = np.trace(syy)
    return np.cumsum(along) / total if total > 0 else np.full(m.d1, np.nan)


def ridge_retention(folds, *, ridge: float = 1e-3) -> tuple[float, np.ndarray]:
    r"""Cross-validated linear predictivity of the teacher from the student, and its spectrum.

    For each fold f, ridge regression of the teacher on the student is fitted on the other folds
    (centred at their means; penalty ``ridge * tr(S_yy) / d2``) and scored on f. With the
    held-out residual scatter ``R`` and the held-out teacher scatter ``S_tt`` (about the fold's
    own mean), pooled over folds:

    * ``linear_predictivity`` :math:`= 1 - \mathrm{tr}\,R / \mathrm{tr}\,S_{tt}` (R^2 pooled over
      teacher dimensions);
    * the **retention spectrum** :math:`r_j = 1 - v_j^\top R v_j / v_j^\top S_{tt} v_j`, for each
      teacher principal direction ``v_j`` of the whole data: the fraction of the teacher's
      variance along ``v_j`` that the student preserves, linearly recoverable on held-out data.

    Parameters
    ----------
    folds : sequence of PairMoments
        One accumulator per fold (the same shift is not required).
    ridge : float

    Returns
    -------
    (float, ndarray of shape (d1,))
    """
    folds = list(folds)
    if len(folds) < 2:
        raise InputError(f"cross-validation needs at least 2 folds; got {len(folds)}")
    d1, d2 = folds[0].d1, folds[0].d2
    stats = [f.joint._centered() for f in folds]
    n_all = sum(s[0] for s in stats)
    mean_all = sum(s[0] * s[1] for s in stats) / n_all
    about_all = [s[2] + s[0] * np.outer(s[1] - mean_all, s[1] - mean_all) for s in stats]
    m2_all = sum(about_all)
    _, v = _eigh_desc(m2_all[:d1, :d1])
    residual = np.zeros((d1, d1))
    held_out = np.zeros((d1, d1))
    for i, (n_f, mean_f, m2_f) in enumerate(stats):
        # the other folds' scatter about their own mean, by the parallel-axis theorem
        n_r = n_all - n_f
        mean_r = (n_all * mean_all - n_f * mean_f) / n_r
        m2_r = m2_all - about_all[i] - n_r * np.outer(mean_r - mean_all, mean_r - mean_all)
        syy, syt = m2_r[d1:, d1:], m2_r[d1:, :d1]
        penalty = ridge * np.trace(syy) / d2
        if penalty > 0:
            w = np.linalg.solve(syy + penalty * np.eye(d2), syt)  # (d2, d1)
        else:  # a constant student predicts nothing beyond the mean
            w = np.zeros((d2, d1))
        delta = mean_f - mean_r
        about = m2_f + n_f * np.outer(delta, delta)  # held-out scatter about the train mean
        s_tt, s_ty, s_yy = about[:d1, :d1], about[:d1, d1:], about[d1:, d1:]
        residual += s_tt - s_ty @ w - w.T @ s_ty.T + w.T @ s_yy @ w
        held_out += m2_f[:d1, :d1]
    total = np.trace(held_out)
    predictivity = 1.0 - np.trace(residual) / total if total > 0 else float("nan")
    along_res = _along(v, residual)
    along_tt = _along(v, held_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        spectrum = np.where(along_tt > 0, 1.0 - along_res / along_tt, np.nan)
    return float(predictivity), spectrum


# ------------------------------------------------------------------------- sample-level metrics
def _unit_rows(z: np.ndarray, dtype) -> np.ndarray:
    z = z.astype(dtype, copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", z, z))
    z /= np.maximum(norms, 1e-12)[:, None]
    return z


def _knn_lists(unit: np.ndarray, k: int, tile: int) -> np.ndarray:
    """k nearest neighbours (by dot product of unit rows, self excluded) of every row.

    The similarity matrix is symmetric, so only its upper tiles are computed: each
    ``tile x tile`` product serves the rows of both tiles (the lower one through its transpose),
    half the arithmetic of computing every row against every column.
    """
    from .._kernels import topk_update

    n = unit.shape[0]
    idx = np.empty((n, k), np.int64)
    val = np.empty((n, k), unit.dtype)
    filled = np.zeros(n, np.int64)
    starts = range(0, n, tile)
    for a in starts:  # row tiles in increasing order; columns of each row arrive in order too
        rows = unit[a:a + tile]
        for b in starts:
            if b < a:
                continue
            sims = rows @ unit[b:b + tile].T
            topk_update(sims, a, b, idx, val, filled)
            if b > a:
                topk_update(np.ascontiguousarray(sims.T), b, a, idx, val, filled)
    return idx


def mutual_knn(x, y, *, k: int = 10, tile: int | None = None) -> tuple[float, float]:
    """Mutual k-nearest-neighbour alignment and its chance level.

    For each sample i, ``|kNN_X(i) & kNN_Y(i)| / k`` with neighbours by cosine similarity, i
    itself excluded, averaged over i (Huh et al., "The platonic representation hypothesis",
    ICML 2024, arXiv 2405.07987). Computed by ``tile x tile`` blocks of the similarity matrix
    (BLAS), the upper ones only, each folded into running top-k lists by a numba selection
    kernel: never an ``n x n`` matrix. Ties go to the lower index. Similarities are float32 for
    float16/32 input, float64 for float64.

    Returns
    -------
    (score, chance) with chance = ``k / (n - 1)``. Needs the unit-normalised samples in memory
    (``n * (d1 + d2)`` values) and ``n * k`` neighbour lists.
    """
    from .._kernels import knn_overlap

    x, y = _check_pair(x, y)
    n = x.shape[0]
    k = int(k)
    if not 1 <= k < n:
        raise InputError(f"k must lie in 1..n-1 = {n - 1}; got {k}")
    dtype = np.float64 if np.float64 in (x.dtype, y.dtype) else np.float32
    # 1 MiB tiles (512 x 512 float32) stay in the core's cache between the BLAS call that writes
    # them and the selection that reads them: 256-768 ran 1.5x faster than 2048 (docs/performance.md)
    tile = int(tile or max(16, min(n, int(np.sqrt((1 << 20) / np.dtype(dtype).itemsize)))))
    idx_x = _knn_lists(_unit_rows(x, dtype), k, tile)
    idx_y = _knn_lists(_unit_rows(y, dtype), k, tile)
    return knn_overlap(idx_x, idx_y) / (n * k), k / (n - 1)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def infonce(student, teacher, *, tau: float = 0.1, batch_size: int = 64,
            reduction: str = "sample") -> tuple[float, float]:
    r"""InfoNCE loss of students against teachers and its mutual-information bound (nats).

    Over consecutive batches of ``batch_size`` rows (the last may be short):
    :math:`\ell_i = -\ln \mathrm{softmax}_j(\cos(s_i, t_j) / \tau)_{ii}`, student rows scored
    against the batch's teacher columns. ``reduction="sample"`` averages :math:`\ell_i` over all
    samples (van den Oord et al., arXiv 1807.03748); ``"batch"`` averages the per-batch means,
    the last short batch counting as one (arXiv 2603.06698). The bound is
    :math:`\ln B - L` averaged the same way (``<= ln B``).

    Returns
    -------
    (loss, mi_bound)
    """
    s, t = _check_pair(student, teacher)
    if reduction not in ("sample", "batch"):
        raise InputError(f"reduction must be 'sample' or 'batch'; got {reduction!r}")
    if tau <= 0 or batch_size < 2:
        raise InputError(f"tau must be > 0 and batch_size >= 2; got {tau}, {batch_size}")
    us, ut = _unit_rows(s, np.float64), _unit_rows(t, np.float64)
    losses, bounds, weights = [], [], []
    for start, stop in _batches(s.shape[0], batch_size):
        logits = us[start:stop] @ ut[start:stop].T / tau
        top = logits.max(axis=1, keepdims=True)
        lse = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        loss = float(np.mean(lse - np.diag(logits)))
        losses.append(loss)
        bounds.append(math.log(stop - start) - loss)
        weights.append(stop - start if reduction == "sample" else 1)
    return float(np.average(losses, weights=weights)), float(np.average(bounds, weights=weights))


def uniformity(z, *, t: float = 2.0, include_diagonal: bool = False,
               batch_size: int | None = None) -> float:
    r"""Uniformity of L2-normalised embeddings, :math:`\ln \mathrm{mean}\, e^{-t \lVert z_i - z_j \rVert^2}`.

    Over all pairs i != j by default (Wang & Isola, ICML 2020, arXiv 2005.10242), computed by
    row blocks without an ``n x n`` matrix. With ``batch_size``, the mean of the per-batch values
    over consecutive batches; arXiv 2603.06698 uses batches of 64 with the diagonal included.
    Lower is more uniform.
    """
    z = _unit_rows(check_matrix(z, "Z"), np.float64)
    n = z.shape[0]

    def value(rows: np.ndarray, cols: np.ndarray, offset: int, diagonal: bool):
        sq = np.maximum(2.0 - 2.0 * rows @ cols.T, 0.0)
        e = np.exp(-t * sq)
        if not diagonal:
            idx = np.arange(rows.shape[0])
            e[idx, idx + offset] = 0.0
        return e.sum()

    if batch_size:
        per_batch = []
        for start, stop in _batches(n, batch_size):
            zb = z[start:stop]
            m = stop - start
            pairs = m * m if include_diagonal else m * (m - 1)
            if pairs:
                per_batch.append(math.log(value(zb, zb, 0, include_diagonal) / pairs))
        return float(np.mean(per_batch))
    if n < 2 and not include_diagonal:
        raise InputError("uniformity over pairs i != j needs at least 2 samples")
    total = 0.0
    block = max(16, min(n, (32 << 20) // (8 * n)))
    for start in range(0, n, block):
        total += value(z[start:start + block], z, start, include_diagonal)
    pairs = n * n if include_diagonal else n * (n - 1)
    return float(math.log(total / pairs))
