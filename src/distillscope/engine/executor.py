"""One pass over the store: every planned dataset read once, block by block, every accumulator fed.

For each sample range the executor builds a ``Block``: the rows of that range of every dataset,
read when first asked for and each derived view (widened, pooled, prepared, as maps) computed
once, whichever accumulators read it. Within a block the conditions are done one after the
other, the clean one first; a condition's arrays go back to the scratch pool when it is done,
the clean condition's when the block is (its rows are compared with every other condition's).
"""

from __future__ import annotations

import sys

import numpy as np

from .._errors import StoreError
from .._scratch import POOL
from ..metrics.frequency import tokens_to_maps
from ..metrics.moments import NonFiniteError, Prepared, RowPreparer
from ..metrics.tokens import as_tokens
from ..store import nonfinite_message
from .groups import assign, bootstrap_groups, group_accumulators
from .accumulators import (CrossAccumulator, DriftPairAccumulator, ImagesAccumulator,
                           MomentsAccumulator, RowsAccumulator, SpatialAccumulator)
from .plan import Key, Plan, preparation, union_plan
from .pooling import pool

__all__ = ["Block", "Reads", "accumulators", "run", "run_plans", "feed_range", "merge_tables",
           "finalize_tables"]


class Reads:
    """The stored rows ``start:stop`` of every planned dataset and their pooled views, read and
    pooled once whichever conventions' blocks ask (pooling does not depend on the convention)."""

    def __init__(self, plan: Plan, start: int, stop: int, readers: dict):
        self.plan = plan
        self.start, self.stop = start, stop
        self._readers = readers
        self._raw: dict[Key, np.ndarray] = {}
        self._pooled: dict[Key, np.ndarray] = {}

    def raw(self, key: Key) -> np.ndarray:
        if key not in self._raw:
            self._raw[key] = self._readers[key].read(self.start, self.stop)
        return self._raw[key]

    def pooled(self, key: Key) -> np.ndarray:
        if key not in self._pooled:
            rep = self.plan.reps[key]
            self._pooled[key] = pool(self.raw(key), rep.info, self.plan.options.pooling)
        return self._pooled[key]

    def release(self, condition: str | None = None) -> None:
        """Give the rows of one condition (of every one by default) back to their readers."""
        for key in [k for k in self._raw if condition is None or k[1] == condition]:
            self._pooled.pop(key, None)
            self._readers[key].done(self._raw.pop(key))


