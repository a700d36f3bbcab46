"""``AnalysisOptions``: every choice of one analysis run, in one frozen dataclass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from .._errors import InputError
from ..conventions import Convention, resolve_conventions

__all__ = ["AnalysisOptions", "RESAMPLE"]

#: ``resample``: the metrics declared ``interval=True``, or those and the ``"requested"`` ones
RESAMPLE = ("default", "all")
#: ``neighbours``: the exact similarity pass, or a faiss index (``metrics.search``)
NEIGHBOURS = ("exact", "faiss", "faiss-ivf", "faiss-hnsw")
#: above this many samples uniformity is estimated on a seeded subsample of this size
UNIFORMITY_SAMPLES = 50_000


def _names(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class AnalysisOptions:
    """What to analyse and how; ``analyze(store, options)`` or ``analyze(store, **fields)``.

    Parameters
    ----------
    models, conditions, layers : sequence of str, optional
        Restrict the analysis; default everything in the store.
    convention : str, Convention or sequence of them, default "default"
        Named preprocessing and estimator choices (``distillscope.CONVENTIONS``). Several
        (``"default,rankme"``, a list, or ``"all"``) are computed in the same single pass, and
        the results gain a ``convention`` dimension (``distillscope.results.stack_conventions``).
    l2_normalize, center : bool, optional
        Override the convention for every estimator.
    pooling : {"auto", "mean", "max", "cls", "flatten"}
        How maps and tokens become one vector per sample (``distillscope.engine.pooling``).
    metrics : str or sequence of str, optional
        Registered metric names (``distillscope.metrics.registry``), with "default" for the
        default set and "all" for every one (``"default,rbf_cka"``). Default: "default".
    rows : int, optional
        Samples per streamed block (default: as many as fit the block budget, at most 16384).
    remove_map_mean : bool, default False
        Remove each map's spatial mean before its spectrum.
    allow_incomplete : bool, default False
        Read a store whose ``complete`` flag is not set.
    allow_external : bool, default False
        Read what the store takes from other files (external links, virtual datasets,
        external storage); the analysis says what it reads from where.
    progress : bool, default False
        A progress bar on standard error.
    bootstrap : int, default 0
        Intervals in the same pass (0: none): every metric declared with ``interval`` gets
        ``<variable>_ci``; for ``interval="bca"`` or ``"percentile"``, the number of bootstrap
        replicates (200 is typical)
        (``distillscope.engine.bootstrap``, ``docs/metrics.md#intervals``).
    bootstrap_groups : int, optional
        Groups of samples (by a hash of the sample id) the bootstrap resamples; memory grows
        with it (``docs/performance.md``). Default: as many as keep the per-group sums within
        1.25 GiB, between 16 and 128 (``engine.groups.bootstrap_groups``).
    confidence : float, default 0.95
        Level of the intervals.
    interval : {"jackknife", "bca", "percentile"}
        ``jackknife`` (the default): the bias-corrected delete-one-group jackknife with a
        Student-t interval, from the ``G`` group sums alone (``bootstrap`` replicates are not
        drawn), the method whose coverage was measured within 93-97%; ``bca`` or
        ``percentile``: from ``bootstrap`` replicates (``distillscope.stats``,
        ``docs/metrics.md#intervals``).
    bootstrap_seed : int, default 0
        Seeds the groups and the replicate draws (with the sample ids alone: shards, blocks
        and reruns agree).
    resample : {"default", "all"}
        Which metrics get intervals. ``default``: those whose replicates are cheap (the
        effective-rank family and the spectrum, linear CKA, drift, probe and kNN accuracy, the
        collapse ratio and the rank differences), within 2x the time of the analysis without
        intervals. ``all``: also the metrics declared ``interval="requested"`` (the CCA
        family, Procrustes, principal angles, variance captured, linear HSIC and regression,
        the cross-validated predictivity and retention), each replicate of which redoes their
        decompositions or ridge fits (``docs/performance.md`` gives the cost); with the
        cross-validation metrics the groups nest in the folds (``engine.groups``).
    neighbours : {"exact", "faiss", "faiss-ivf", "faiss-hnsw"}, default "exact"
        How mutual kNN and kNN accuracy find neighbours: the exact blocked pass (``n^2 d``),
        or a faiss index (``faiss``: exact inner product, the same neighbour sets but for
        ties; ``faiss-ivf``, ``faiss-hnsw``: approximate, recall in ``docs/scaling.md``);
        ``metrics.search``. Needs ``pip install faiss-cpu`` (the ``faiss`` extra).
    uniformity_samples : int or None, default 50,000
        Uniformity over all pairs of more samples than this is estimated on a seeded
        subsample of this many (an unbiased U-statistic of the pair mean; its standard error
        in ``uniformity_se``); at or below it, exact. ``None``: always exact.
    """

    models: tuple[str, ...] | None = None
    conditions: tuple[str, ...] | None = None
    layers: tuple[str, ...] | None = None
    convention: str | Convention | tuple[str | Convention, ...] = "default"
    l2_normalize: bool | None = None
    center: bool | None = None
    pooling: str = "auto"
    metrics: tuple[str, ...] | None = None
    rows: int | None = None
    remove_map_mean: bool = False
    allow_incomplete: bool = False
    allow_external: bool = False
    progress: bool = False
    bootstrap: int = 0
    bootstrap_groups: int | None = None
    confidence: float = 0.95
    interval: str = "jackknife"
    bootstrap_seed: int = 0
    resample: str = "default"
    neighbours: str = "exact"
    uniformity_samples: int | None = UNIFORMITY_SAMPLES

    def __post_init__(self) -> None:
        for name in ("models", "conditions", "layers", "metrics"):
            value = getattr(self, name)
            if isinstance(value, str) and name == "metrics":
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            object.__setattr__(self, name, _names(value))
        if self.rows is not None and (not isinstance(self.rows, int) or self.rows < 1):
            raise InputError(f"rows must be a positive integer; got {self.rows!r}")
        if not isinstance(self.convention, (str, Convention)):
            object.__setattr__(self, "convention", tuple(self.convention))
        self.conventions()  # an unknown convention fails here, before any work
        self._check_bootstrap()

    def _check_bootstrap(self) -> None:
        from ..stats import INTERVAL_METHODS

        for name, low in (("bootstrap", 0), ("bootstrap_groups", 2), ("bootstrap_seed", 0)):
            value = getattr(self, name)
            if value is None and name == "bootstrap_groups":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer of at least {low}; got {value!r}")
        if not 0.0 < float(self.confidence) < 1.0:
            raise InputError(f"confidence must be between 0 and 1 (0.95 for 95%); got "
                             f"{self.confidence!r}")
        if self.resample not in RESAMPLE:
            raise InputError(f"resample must be one of {', '.join(RESAMPLE)}; got "
                             f"{self.resample!r}")
        if self.neighbours not in NEIGHBOURS:
            raise InputError(f"neighbours must be one of {', '.join(NEIGHBOURS)}; got "
                             f"{self.neighbours!r}")
        if self.uniformity_samples is not None and (
                isinstance(self.uniformity_samples, bool)
                or not isinstance(self.uniformity_samples, int) or self.uniformity_samples < 2):
            raise InputError(f"uniformity_samples must be an integer of at least 2 (or None: "
                             f"always exact); got {self.uniformity_samples!r}")
        if self.interval not in INTERVAL_METHODS:
            raise InputError(f"interval must be one of {', '.join(INTERVAL_METHODS)}; got "
                             f"{self.interval!r}")

    @classmethod
    def from_keywords(cls, *, alignment: bool = True, frequency: bool = True,
                      robustness: bool = True, park_kim: bool = False,
                      metrics: str | Sequence[str] | None = None, **kwargs) -> "AnalysisOptions":
        """Options from ``analyze``'s keywords: the family switches (``alignment=False`` ...)
        and ``park_kim`` edit the metric selection (into names: a metric every convention asked
        for omits, ``Convention.omits``, stays out unless named)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InputError(f"analyze got an unexpected option {unknown[0]!r}; options: "
                             + ", ".join(sorted(known | {"alignment", "frequency",
                                                         "robustness", "park_kim"})))
        options = cls(metrics=metrics, **kwargs)
        dropped = {family for family, keep in (("alignment", alignment),
                                               ("frequency", frequency),
                                               ("robustness", robustness)) if not keep}
        if not dropped and not park_kim:
            return options
        from ..metrics.registry import select

        omitted = set.intersection(*(options.left_out(c) for c in options.conventions()))
        chosen = [m.name for m in select(options.metrics)
                  if m.family not in dropped and m.name not in omitted]
        if park_kim and "frequency" not in dropped:
            chosen.append("relative_log_amplitude")
        return replace(options, metrics=tuple(dict.fromkeys(chosen)))

    def conventions(self) -> list[Convention]:
        """Every convention asked for, in order (``conventions.resolve_conventions``)."""
        return resolve_conventions(self.convention)

    @property
    def named_metrics(self) -> set[str]:
        """The metrics named one by one, not through "default" or "all": a convention's
        ``omits`` do not apply to them."""
        return set(self.metrics or ()) - {"default", "all"}

    def left_out(self, convention: Convention) -> set[str]:
        """The metrics ``convention`` leaves out of this analysis: its ``omits`` but those
        named one by one."""
        return set(convention.omits) - self.named_metrics

    @property
    def several(self) -> bool:
        """Whether the results get a ``convention`` dimension: more than one was asked for."""
        return len(self.conventions()) > 1

    def resolved_convention(self) -> Convention:
        """The one convention of a plan (``for_convention`` gives one plan's options)."""
        conventions = self.conventions()
        if len(conventions) > 1:
            raise InputError("these options name several conventions; build one plan per "
                             "convention (AnalysisOptions.for_convention)")
        return conventions[0]

    def for_convention(self, convention: Convention) -> "AnalysisOptions":
        """These options with one convention."""
        return replace(self, convention=convention)
