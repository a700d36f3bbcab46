"""The engine's accumulators: one per streamed statistic of the plan.

Each has ``update(block)`` (a ``Block`` of the executor: aligned rows of every dataset of one
sample range; the statistics read its analysed samples, the rows held for probes read all),
``merge(other)`` (the state of another, disjoint, sample range) and ``finalize()`` (the
statistic the registry's metrics read). State is plain numpy arrays and numbers (picklable), so
ranges can be accumulated apart, shipped, and merged in any order:
merging the states of disjoint ranges equals one pass over their union (tested).

They are thin: the arithmetic is the array layer's (``SecondMoments``, ``CrossMoments``,
``SpectrumAccumulator``, ``DriftAccumulator``); what they add is which view of a block they read
and how rows are routed to cross-validation folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.frequency import SpectrumAccumulator
from ..metrics.moments import SecondMoments
from ..metrics.neighbours import Samples
from ..metrics.pairs import CrossMoments
from ..metrics.robustness import DriftAccumulator
from ..metrics.tokens import PerImageDims

__all__ = ["MomentsAccumulator", "CrossAccumulator", "SpatialAccumulator", "DriftPairAccumulator",
           "ImagesAccumulator", "RowsAccumulator", "FoldedMoments"]


def _fold_slices(start: int, stop: int, bounds: list[int] | None):
    """(fold, lo, hi) of the rows ``start:stop`` of a block (block-relative lo, hi); none
    when the block holds no analysed sample."""
    if start == stop:
        return
    if bounds is None:
        yield 0, 0, stop - start
        return
    for f in range(len(bounds) - 1):
        lo, hi = max(start, bounds[f]), min(stop, bounds[f + 1])
        if lo < hi:
            yield f, lo - start, hi - start


@dataclass
class FoldedMoments:
    """A representation's moments: all its rows (``full``) and, for cross-validation, each
    fold's (``folds``, None without folds)."""

    full: SecondMoments
    folds: list[SecondMoments] | None


class MomentsAccumulator:
    """Second moments of one representation's prepared rows, split by fold when asked.

    Parameters
    ----------
    key : (model, condition, layer)
    width : int
    l2 : bool
    folds : list of int, optional
        Fold boundaries over the samples (``pairs.fold_bounds``).
    norms : bool
        Keep the norm sums the debiased CKA needs (representations in pairs).
    """

    def __init__(self, key, width: int, l2: bool, folds: list[int] | None = None,
                 norms: bool = False):
        self.key = key
        self.bounds = folds
        count = 1 if folds is None else len(folds) - 1
        self.parts = [SecondMoments(width, l2_normalize=l2, norms=norms) for _ in range(count)]

    def update(self, block) -> None:
        prepared = block.analysed(self.key)
        shift = block.shift(self.key)
        zero = prepared.n_zero
        for f, lo, hi in _fold_slices(*block.span, self.bounds):
            part = prepared.rows(lo, hi)
            if zero and part is not prepared:  # the block's zero-norm rows, counted once
                part.n_zero, zero = zero, 0
            self.parts[f].add_prepared(part, shift)

    def merge(self, other: "MomentsAccumulator") -> "MomentsAccumulator":
        for mine, theirs in zip(self.parts, other.parts):
            mine.merge(theirs)
        return self

    def finalize(self) -> FoldedMoments:
        if len(self.parts) == 1:
            return FoldedMoments(self.parts[0], None)
        full = self.parts[0].copy()
        for part in self.parts[1:]:
            full.merge(part)
        return FoldedMoments(full, self.parts)


