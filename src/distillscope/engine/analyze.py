"""``analyze``: a plan, one pass over the feature store, every chosen metric, as xarray."""

from __future__ import annotations

import os
import warnings

import xarray as xr

from .._errors import InputError
from ..store import Store, open_store
from .assemble import assemble
from .bootstrap import resample
from ..results.conventions import stack_conventions
from .executor import run_plans
from .finalize import compute_plans
from .options import AnalysisOptions
from .plan import Plan, build_plan, check_memory

__all__ = ["analyze", "AnalysisNote"]


class AnalysisNote(UserWarning):
    """Something the analysis decided that the user should know (a derived split, say)."""


def analyze(store: str | os.PathLike[str] | Store, options: AnalysisOptions | None = None, *,
            dry_run: bool = False, client=None, **keywords) -> xr.Dataset | Plan | list[Plan]:
    """Every chosen metric of every model, condition and layer of a store, in one pass.

    The store is read once, block by block, all datasets of a block together; each block is
    pooled and normalised once and fed to every accumulator that needs it; the metrics come
    from the accumulated statistics (``distillscope.engine``, ``docs/performance.md``).

    Parameters
    ----------
    store : path-like or Store
        A feature store (``distillscope.open_store`` validates it).
    options : AnalysisOptions, optional
        Every choice of the run; or give its fields as keywords (``convention=``,
        ``metrics=``, ``models=``, ``pooling=``, ``rows=`` ...), where ``alignment=False``,
        ``frequency=False`` and ``robustness=False`` drop a metric family and ``park_kim=True``
        adds Park & Kim's relative log amplitude.
    dry_run : bool, default False
        Return the ``Plan`` (what would be read and computed, bytes and memory; print it)
        without reading any value; a list of them, one per convention, for several.
    client : dask.distributed.Client, optional
        Run the pass as tasks over ranges of samples on its workers, merge their accumulators
        and finish here (``distillscope.engine.distributed``, ``docs/scaling.md``); the
        results equal a single process's to float64 rounding. Each worker opens the store by
        its path, so it must see the same file system.

    Returns
    -------
    xarray.Dataset
        With several conventions (``convention="a,b"`` or ``"all"``), every variable has a
        leading ``convention`` dimension (``distillscope.results.stack_conventions``); all of
        them come from the same single pass. Variables generated from the metric registry (``docs/results-format.md``): the
        effective-rank family and spectra per model, condition and layer; band energy of maps
        and tokens; alignment of every student with the teacher; robustness against the clean
        condition; seed aggregates per family.

    References
    ----------
    Definitions and sources: ``docs/metrics.md``.
    """
    if options is not None and keywords:
        raise InputError("give analyze either options= or keywords, not both")
    options = options or AnalysisOptions.from_keywords(**keywords)
    own = not isinstance(store, Store)
    st = (open_store(store, allow_incomplete=options.allow_incomplete,
                     allow_external=options.allow_external) if own else store)
    try:
        plans = [build_plan(st, options.for_convention(c)) for c in options.conventions()]
        if dry_run:
            return plans if options.several else plans[0]
        check_memory(plans)
        for note in dict.fromkeys(note for plan in plans for note in plan.notes):
            warnings.warn(note, AnalysisNote, stacklevel=2)
        if client is None:
            stats = run_plans(plans)
        else:
            from .distributed import run_distributed

            stats = run_distributed(plans, client, options)
        values = compute_plans(plans, stats)
        for plan, statistics, v in zip(plans, stats, values):
            resample(plan, statistics, v)
        parts = [assemble(plan, v) for plan, v in zip(plans, values)]
        return stack_conventions(parts) if options.several else parts[0]
    finally:
        if own:
            st.close()
