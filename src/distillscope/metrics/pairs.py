"""Joint moments of paired rows: the teacher X (d1) and the student Y (d2), streamed and mergeable.

``PairMoments`` holds the moments of each side (``SecondMoments``, with the norm sums the
debiased CKA needs) and the cross sums between them (``CrossMoments``): ``Sxx``, ``Syy`` and
``Sxy`` about fixed shifts, plus ``sum a b``, ``sum b x`` and ``sum a y`` with ``a = ||x||^2``,
``b = ||y||^2`` of the shifted rows. Every alignment metric that is a function of second
moments (``distillscope.metrics.alignment``) reads it. Memory is ``O((d1 + d2)^2)``,
independent of n.

The engine accumulates the three parts separately, so a teacher's own moments are computed once
and shared by every student it is compared with; ``PairMoments.from_parts`` assembles them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import InputError
from .moments import Prepared, SecondMoments, check_rows

__all__ = ["CrossMoments", "PairMoments", "pair_moments", "check_pair", "fold_bounds", "merged"]


class CrossMoments:
    """Mergeable cross sums of paired prepared rows ``zx`` (d1) and ``zy`` (d2).

    State about the shifts ``(cx, cy)`` of the two sides: ``count``, ``sx = sum zx``,
    ``sy = sum zy``, ``cxy = sum zx zy^T``, and for the debiased CKA ``sum a``, ``sum b``,
    ``sum a b``, ``u = sum b zx`` and ``v = sum a zy`` (``a = ||zx||^2``, ``b = ||zy||^2``).
    Merging states about other shifts re-expresses them about this one's first, exactly.
    """

    def __init__(self, d1: int, d2: int):
        self.d1, self.d2 = int(d1), int(d2)
        self.count = 0
        self.shifts: tuple[np.ndarray, np.ndarray] | None = None
        self.sx = np.zeros(self.d1)
        self.sy = np.zeros(self.d2)
        self.cxy = np.zeros((self.d1, self.d2))
        self.a = 0.0
        self.b = 0.0
        self.ab = 0.0
        self.u = np.zeros(self.d1)
        self.v = np.zeros(self.d2)

    def add_prepared(self, x: Prepared, y: Prepared,
                     shifts: tuple[np.ndarray, np.ndarray]) -> "CrossMoments":
        """Add a chunk of paired rows prepared about ``shifts``; returns ``self``."""
        m = x.z.shape[0]
        if m != y.z.shape[0]:
            raise InputError(f"paired chunks must have equal rows; got {m} and {y.z.shape[0]}")
        if m == 0:
            return self
        if self.shifts is None:
            self.shifts = (np.array(shifts[0], float), np.array(shifts[1], float))
        elif not (np.array_equal(shifts[0], self.shifts[0])
                  and np.array_equal(shifts[1], self.shifts[1])):
            raise InputError("CrossMoments: every chunk must be prepared about the same shifts")
        a, b = x.norms(), y.norms()
        self.count += m
        self.sx += x.colsum
        self.sy += y.colsum
        self.cxy += x.z.T @ y.z
        self.a += float(a.sum())
        self.b += float(b.sum())
        self.ab += float(a @ b)
        self.u += b @ x.z
        self.v += a @ y.z
        return self

    def shifted(self, dx: np.ndarray, dy: np.ndarray) -> "CrossMoments":
        """The same sums about shifts ``(cx - dx, cy - dy)`` (rows ``zx + dx``, ``zy + dy``)."""
        n, sx, sy, c = self.count, self.sx, self.sy, self.cxy
        xx, yy = float(dx @ dx), float(dy @ dy)
        sxd, syd = float(sx @ dx), float(sy @ dy)
        cdy, cdx = c @ dy, c.T @ dx
        out = CrossMoments(self.d1, self.d2)
        out.count = n
        out.shifts = (self.shifts[0] - dx, self.shifts[1] - dy)
        out.sx, out.sy = sx + n * dx, sy + n * dy
        out.cxy = c + np.outer(sx, dy) + np.outer(dx, sy) + n * np.outer(dx, dy)
        out.a = self.a + 2 * sxd + n * xx
        out.b = self.b + 2 * syd + n * yy
        out.ab = (self.ab + 2 * float(self.v @ dy) + yy * self.a + 2 * float(self.u @ dx)
                  + 4 * float(dx @ cdy) + 2 * yy * sxd + xx * self.b + 2 * xx * syd + n * xx * yy)
        out.u = self.u + dx * self.b + 2 * cdy + 2 * dx * syd + yy * sx + n * yy * dx
        out.v = self.v + dy * self.a + 2 * cdx + 2 * dy * sxd + xx * sy + n * xx * dy
        return out

    def merge(self, other: "CrossMoments") -> "CrossMoments":
        """Add the sums of other rows (re-expressed about this state's shifts); returns ``self``."""
        if (other.d1, other.d2) != (self.d1, self.d2):
            raise InputError(f"cannot merge cross moments of shapes {(self.d1, self.d2)} and "
                             f"{(other.d1, other.d2)}")
        if other.count == 0:
            return self
        if self.shifts is None:
            self.shifts = (other.shifts[0].copy(), other.shifts[1].copy())
        dx, dy = other.shifts[0] - self.shifts[0], other.shifts[1] - self.shifts[1]
        theirs = other.shifted(dx, dy) if (dx.any() or dy.any()) else other
        self.count += theirs.count
        for name in ("sx", "sy", "cxy", "u", "v"):
            getattr(self, name).__iadd__(getattr(theirs, name))
        self.a += theirs.a
        self.b += theirs.b
        self.ab += theirs.ab
        return self

    @property
    def nbytes(self) -> int:
        return self.cxy.nbytes + self.sx.nbytes + self.sy.nbytes + self.u.nbytes + self.v.nbytes


class PairMoments:
    """Streamed, mergeable joint moments of teacher rows X (d1) and student rows Y (d2).

    Parameters
    ----------
    d1, d2 : int
    shift : tuple of ndarray, optional
        The shifts ``(cx, cy)``; by default chosen from the first chunk.

    Notes
    -----
    Memory is ``O((d1 + d2)^2)``, independent of n. ``blocks``, ``eig``, ``canonical`` and the
    unbiased HSICs are cached; ``update`` and ``merge`` clear the cache.
    """

    def __init__(self, d1: int, d2: int, *, shift: tuple[np.ndarray, np.ndarray] | None = None):
        self.x = SecondMoments(d1, shift=None if shift is None else shift[0], norms=True)
        self.y = SecondMoments(d2, shift=None if shift is None else shift[1], norms=True)
        self.xy = CrossMoments(d1, d2)
        self._cache: dict = {}

    @classmethod
    def from_parts(cls, x: SecondMoments, y: SecondMoments, xy: CrossMoments) -> "PairMoments":
        """Assemble from the moments of each side and their cross sums (the same rows)."""
        if not (x.count == y.count == xy.count):
            raise InputError(f"the parts hold different numbers of rows: {x.count}, {y.count}, "
                             f"{xy.count}")
        if not (x.norms and y.norms):
            raise InputError("PairMoments needs both sides accumulated with norms=True")
        out = cls.__new__(cls)
        out.x, out.y, out._cache = x, y, {}
        if xy.count and not (np.array_equal(xy.shifts[0], x.shift)
                             and np.array_equal(xy.shifts[1], y.shift)):
            xy = xy.shifted(xy.shifts[0] - x.shift, xy.shifts[1] - y.shift)
        out.xy = xy
        return out

    @property
    def d1(self) -> int:
        return self.x.n_features

    @property
    def d2(self) -> int:
        return self.y.n_features

    @property
    def count(self) -> int:
        return self.x.count

    def update(self, x: np.ndarray, y: np.ndarray) -> "PairMoments":
        """Add a chunk of paired rows; returns ``self``."""
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise InputError(f"paired chunks must be 2-D with equal rows; got {x.shape}, {y.shape}")
        check_rows(x, self.d1)
        check_rows(y, self.d2)
        if x.shape[0] == 0:
            return self
        from .._scratch import POOL

        self._cache.clear()
        out_x = POOL.take((x.shape[0], self.d1), np.float64)
        out_y = POOL.take((y.shape[0], self.d2), np.float64)
        try:
            px = self.x.preparer.prepare(x, out=out_x)
            py = self.y.preparer.prepare(y, out=out_y)
            self.x.add_prepared(px)
            self.y.add_prepared(py)
            self.xy.add_prepared(px, py, (self.x.shift, self.y.shift))
        finally:
            POOL.give(out_x)
            POOL.give(out_y)
        return self

    def merge(self, other: "PairMoments") -> "PairMoments":
        """Combine with the moments of other rows; returns ``self``."""
        self._cache.clear()
        self.x.merge(other.x)
        self.y.merge(other.y)
        self.xy.merge(other.xy)
        return self

    # -- blocks ---------------------------------------------------------------------------
    def centered(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count, mean, centred scatter) of the joint rows ``[x, y]``."""
        n, mx, sxx = self.x.centered()
        _, my, syy = self.y.centered()
        sxy = self.blocks()[2]
        return n, np.concatenate([mx, my]), np.block([[sxx, sxy], [sxy.T, syy]])

    def blocks(self, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scatter blocks ``(Sxx, Syy, Sxy)`` of the centred (or raw) rows (cached)."""
        key = ("blocks", center)
        if key not in self._cache:
            n, mx, sxx = self.x.centered()
            _, my, syy = self.y.centered()
            xy = self.xy
            sxy = xy.cxy - np.outer(xy.sx, xy.sy / n) if n else xy.cxy.copy()
            if not center:
                sxx = sxx + n * np.outer(mx, mx)
                syy = syy + n * np.outer(my, my)
                sxy = sxy + n * np.outer(mx, my)
            self._cache[key] = (sxx, syy, sxy)
        return self._cache[key]

    def eig(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Descending eigen-decomposition of the centred ``Sxx`` (side "x") or ``Syy``, cached
        by that side's moments (shared by every pair they are part of)."""
        return (self.x if side == "x" else self.y).eigh()

    def cached(self, key, compute):
        """``compute()`` once per state (metrics sharing one decomposition use this)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

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
        x, y, xy = self.x.sums(), self.y.sums(), self.xy
        sx, sy = x.s, y.s

        def hsic(trace_kl, diag_kl, one_k, one_l, one_kl):
            value = ((trace_kl - diag_kl) + one_k * one_l / ((n - 1) * (n - 2))
                     - 2.0 / (n - 2) * one_kl)
            return value / (n * (n - 3))

        one_k = sx @ sx - x.a
        one_l = sy @ sy - y.a
        kl = hsic(np.sum(xy.cxy * xy.cxy), xy.ab, one_k, one_l,
                  sx @ xy.cxy @ sy - sx @ xy.u - sy @ xy.v + xy.ab)
        kk = hsic(np.sum(x.c * x.c), x.aa, one_k, one_k, sx @ x.c @ sx - 2 * sx @ x.w + x.aa)
        ll = hsic(np.sum(y.c * y.c), y.aa, one_l, one_l, sy @ y.c @ sy - 2 * sy @ y.w + y.aa)
        return float(kl), float(kk), float(ll)


def check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as 2-D float arrays of the same samples, or InputError."""
    from .dimensionality import check_matrix

    x = check_matrix(x, "X")
    y = check_matrix(y, "Y")
    if x.shape[0] != y.shape[0]:
        raise InputError(
            f"X and Y must hold the same samples in the same order; got {x.shape[0]} and "
            f"{y.shape[0]} rows"
        )
    return x, y


def pair_moments(x, y=None) -> PairMoments:
    """``x`` itself if it is a ``PairMoments``, else the moments of the arrays ``(x, y)``."""
    if isinstance(x, PairMoments):
        return x
    x, y = check_pair(x, y)
    return PairMoments(x.shape[1], y.shape[1]).update(x, y)


def fold_bounds(n: int, folds: int) -> list[int]:
    """Boundaries of ``folds`` contiguous folds of ``n`` samples: ``[f * n // folds]``."""
    return [f * n // folds for f in range(folds + 1)]


def merged(parts: Sequence[PairMoments]) -> PairMoments:
    """One PairMoments holding the union of the parts' rows."""
    first = parts[0]
    total = PairMoments.from_parts(first.x.copy(), first.y.copy(),
                                   CrossMoments(first.d1, first.d2).merge(first.xy))
    for part in parts[1:]:
        total.merge(part)
    return total