class CrossAccumulator:
    """Cross sums of two representations' prepared rows (teacher-student or clean-condition)."""

    def __init__(self, pair, d1: int, d2: int, folds: list[int] | None = None):
        self.key = pair
        self.bounds = folds
        count = 1 if folds is None else len(folds) - 1
        self.parts = [CrossMoments(d1, d2) for _ in range(count)]

    def update(self, block) -> None:
        x_key, y_key = self.key
        px, py = block.analysed(x_key), block.analysed(y_key)
        shifts = (block.shift(x_key), block.shift(y_key))
        for f, lo, hi in _fold_slices(*block.span, self.bounds):
            self.parts[f].add_prepared(px.rows(lo, hi), py.rows(lo, hi), shifts)

    def merge(self, other: "CrossAccumulator") -> "CrossAccumulator":
        for mine, theirs in zip(self.parts, other.parts):
            mine.merge(theirs)
        return self

    def finalize(self) -> tuple[CrossMoments, list[CrossMoments] | None]:
        if len(self.parts) == 1:
            return self.parts[0], None
        full = CrossMoments(self.parts[0].d1, self.parts[0].d2)
        for part in self.parts:
            full.merge(part)
        return full, self.parts


class SpatialAccumulator:
    """Spatial power spectrum of one map or token layer (its unpooled maps)."""

    def __init__(self, key, grid: tuple[int, int], **options):
        self.key = key
        self.spectrum = SpectrumAccumulator(grid, **options)

    def update(self, block) -> None:
        if block.n_analysed:
            self.spectrum.update(block.analysed_maps(self.key))

    def merge(self, other: "SpatialAccumulator") -> "SpatialAccumulator":
        self.spectrum.merge(other.spectrum)
        return self

    def finalize(self) -> SpectrumAccumulator:
        return self.spectrum


class ImagesAccumulator:
    """Per-image dimensions of one token or map layer (``metrics.tokens``)."""

    def __init__(self, key, keep_tokens: bool = False, dtype=None):
        self.key = key
        self.breadth = int(keep_tokens)  # of two alike, the one that keeps tokens serves both
        self.dims = PerImageDims(keep_tokens=keep_tokens, dtype=dtype)  # held as stored

    def update(self, block) -> None:
        self.dims.update(block.analysed_tokens(self.key), block.span[0])

    def merge(self, other: "ImagesAccumulator") -> "ImagesAccumulator":
        self.dims.merge(other.dims)
        return self

    def finalize(self) -> PerImageDims:
        return self.dims


class DriftPairAccumulator:
    """Relative drift of a representation against its clean condition (pooled rows)."""

    def __init__(self, pair):
        self.key = pair
        self.drift = DriftAccumulator()

    def update(self, block) -> None:
        clean, other = self.key
        if block.n_analysed:
            self.drift.update(block.analysed_pooled(clean), block.analysed_pooled(other))

    def merge(self, other: "DriftPairAccumulator") -> "DriftPairAccumulator":
        self.drift.merge(other.drift)
        return self

    def finalize(self) -> DriftAccumulator:
        return self.drift


class RowsAccumulator:
    """The pooled rows of one representation, held for the sample-level metrics.

    Memory: ``n x width`` values in ``dtype`` (the stored dtype, float64 for mean pooling); this
    is the state that grows with n, and the plan states it.
    """

    def __init__(self, key, dtype):
        self.key = key
        self.dtype = np.dtype(dtype)
        self.segments: list[tuple[int, np.ndarray]] = []

    def update(self, block) -> None:
        pooled = block.pooled(self.key)
        if self.dtype == np.float16 and pooled.dtype == np.float32:  # widened: narrow exactly
            from .._kernels import jit_enabled, narrow_half

            if jit_enabled():
                held = np.empty(pooled.shape, np.float16)
                narrow_half(np.ascontiguousarray(pooled).reshape(-1),
                            held.reshape(-1).view(np.uint16))
                self.segments.append((block.start, held))
                return
        self.segments.append((block.start, np.array(pooled, dtype=self.dtype)))

    def merge(self, other: "RowsAccumulator") -> "RowsAccumulator":
        self.segments.extend(other.segments)
        return self

    def finalize(self) -> Samples:
        self.segments.sort(key=lambda segment: segment[0])
        rows = np.concatenate([values for _, values in self.segments])
        self.segments = []
        return Samples(rows)