class Block:
    """The rows ``start:stop`` of every planned dataset as one plan (one convention) sees
    them, and their views, computed once. ``reads`` shares the stored and pooled rows between
    the blocks of several plans over the same range (``run_plans``)."""

    def __init__(self, plan: Plan, start: int, stop: int, readers: dict, preparers: dict,
                 reads: Reads | None = None):
        self.plan = plan
        self.start, self.stop = start, stop
        self.reads = reads if reads is not None else Reads(plan, start, stop, readers)
        self._owns_reads = reads is None
        self._preparers = preparers
        self._prepared: dict[Key, tuple[Prepared, np.ndarray]] = {}
        self._analysed: dict[Key, Prepared] = {}
        self._grouping: tuple | None = None
        self._grouped: dict[Key, tuple] = {}
        # the analysed samples of the block (``Plan.subset``): block-relative indices, and
        # their positions among all analysed samples (which cross-validation fold they are in)
        subset = plan.subset
        if subset is None:
            self.picked, self.span = None, (start, stop)
        else:
            lo, hi = (int(i) for i in np.searchsorted(subset, (start, stop)))
            self.picked, self.span = subset[lo:hi] - start, (lo, hi)

    def raw(self, key: Key) -> np.ndarray:
        """The stored rows (float16 widened to float32)."""
        return self.reads.raw(key)

    def pooled(self, key: Key) -> np.ndarray:
        """One vector per sample (``engine.pooling``): the raw rows themselves for embeddings."""
        return self.reads.pooled(key)

    def maps(self, key: Key) -> np.ndarray:
        """``(m, c, h, w)`` maps of a map layer, or of a token layer's patch tokens."""
        info = self.plan.reps[key].info
        raw = self.raw(key)
        return raw if info.kind == "map" else tokens_to_maps(raw, info.grid,
                                                             info.num_prefix_tokens)

    def prepared(self, key: Key) -> Prepared:
        """The pooled rows as accumulated (float64, L2-normalised under the convention, minus
        the representation's shift); NaN or infinity fails naming the dataset and sample."""
        if key not in self._prepared:
            pooled = self.pooled(key)
            out = POOL.take(pooled.shape, np.float64)
            try:
                prepared = self._preparers[key].prepare(pooled, out=out)
            except NonFiniteError:
                POOL.give(out)
                info = self.plan.reps[key].info
                store = self.plan.store
                n_nan, n_inf, sample, feature = store.locate_nonfinite(info)
                raise StoreError(store.path, info.path, nonfinite_message(
                    n_nan, n_inf, sample, int(store.sample_ids[sample]), feature)) from None
            self._prepared[key] = (prepared, out)
        return self._prepared[key][0]

    @property
    def n_analysed(self) -> int:
        """How many of the block's samples are analysed (``Plan.subset``)."""
        return self.span[1] - self.span[0]

    def _pick(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.picked is None else rows[self.picked]

    def analysed(self, key: Key) -> Prepared:
        """``prepared(key)`` restricted to the analysed samples (all rows without a subset)."""
        prepared = self.prepared(key)
        if self.picked is None:
            return prepared
        if key not in self._analysed:
            z = self._pick(prepared.z)
            n_zero = (int(np.count_nonzero(~self.analysed_pooled(key).any(axis=1)))
                      if self.plan.l2 else 0)
            self._analysed[key] = Prepared(z, z.sum(axis=0), n_zero)
        return self._analysed[key]

    def analysed_pooled(self, key: Key) -> np.ndarray:
        """``pooled(key)`` restricted to the analysed samples."""
        return self._pick(self.pooled(key))

    def analysed_tokens(self, key: Key) -> np.ndarray:
        """``(m, N, D)`` token matrices of the analysed samples (``metrics.tokens``)."""
        info = self.plan.reps[key].info
        return as_tokens(self._pick(self.raw(key)), info.kind, info.num_prefix_tokens or 0)

    def analysed_maps(self, key: Key) -> np.ndarray:
        """``maps(key)`` restricted to the analysed samples."""
        return self._pick(self.maps(key))

    def grouping(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The bootstrap groups of the analysed samples (``engine.groups.assign``): each row's
        group, the order that sorts rows by group, and each group's bounds in that order."""
        if self._grouping is None:
            ids = self._pick(self.plan.store.sample_ids[self.start:self.stop])
            group = assign(self.plan, ids, np.arange(*self.span))
            order = np.argsort(group, kind="stable")
            bounds = np.searchsorted(group[order], np.arange(bootstrap_groups(self.plan) + 1))
            self._grouping = (group, order, bounds)
        return self._grouping

    def grouped(self, key: Key) -> tuple[np.ndarray, np.ndarray]:
        """The analysed prepared rows sorted by bootstrap group, in float32 (what the cross
        sums multiply), and their squared norms (float64), once per block whichever pairs
        read them; the float64 rows the moments need are sorted by them, not kept."""
        if key not in self._grouped:
            _, order, _ = self.grouping()
            z = self.analysed(key).z
            self._grouped[key] = (z[order].astype(np.float32),
                                  np.einsum("ij,ij->i", z, z)[order])
        return self._grouped[key]

    def shift(self, key: Key) -> np.ndarray:
        """The shift the representation's rows are prepared about."""
        return self._preparers[key].shift

    def release(self, condition: str | None = None) -> None:
        """Give the arrays of one condition (of every one by default) back to the pool, and
        the stored rows too when the block has them to itself."""
        for key in [k for k in self._prepared if condition is None or k[1] == condition]:
            POOL.give(self._prepared.pop(key)[1])
        for key in [k for k in self._analysed if condition is None or k[1] == condition]:
            del self._analysed[key]
        for key in [k for k in self._grouped if condition is None or k[1] == condition]:
            del self._grouped[key]
        if self._owns_reads:
            self.reads.release(condition)


def accumulators(plan: Plan) -> dict[str, dict]:
    """The accumulators of the plan, by statistic and key, in feeding order."""
    reps, needs = plan.reps, plan.needs
    in_pairs = {k for pair in needs["pair"] | needs["folds"] for k in pair}
    fold_keys = {k for pair in needs["folds"] for k in pair}
    maps_options = {"remove_mean": plan.options.remove_map_mean}
    for m in plan.metrics:
        if m.statistic == "maps" and m.needs is not None:
            maps_options.update(m.needs())
    return {
        "moments": {k: MomentsAccumulator(k, reps[k].width, plan.l2,
                                          plan.folds if k in fold_keys else None,
                                          norms=k in in_pairs) for k in reps},
        "maps": {k: SpatialAccumulator(k, reps[k].grid, **maps_options) for k in reps
                 if k in needs["maps"]},
        "images": {k: ImagesAccumulator(k, plan.keeps_tokens, reps[k].info.dtype) for k in reps
                   if k in needs["images"]},
        "pair": {p: CrossAccumulator(p, reps[p[0]].width, reps[p[1]].width,
                                     plan.folds if p in needs["folds"] else None)
                 for p in sorted(needs["pair"] | needs["folds"], key=_pair_order(plan))},
        "drift": {p: DriftPairAccumulator(p) for p in sorted(needs["drift"], key=_pair_order(plan))},
        "samples": {k: RowsAccumulator(k, reps[k].held_dtype) for k in reps
                    if k in needs["samples"]},
        **group_accumulators(plan),
    }


def _pair_order(plan: Plan):
    order = {k: i for i, k in enumerate(plan.reps)}
    return lambda pair: (order[pair[1]], order[pair[0]])


def _by_condition(plan: Plan, accs: dict[str, dict]) -> dict[str, list]:
    """Each condition's accumulators: its representations' own, then the pairs it ends."""
    out: dict[str, list] = {c: [] for c in plan.condition_order()}
    for statistic in ("moments", "maps", "images", "samples", "pair", "drift", "group_moments",
                      "group_pair", "group_drift"):
        for key, acc in accs[statistic].items():
            condition = key[1][1] if statistic in ("pair", "drift", "group_pair",
                                                   "group_drift") else key[1]
            out[condition].append(acc)
    return out


def run(plan: Plan) -> dict[str, dict]:
    """Stream the store once and return the finalized statistics by kind and key."""
    return run_plans([plan])[0]


def run_plans(plans: list[Plan]) -> list[dict[str, dict]]:
    """One pass over the store for several plans of one selection (one per convention).

    The stored rows of a range are read and pooled once for all plans; plans that prepare rows
    alike (``preparation``) share one set of accumulators, fed once, sized for what any of
    them computes (``union_plan``); the held rows of the sample-level metrics, and the
    statistics that only depend on which samples are analysed, are shared further. Returns
    each plan's finalized statistics (shared objects where shared)."""
    tables = feed_range(plans, 0, plans[0].store.n_samples, progress=True)
    return finalize_tables(plans, tables)


def _groups(plans: list[Plan]) -> dict[tuple, list[Plan]]:
    """The plans by how they prepare rows (``preparation``): one set of accumulators each."""
    first = plans[0]
    if any(p.rows != first.rows or list(p.reps) != list(first.reps) for p in plans):
        raise ValueError("run_plans needs plans of one selection and block size")
    groups: dict[tuple, list[Plan]] = {}
    for p in plans:
        groups.setdefault(preparation(p), []).append(p)
    return groups


def feed_range(plans: list[Plan], start: int, stop: int, *,
               progress: bool = False) -> list[dict[str, dict]]:
    """The accumulators of ``plans`` (one table per preparation group, shared accumulators
    shared), fed the samples ``start:stop`` in blocks of ``rows`` from ``start``; not
    finalized: tables of several ranges ``merge_tables``, then ``finalize_tables``
    (``engine.distributed`` runs each range as a task)."""
    heads = [union_plan(members) for members in _groups(plans).values()]
    tables = [accumulators(head) for head in heads]
    # one accumulator per statistic, key and what it depends on: of alike ones, the widest
    chosen: dict[tuple, object] = {}
    for head, table in zip(heads, tables):
        for statistic, t in table.items():
            for key, acc in t.items():
                sig = (statistic, key, preparation(head, statistic))
                if sig not in chosen or getattr(acc, "breadth", 0) > getattr(chosen[sig],
                                                                             "breadth", 0):
                    chosen[sig] = acc
    for head, table in zip(heads, tables):
        for statistic, t in table.items():
            for key in t:
                t[key] = chosen[(statistic, key, preparation(head, statistic))]
    first = plans[0]
    readers = {k: first.store.reader(r.info) for k, r in first.reps.items()}
    preparers = [{k: RowPreparer(r.width, l2_normalize=h.l2) for k, r in h.reps.items()}
                 for h in heads]
    orders = _feeding_orders(heads, tables)
    bar = _progress(first) if progress else None
    try:
        for lo in range(start, stop, first.rows):
            reads = Reads(first, lo, min(stop, lo + first.rows), readers)
            _feed_block(first, heads, orders, readers, preparers, reads)
            if bar is not None:
                bar.update(reads.stop - reads.start)
    finally:
        if bar is not None:
            bar.close()
    return tables


def _feed_block(first: Plan, heads: list[Plan], orders: list, readers: dict, preparers: list,
                reads: Reads) -> None:
    """Every accumulator fed one range of rows, condition by condition (each condition's rows
    released once fed, the clean condition's last)."""
    clean = first.reference_condition
    blocks = [Block(h, reads.start, reads.stop, readers, prep, reads)
              for h, prep in zip(heads, preparers)]
    try:
        for condition in first.condition_order():
            for block, order in zip(blocks, orders):
                for acc in order[condition]:
                    acc.update(block)
                if condition != clean:
                    block.release(condition)
            if condition != clean:
                reads.release(condition)
    finally:
        for block in blocks:
            block.release()
        reads.release()


def merge_tables(tables: list[dict[str, dict]], later: list[dict[str, dict]]
                 ) -> list[dict[str, dict]]:
    """``tables`` with the accumulators of a later range (``feed_range`` of the same plans)
    merged in, each distinct accumulator once (shared ones are shared in both)."""
    merged: set[int] = set()
    for mine, theirs in zip(tables, later):
        for statistic, t in mine.items():
            for key, acc in t.items():
                if id(acc) not in merged:
                    merged.add(id(acc))
                    acc.merge(theirs[statistic][key])
    return tables


def finalize_tables(plans: list[Plan], tables: list[dict[str, dict]]) -> list[dict[str, dict]]:
    """Each plan's finalized statistics from the tables of ``feed_range`` (merged)."""
    final: dict[int, object] = {}
    for table in tables:
        for t in table.values():
            for acc in t.values():
                if id(acc) not in final:
                    final[id(acc)] = acc.finalize()
    by_group = [{statistic: {k: final[id(acc)] for k, acc in t.items()}
                 for statistic, t in table.items()} for table in tables]
    where = {id(p): i for i, members in enumerate(_groups(plans).values()) for p in members}
    return [by_group[where[id(p)]] for p in plans]


def _feeding_orders(heads: list[Plan], tables: list[dict]) -> list[dict[str, list]]:
    """Each group's accumulators by condition (``_by_condition``), a shared one only in the
    first group that has it, so that it is fed once."""
    fed: set[int] = set()
    orders = []
    for head, table in zip(heads, tables):
        order = _by_condition(head, table)
        for condition, consumers in order.items():
            order[condition] = [a for a in consumers if id(a) not in fed]
            fed.update(id(a) for a in order[condition])
        orders.append(order)
    return orders


def _progress(plan: Plan):
    if not plan.options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=plan.store.n_samples, unit="sample", unit_scale=True,
                desc=f"analyze ({len(plan.reps)} datasets)", file=sys.stderr,
                dynamic_ncols=True, disable=None)  # None: only on a terminal
