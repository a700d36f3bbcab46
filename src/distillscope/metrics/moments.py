"""Mergeable first and second moments of a stream of feature rows, and their eigen-spectra.

This is the array layer under every dimensionality and alignment metric: plain ndarrays in,
plain ndarrays out. Samples arrive in chunks (from HDF5, from memory, from several workers); the
accumulator keeps partial sums that can be updated and merged in any order, so its memory
depends on the number of features ``d`` and never on the number of samples ``n``.

Two exact representations are used, chosen by size:

* while ``n <= d`` the prepared rows themselves are kept (``n * d <= d * d`` values, never more
  than the covariance would take) and the spectrum comes from the ``n x n`` Gram matrix;
* beyond that, shifted sums are kept: ``S = sum(y)`` and ``C = sum(y y^T)`` with
  ``y = x - shift``, ``shift`` being given or the mean of the first chunk, so that the centred
  scatter ``M2 = C - S S^T / n`` suffers no cancellation.

Two accumulators with different shifts merge exactly: the other's sums are re-expressed about
this one's shift (``y' = y + delta``: ``S' = S + n delta``, ``C' = C + S delta^T + delta S^T +
n delta delta^T``; Chan, Golub & LeVeque 1979 in sum form) and added. With ``norms=True`` the
sums the debiased CKA needs are kept too: ``a_i = ||y_i||^2``, ``sum a``, ``sum a^2`` and
``W = sum a_i y_i`` (re-expressed the same way, up to fourth order).

Per chunk the work is one fused numba pass (``RowPreparer``: float64 conversion, optional L2
normalisation, shift, column sums, finiteness check) and one BLAS ``syrk`` (``Y^T Y``);
``benchmarks/`` shows why.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from .._errors import InputError
from .linalg import eigh_desc

__all__ = ["SecondMoments", "RowPreparer", "Prepared", "NonFiniteError", "FLOAT_DTYPES"]

#: the feature dtypes accepted everywhere (the store refuses others too)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_SHIFT_ROWS = 1024


class NonFiniteError(InputError):
    """A chunk held NaN or infinite values; ``row`` is the first offending row of that chunk."""

    def __init__(self, n_bad_rows: int, row: int, column: int, message: str | None = None):
        self.n_bad_rows = n_bad_rows
        self.row = row
        self.column = column
        super().__init__(message or (
            f"features hold NaN or infinite values in {n_bad_rows} row(s), first at row {row}, "
            f"feature {column}; remove or repair those samples before the analysis"
        ))


class Prepared:
    """A chunk as accumulated: ``z`` float64 (L2-normalised if asked, minus the shift), its
    column sums, and how many of its rows had zero norm (counted under L2 normalisation).

    ``norms()`` (``a_i = ||z_i||^2``) is computed once and shared by every accumulator that
    reads the chunk.
    """

    __slots__ = ("z", "colsum", "n_zero", "_norms")

    def __init__(self, z: np.ndarray, colsum: np.ndarray, n_zero: int,
                 norms: np.ndarray | None = None):
        self.z = z
        self.colsum = colsum
        self.n_zero = n_zero
        self._norms = norms

    def norms(self) -> np.ndarray:
        """``a_i = ||z_i||^2`` of every row (cached)."""
        if self._norms is None:
            self._norms = np.einsum("ij,ij->i", self.z, self.z)
        return self._norms

    def rows(self, lo: int, hi: int) -> "Prepared":
        """The rows ``lo:hi`` of the chunk (its zero-norm rows are counted by the whole chunk)."""
        if lo == 0 and hi == self.z.shape[0]:
            return self
        part = self.z[lo:hi]
        norms = None if self._norms is None else self._norms[lo:hi]
        return Prepared(part, part.sum(axis=0), 0, norms)


class RowPreparer:
    """Turns raw rows into ``Prepared`` chunks about one shift, in one fused numba pass.

    The shift is given, or chosen at the first chunk: the mean of its first 1024 rows (any
    value near the mean keeps the sums exact; 1024 rows put it within ~sigma/32 of the mean),
    or, under L2 normalisation, the mean of the whole first chunk after normalising.
    """

    def __init__(self, n_features: int, *, l2_normalize: bool = False,
                 shift: np.ndarray | None = None):
        self.n_features = int(n_features)
        self.l2_normalize = bool(l2_normalize)
        self.shift = None if shift is None else _vector(shift, self.n_features, "shift")
        self._colsum = np.empty(self.n_features)
        self._colcheck = np.empty(self.n_features)

    def __getstate__(self) -> dict:  # scratch sums do not travel
        return {"n_features": self.n_features, "l2_normalize": self.l2_normalize,
                "shift": self.shift}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["n_features"], l2_normalize=state["l2_normalize"],
                      shift=state["shift"])

    def prepare(self, rows: np.ndarray, out: np.ndarray | None = None) -> Prepared:
        """Prepare a chunk ``(m, d)`` of float16/32/64 rows, into ``out`` if given
        (``(m, d)`` float64, C-contiguous) or this preparer's own buffer.

        Raises
        ------
        NonFiniteError
            If the chunk holds NaN or infinite values (the shift is then left unset).
        """
        from .._kernels import prepare_rows

        rows = check_rows(rows, self.n_features)
        m = rows.shape[0]
        if rows.dtype == np.float16:  # numba has no float16
            from .._scratch import widen_float16

            rows = widen_float16(rows)
        rows = np.ascontiguousarray(rows)
        if out is None:
            out = np.empty((m, self.n_features))
        if self.shift is None and not self.l2_normalize and m:
            self.shift = rows[:_SHIFT_ROWS].mean(axis=0, dtype=np.float64)
        first = self.shift is None
        shift = np.zeros(self.n_features) if first else self.shift
        has_bad, n_zero = prepare_rows(rows, shift, self.l2_normalize, out, self._colsum,
                                       self._colcheck)
        if has_bad:
            bad = ~np.isfinite(rows)
            row, column = np.argwhere(bad)[0]
            raise NonFiniteError(int(bad.any(axis=1).sum()), int(row), int(column))
        colsum = self._colsum
        if first and m:  # L2-normalised rows: shift by the first chunk's mean once it is known
            mean = colsum / m
            out -= mean
            self.shift = mean
            colsum = np.zeros(self.n_features)
        return Prepared(out, colsum, int(n_zero))


def check_rows(rows, n_features: int) -> np.ndarray:
    """``rows`` as a ``(m, n_features)`` float16/32/64 ndarray, or InputError."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise InputError(f"rows must have shape (m, {n_features}); got {rows.shape}")
    if rows.dtype not in FLOAT_DTYPES:
        raise InputError(f"rows must be float16, float32 or float64; got {rows.dtype} "
                         "(convert with .astype(np.float32))")
    return rows


