"""``analyze``: a plan, one pass over the feature store, every chosen metric, as xarray."""

from __future__ import annotations

import os
import warnings

import xarray as xr

from .._errors import InputError
from ..store import Store, open_store
from .assemble import assemble
from .executor import run
from .finalize import compute_values
from .options import AnalysisOptions
from .plan import Plan, build_plan

__all__ = ["analyze", "AnalysisNote"]


class AnalysisNote(UserWarning):
    """Something the analysis decided that the user should know (a derived split, say)."""


def analyze(store: str | os.PathLike[str] | Store, options: AnalysisOptions | None = None, *,
            dry_run: bool = False, **keywords) -> xr.Dataset | Plan:
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
        without reading any value.

    Returns
    -------
    xarray.Dataset
        Variables generated from the metric registry (``docs/results-format.md``): the
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
        plan = build_plan(st, options)
        if dry_run:
            return plan
        plan.check_memory()
        for note in plan.notes:
            warnings.warn(note, AnalysisNote, stacklevel=2)
        return assemble(plan, compute_values(plan, run(plan)))
    finally:
        if own:
            st.close()
