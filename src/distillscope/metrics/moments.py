"""Mergeable first and second moments of a stream of feature rows, and their eigen-spectra.

This is the array layer under every dimensionality metric: plain ndarrays in, plain ndarrays
out. Samples arrive in chunks (from HDF5, from memory, from several workers); the accumulator
keeps partial sums that can be updated and merged in any order, so its memory depends on the
number of features ``d`` and never on the number of samples ``n``.

Two exact representations are used, chosen by size:

* while ``n <= d`` the prepared rows themselves are kept (``n * d <= d * d`` values, never more
  than the covariance would take) and the spectrum comes from the ``n x n`` Gram matrix;
* beyond that, shifted sums are kept: ``S = sum(y)`` and ``C = sum(y y^T)`` with
  ``y = x - shift``, ``shift`` being given or the mean of the first chunk, so that the centred
  scatter ``M2 = C - S S^T / n`` suffers no cancellation. Merging uses the pairwise update of
  Chan, Golub & LeVeque (1979): ``M2 = M2_a + M2_b + d d^T n_a n_b / n`` with
  ``d = mean_b - mean_a``, then expresses the result about the kept shift again.

Per chunk the work is one fused numba pass (float64 conversion, optional L2 normalisation, shift,
column sums, finiteness check) and one BLAS ``syrk`` (``Y^T Y``); ``benchmarks/`` shows why.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError

__all__ = ["SecondMoments", "NonFiniteError"]

#: the feature dtypes accepted everywhere (the store refuses others too)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


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


_SHIFT_ROWS = 1024


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
        accurate); default: the mean of the first chunk.

    Attributes
    ----------
    count : int
        Rows seen.
    zero_norm_rows : int
        Rows whose norm was zero (only counted when ``l2_normalize``).

    Notes
    -----
    Memory is ``O(d^2)`` whatever the number of rows. Values are accumulated in float64 from
    float16, float32 or float64 input.

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
                 shift: np.ndarray | None = None):
        if int(n_features) < 1:
            raise InputError(f"n_features must be a positive integer; got {n_features!r}")
        self.n_features = int(n_features)
        self.l2_normalize = bool(l2_normalize)
        self.count = 0
        self.zero_norm_rows = 0
        self._rows: list[np.ndarray] | None = []  # shifted rows while count <= d
        self._shift: np.ndarray | None = None  # fixed once set: given, or the first chunk's mean
        if shift is not None:
            self._shift = np.array(shift, dtype=np.float64).reshape(-1)
            if self._shift.size != self.n_features:
                raise InputError(f"shift must have {self.n_features} values; got {self._shift.size}")
        self._sum = np.zeros(self.n_features)  # S = sum(x - shift), once rows are dropped
        self._cross: np.ndarray | None = None  # C = sum((x - shift)(x - shift)^T)
        self._buffer = np.empty((0, self.n_features))
        self._colsum = np.empty(self.n_features)
        self._colcheck = np.empty(self.n_features)
        self.last_block = self._buffer  # the last chunk as prepared: float64, minus the shift

    # -- accumulation ---------------------------------------------------------------------
    def update(self, rows: np.ndarray) -> "SecondMoments":
        """Add a chunk of rows (``(m, d)`` float16/32/64); returns ``self``.

        After the call ``last_block`` holds the chunk as accumulated: float64, L2-normalised if
        asked, minus the shift.

        Raises
        ------
        NonFiniteError
            If the chunk holds NaN or infinite values; the moments are left unchanged.
        """
        from .._kernels import prepare_rows

        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise InputError(
                f"rows must have shape (m, {self.n_features}); got {rows.shape}"
            )
        if rows.dtype not in FLOAT_DTYPES:
            raise InputError(
                f"rows must be float16, float32 or float64; got {rows.dtype} "
                "(convert with .astype(np.float32))"
            )
        m = rows.shape[0]
        if m == 0:
            return self
        if rows.dtype == np.float16:  # numba has no float16
            from .._scratch import widen_float16

            rows = widen_float16(rows, "moments-float16")
        rows = np.ascontiguousarray(rows)
        out = self._scratch(m)
        if self._shift is None and not self.l2_normalize:
            # the mean of the first chunk's first rows: any shift near the mean keeps the sums
            # exact (1024 rows put it within ~sigma/32 of the mean, costing ~0.1% cancellation
            # in the final correction) without a pass over the whole chunk
            self._shift = rows[:_SHIFT_ROWS].mean(axis=0, dtype=np.float64)
        first = self._shift is None
        shift = np.zeros(self.n_features) if first else self._shift
        colsum = self._colsum
        has_bad, n_zero = prepare_rows(rows, shift, self.l2_normalize, out, colsum,
                                       self._colcheck)
        if has_bad:
            bad = ~np.isfinite(rows)
            row, column = np.argwhere(bad)[0]
            raise NonFiniteError(int(bad.any(axis=1).sum()), int(row), int(column))
        if first:  # L2-normalised rows: shift by the first chunk's mean once it is known
            mean = colsum / m
            out -= mean
            self._shift = mean
            colsum = np.zeros(self.n_features)
        self.zero_norm_rows += int(n_zero)
        self.last_block = out
        if self._rows is not None and self.count + m <= self.n_features:
            self._rows.append(out.copy())
        else:
            if self._rows is not None:
                self._rows_to_sums()
            self._sum += colsum
            self._cross += out.T @ out  # numpy dispatches a.T @ a to BLAS syrk
        self.count += m
        return self

    def merge(self, other: "SecondMoments") -> "SecondMoments":
        """Combine with the moments of other rows (any split of the data gives the same result).

        Returns ``self``, updated in place (its shift is kept); ``other`` is not modified.
        """
        if other.n_features != self.n_features or other.l2_normalize != self.l2_normalize:
            raise InputError(
                "cannot merge moments of different shapes or preprocessing: "
                f"(d={self.n_features}, l2_normalize={self.l2_normalize}) vs "
                f"(d={other.n_features}, l2_normalize={other.l2_normalize})"
            )
        self.zero_norm_rows += other.zero_norm_rows
        if other.count == 0:
            return self
        if self._shift is None:
            self._shift = other._shift.copy()
        if (self._rows is not None and other._rows is not None
                and self.count + other.count <= self.n_features):
            offset = other._shift - self._shift
            self._rows.extend(r + offset for r in other._rows)
            self.count += other.count
            return self
        n_a, mean_a, m2_a = self._centered()
        n_b, mean_b, m2_b = other._centered()
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)
        m2 = m2_a + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        away = mean - self._shift  # back to sums about the kept shift
        self._rows = None
        self._sum = n * away
        self._cross = m2 + n * np.outer(away, away)
        self.count = n
        return self

    # -- results ----------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """Mean row, float64 ``(d,)``."""
        return self._centered()[1]

    def scatter(self, center: bool = True) -> np.ndarray:
        """``Yc^T Yc`` (centred) or ``Y^T Y`` (not centred), float64 ``(d, d)``."""
        n, mean, m2 = self._centered()
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
        rounding noise and are set to zero.
        """
        if center:
            self._require_two()
        if self.count == 0:
            raise InputError("no rows were accumulated; the spectrum of nothing is undefined")
        denominator = self.count - 1 if center else self.count
        if self._rows is not None:
            y = np.concatenate(self._rows)
            y = y - y.mean(axis=0) if center else y + self._shift
            matrix = y @ y.T
        else:
            matrix = self.scatter(center)
        lam = np.linalg.eigvalsh(matrix)[::-1] / denominator
        full = np.zeros(self.n_features)
        full[: lam.size] = lam[: self.n_features]
        top = full[0] if full.size else 0.0
        full[full < top * matrix.shape[0] * np.finfo(np.float64).eps] = 0.0
        return full

    # -- internals --------------------------------------------------------------------------
    def _scratch(self, m: int) -> np.ndarray:
        if self._buffer.shape[0] < m:
            from .._scratch import scratch

            self._buffer = scratch("moments", (m, self.n_features), np.float64)
        return self._buffer[:m]

    def _rows_to_sums(self) -> None:
        y = np.concatenate(self._rows) if self._rows else np.zeros((0, self.n_features))
        self._rows = None
        self._sum = y.sum(axis=0)
        self._cross = y.T @ y

    def _centered(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count, mean, centred scatter) of the rows so far."""
        d = self.n_features
        if self.count == 0:
            return 0, np.zeros(d), np.zeros((d, d))
        if self._rows is not None:
            y = np.concatenate(self._rows)
            mean_shifted = y.mean(axis=0)
            yc = y - mean_shifted
            return self.count, self._shift + mean_shifted, yc.T @ yc
        mean_shifted = self._sum / self.count
        m2 = self._cross - np.outer(self._sum, mean_shifted)
        return self.count, self._shift + mean_shifted, m2

    def _require_two(self) -> None:
        if self.count < 2:
            raise InputError(
                f"centring needs at least 2 samples; got {self.count} "
                "(add samples, or use an estimator with center=False)"
            )