def _vector(value, size: int, name: str) -> np.ndarray:
    out = np.array(value, dtype=np.float64).reshape(-1)
    if out.size != size:
        raise InputError(f"{name} must have {size} values; got {out.size}")
    return out


@dataclass
class _Sums:
    """Sums about a shift: ``n``, ``S = sum y``, ``C = sum y y^T`` and the norm sums."""

    n: int
    s: np.ndarray
    c: np.ndarray
    a: float = 0.0  # sum ||y||^2
    aa: float = 0.0  # sum ||y||^4
    w: np.ndarray | None = None  # sum ||y||^2 y

    def shifted(self, delta: np.ndarray) -> "_Sums":
        """The same sums about ``shift - delta`` (rows ``y + delta``), exactly."""
        n, s, c = self.n, self.s, self.c
        dd = float(delta @ delta)
        sd = float(s @ delta)
        c_new = c + np.outer(s, delta) + np.outer(delta, s) + n * np.outer(delta, delta)
        out = _Sums(n, s + n * delta, c_new)
        if self.w is not None:
            cd = c @ delta
            out.a = self.a + 2 * sd + n * dd
            out.w = self.w + delta * self.a + 2 * cd + 2 * delta * sd + dd * s + n * dd * delta
            out.aa = (self.aa + 4 * float(delta @ cd) + n * dd * dd + 4 * float(self.w @ delta)
                      + 2 * dd * self.a + 4 * dd * sd)
        return out


class SecondMoments:
    """Streaming, mergeable count, mean and scatter matrix of ``d``-dimensional rows.

    Parameters
    ----------
    n_features : int
        The dimension ``d`` of every row.
    l2_normalize : bool, default False
        Divide each row by its Euclidean norm (``max(||x||, 1e-12)``, so zero rows stay zero)
        before anything else, as arXiv 2603.06698 does.
    shift : ndarray, optional
        The vector subtracted before accumulating (any value near the mean keeps the sums
        accurate); default: chosen from the first chunk (``RowPreparer``).
    norms : bool, default False
        Also keep ``sum a``, ``sum a^2`` and ``sum a y`` with ``a = ||y||^2`` (the debiased
        CKA of ``PairMoments`` needs them).

    Attributes
    ----------
    count : int
        Rows seen.
    zero_norm_rows : int
        Rows whose norm was zero (only counted when ``l2_normalize``).

    Notes
    -----
    Memory is ``O(d^2)`` whatever the number of rows. Values are accumulated in float64 from
    float16, float32 or float64 input. The state is plain numpy arrays (picklable).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1000, 8))
    >>> a, b = SecondMoments(8), SecondMoments(8)
    >>> _ = a.update(x[:300]), b.update(x[300:])
    >>> bool(np.allclose(a.merge(b).covariance(), np.cov(x, rowvar=False)))
    True
    """

    def __init__(self, n_features: int, *, l2_normalize: bool = False,
                 shift: np.ndarray | None = None, norms: bool = False):
        if int(n_features) < 1:
            raise InputError(f"n_features must be a positive integer; got {n_features!r}")
        self.n_features = int(n_features)
        self.l2_normalize = bool(l2_normalize)
        self.norms = bool(norms)
        self.count = 0
        self.zero_norm_rows = 0
        self.preparer = RowPreparer(self.n_features, l2_normalize=l2_normalize, shift=shift)
        self._rows: list[np.ndarray] | None = []  # shifted rows while count <= d
        self._sums: _Sums | None = None  # once rows are dropped
        self._cache: dict = {}  # centred scatter and its eigen-decomposition, until updated

    @property
    def shift(self) -> np.ndarray | None:
        """The vector subtracted from every row (None until the first chunk)."""
        return self.preparer.shift

    # -- accumulation ---------------------------------------------------------------------
    def update(self, rows: np.ndarray) -> "SecondMoments":
        """Add a chunk of rows (``(m, d)`` float16/32/64); returns ``self``.

        Raises
        ------
        NonFiniteError
            If the chunk holds NaN or infinite values; the moments are left unchanged.
        """
        rows = check_rows(rows, self.n_features)
        if rows.shape[0] == 0:
            return self
        from .._scratch import POOL

        out = POOL.take((rows.shape[0], self.n_features), np.float64)
        try:
            return self.add_prepared(self.preparer.prepare(rows, out=out))
        finally:
            POOL.give(out)

    def add_prepared(self, chunk: Prepared, shift: np.ndarray | None = None) -> "SecondMoments":
        """Add a chunk prepared about this accumulator's shift; returns ``self``.

        ``shift`` is the one the chunk was prepared about, when not by ``self.preparer``: it
        becomes this accumulator's shift if it has none yet, and must equal it otherwise.
        """
        z = chunk.z
        m = z.shape[0]
        if shift is not None:
            if self.shift is None:
                self.preparer.shift = np.array(shift, dtype=np.float64)
            elif not np.array_equal(shift, self.shift):
                raise InputError("SecondMoments.add_prepared: the chunk was prepared about "
                                 "another shift")
        if m == 0:
            return self
        self._cache.clear()
        self.zero_norm_rows += chunk.n_zero
        if self._rows is not None and self.count + m <= self.n_features:
            self._rows.append(z.copy())
        else:
            if self._rows is not None:
                self._rows_to_sums()
            sums = self._sums
            sums.n += m
            sums.s += chunk.colsum
            sums.c += z.T @ z  # numpy dispatches a.T @ a to BLAS syrk
            if self.norms:
                a = chunk.norms()
                sums.a += float(a.sum())
                sums.aa += float(a @ a)
                sums.w += a @ z
        self.count += m
        return self

    def merge(self, other: "SecondMoments") -> "SecondMoments":
        """Combine with the moments of other rows (any split of the data gives the same result).

        Returns ``self``, updated in place (its shift is kept, the other's sums are re-expressed
        about it); ``other`` is not modified.
        """
        if (other.n_features != self.n_features or other.l2_normalize != self.l2_normalize
                or other.norms != self.norms):
            raise InputError(
                "cannot merge moments of different shapes or preprocessing: "
                f"(d={self.n_features}, l2_normalize={self.l2_normalize}) vs "
                f"(d={other.n_features}, l2_normalize={other.l2_normalize})"
            )
        self.zero_norm_rows += other.zero_norm_rows
        if other.count == 0:
            return self
        self._cache.clear()
        if self.shift is None:
            self.preparer.shift = other.shift.copy()
        offset = other.shift - self.shift
        if (self._rows is not None and other._rows is not None
                and self.count + other.count <= self.n_features):
            self._rows.extend(r + offset for r in other._rows)
            self.count += other.count
            return self
        if self._rows is not None:
            self._rows_to_sums()
        theirs = other.sums()
        if offset.any():
            theirs = theirs.shifted(offset)
        mine = self._sums
        mine.n += theirs.n
        mine.s += theirs.s
        mine.c += theirs.c
        if self.norms:
            mine.a += theirs.a
            mine.aa += theirs.aa
            mine.w += theirs.w
        self.count += other.count
        return self

    @classmethod
    def from_sums(cls, shift: np.ndarray, n: float, s: np.ndarray, c: np.ndarray, *,
                  a: float = 0.0, aa: float = 0.0, w: np.ndarray | None = None,
                  l2_normalize: bool = False) -> "SecondMoments":
        """Moments whose rows summed to ``n``, ``s = sum y`` and ``c = sum y y^T`` about
        ``shift`` (and, given ``w``, the norm sums): a bootstrap replicate's weighted sums
        (``distillscope.engine.bootstrap``)."""
        out = cls(len(shift), l2_normalize=l2_normalize, shift=shift, norms=w is not None)
        out._rows, out.count = None, int(round(n))
        out._sums = _Sums(out.count, s, c, a, aa, w)
        return out

    def copy(self) -> "SecondMoments":
        """An independent accumulator with the same state."""
        out = SecondMoments(self.n_features, l2_normalize=self.l2_normalize, shift=self.shift,
                            norms=self.norms)
        return out.merge(self)

    # -- results ----------------------------------------------------------------------------
    def sums(self) -> _Sums:
        """The sums about the shift (``n``, ``S``, ``C`` and, with ``norms``, the norm sums)."""
        if self._rows is None:
            return self._sums
        y = np.concatenate(self._rows) if self._rows else np.zeros((0, self.n_features))
        out = _Sums(y.shape[0], y.sum(axis=0), y.T @ y)
        if self.norms:
            a = np.einsum("ij,ij->i", y, y)
            out.a, out.aa, out.w = float(a.sum()), float(a @ a), a @ y
        return out

    @property
    def mean(self) -> np.ndarray:
        """Mean row, float64 ``(d,)``."""
        return self.centered()[1]

    def scatter(self, center: bool = True) -> np.ndarray:
        """``Yc^T Yc`` (centred) or ``Y^T Y`` (not centred), float64 ``(d, d)``."""
        n, mean, m2 = self.centered()
        if center:
            return m2
        return m2 + n * np.outer(mean, mean)

    def covariance(self) -> np.ndarray:
        """Sample covariance ``Yc^T Yc / (n - 1)``, float64 ``(d, d)``."""
        self._require_two()
        return self.scatter(center=True) / (self.count - 1)

    def eigenvalues(self, center: bool = True) -> np.ndarray:
        """Eigen-spectrum of the covariance (or second moment), descending, float64, length d.

        ``center=True``: eigenvalues of ``Yc^T Yc / (n - 1)``; ``center=False``: of
        ``Y^T Y / n``. Computed from the ``n x n`` Gram matrix when ``n <= d`` (the non-zero
        eigenvalues are the same; the rest are zero). Values below ``lam_max * m * eps``
        (``m`` the size of the matrix decomposed, ``eps`` float64's machine epsilon) are
        rounding noise and are set to zero. Computed once per state (read-only: every
        convention of a pass reads the same array).
        """
        if center:
            self._require_two()
        if self.count == 0:
            raise InputError("no rows were accumulated; the spectrum of nothing is undefined")
        return self.cached(("eigenvalues", bool(center)), lambda: self._eigenvalues(center))

    def _eigenvalues(self, center: bool) -> np.ndarray:
        denominator = self.count - 1 if center else self.count
        if self._rows is not None:
            y = np.concatenate(self._rows)
            y = y - y.mean(axis=0) if center else y + self.shift
            matrix = y @ y.T
        else:
            matrix = self.scatter(center)
        lam = np.linalg.eigvalsh(matrix)[::-1] / denominator
        full = np.zeros(self.n_features)
        full[: lam.size] = lam[: self.n_features]
        top = full[0] if full.size else 0.0
        full[full < top * matrix.shape[0] * np.finfo(np.float64).eps] = 0.0
        full.flags.writeable = False
        return full

    def centered(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count, mean, centred scatter) of the rows so far (cached until the next update)."""
        if "centered" not in self._cache:
            self._cache["centered"] = self._centered()
        return self._cache["centered"]

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Descending eigen-decomposition ``(lam, vectors)`` of the centred scatter (cached):
        a teacher's is computed once for every student compared with it."""
        return self.cached("eigh", lambda: eigh_desc(self.centered()[2]))

    def cached(self, key, compute):
        """``compute()`` once per state: what is derived from these moments (their
        decompositions, whitening) is shared by every metric and pair that reads them."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _centered(self) -> tuple[int, np.ndarray, np.ndarray]:
        d = self.n_features
        if self.count == 0:
            return 0, np.zeros(d), np.zeros((d, d))
        if self._rows is not None:
            y = np.concatenate(self._rows)
            mean_shifted = y.mean(axis=0)
            yc = y - mean_shifted
            return self.count, self.shift + mean_shifted, yc.T @ yc
        sums = self._sums
        mean_shifted = sums.s / self.count
        m2 = sums.c - np.outer(sums.s, mean_shifted)
        return self.count, self.shift + mean_shifted, m2

    @property
    def nbytes(self) -> int:
        """Memory held by the accumulated state."""
        if self._rows is not None:
            return sum(r.nbytes for r in self._rows)
        held = self._sums.s.nbytes + self._sums.c.nbytes
        return held + (self._sums.w.nbytes if self._sums.w is not None else 0)

    # -- internals --------------------------------------------------------------------------
    def _rows_to_sums(self) -> None:
        rows_mode = self._rows is not None and bool(self._rows)
        self._sums = self.sums() if rows_mode else _Sums(
            0, np.zeros(self.n_features), np.zeros((self.n_features, self.n_features)),
            0.0, 0.0, np.zeros(self.n_features) if self.norms else None)
        if self.norms and self._sums.w is None:
            self._sums.w = np.zeros(self.n_features)
        self._rows = None

    def _require_two(self) -> None:
        if self.count < 2:
            raise InputError(
                f"centring needs at least 2 samples; got {self.count} "
                "(add samples, or use an estimator with center=False)"
            )
