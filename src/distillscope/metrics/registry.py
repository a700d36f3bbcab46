"""The metric registry: every result variable distillscope computes, declared once.

A declaration names the variable, its long name and units, what it takes (one representation,
a teacher/student pair, a condition against clean, or the assembled results), the streamed
statistic that feeds it, the function that turns that statistic into a value, its definition
(a ``docs/metrics.md`` anchor) and its source. Everything else is derived from it: the result
variables and their attributes (``distillscope.engine``), the names ``alignment_score`` and
``effective_rank`` accept, ``analyze --metrics``, the command line's and the report's tables and
glossary, and the metric list of ``docs/metrics.md`` (a test compares them).

Metrics are declared next to their array functions with the ``metric`` decorator::

    @metric("linear_cka", long_name="linear CKA", units="1", takes=TEACHER_STUDENT,
            statistic="pair", anchor="linear-cka", source="Kornblith et al., arXiv 1905.00414",
            definition="||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)")
    def linear_cka(x, y=None, *, debiased=False): ...

The engine calls ``compute(*statistics, **params)``: ``compute`` defaults to the decorated
function itself, the statistics are those of ``STATISTICS[statistic]`` (one per side of a pair)
and ``params`` are the declaration's ``params`` updated by ``convention_params(convention)``.
This module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "Metric",
    "metric",
    "register",
    "REGISTRY",
    "metrics",
    "get",
    "select",
    "TAKES",
    "STATISTICS",
    "REPRESENTATION",
    "TEACHER_STUDENT",
    "TEACHER_STUDENT_MODELS",
    "STUDENT_STUDENT",
    "CLEAN_CONDITION",
    "RESULTS",
    "FAMILY",
    "REQUESTED",
    "by_variable",
    "markdown_table",
]

REPRESENTATION = "representation"
TEACHER_STUDENT = "teacher_student"
TEACHER_STUDENT_MODELS = "teacher_student_models"
STUDENT_STUDENT = "student_student"
CLEAN_CONDITION = "clean_condition"
RESULTS = "results"
FAMILY = "family"

#: ``Metric.interval`` of a metric resampled only when asked (``resample="all"``)
REQUESTED = "requested"

#: what a metric takes -> the dimensions of its variable (before its own ``dims``)
TAKES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    REPRESENTATION: ("model", "condition", "layer"),
    TEACHER_STUDENT: ("student", "condition", "teacher_layer", "student_layer"),
    # the teacher against each student, every layer of both together (best layer pair, say)
    TEACHER_STUDENT_MODELS: ("student", "condition"),
    # each student against each other student ("versus"), same condition and layer
    STUDENT_STUDENT: ("student", "versus", "condition", "layer"),
    CLEAN_CONDITION: ("model", "condition", "layer"),
    FAMILY: ("family", "condition", "layer"),  # the seeds of one model family together
    RESULTS: (),  # derived from other variables once the pass is done; dims are its own
})

#: the statistics the engine streams, and what ``compute`` receives for each (one per side)
STATISTICS: Mapping[str, str] = MappingProxyType({
    "spectrum": "the covariance eigenvalues of one representation, descending: centred or not "
                "as the convention says; effective-rank estimators also get eps and n_values = "
                "min(n, d); family metrics get the list of their seeds' centred spectra and eps; "
                "teacher_student metrics get the primary effective ranks of teacher and student, "
                "student_student metrics those of the student and the one it is compared with",
    "moments": "the representation's SecondMoments and its distillscope.engine Representation",
    "maps": "a SpectrumAccumulator of the representation's spatial maps",
    "images": "a PerImageDims of the representation's token matrices (token and map layers)",
    "pair": "the PairMoments of the two representations (teacher, student) or (clean, condition)",
    "folds": "the list of PairMoments of the cross-validation folds",
    "samples": "the Samples (pooled rows in memory, and their neighbour lists) of each side; "
               "teacher_student_models metrics get the list of each model's layers' Samples",
    "drift": "the DriftAccumulator of (clean, condition)",
    "probes": "the Probes of one model and layer (clean training rows and labels, each "
              "condition's test rows); compute returns a value per condition",
    "results": "the assembled results Dataset (for variables derived from others)",
})


@dataclass(frozen=True)
class Metric:
    """The declaration of one result variable (or one coordinate value of a shared variable).

    Attributes
    ----------
    name : str
        The variable name in results; for a metric sharing a variable (``variable``), its
        coordinate value there (the effective-rank estimators along ``estimator``).
    long_name, units : str
        Result attributes (``units`` "1" for dimensionless).
    takes : str
        A key of ``TAKES``.
    statistic : str
        A key of ``STATISTICS``: what the engine streams for it.
    compute : callable
        ``compute(*statistics, **params) -> value``; defaults to the decorated function.
    definition : str
        One line: the formula, copied into the variable's ``definition`` attribute.
    anchor : str
        The section of ``docs/metrics.md`` that defines it (``docs/metrics.md#<anchor>``).
    source : str
        The paper or reference it follows ("" for standard statistics).
    family : str
        "dimensionality", "frequency", "alignment", "robustness" or "descriptor".
    dims : tuple of str
        Dimensions of one value (``("component",)`` for a spectrum), after those of ``takes``.
    variable : str, optional
        The shared variable this metric fills along ``coordinate``.
    coordinate : str, optional
        The dimension of ``variable`` that holds one value per metric ("estimator").
    default : bool
        Computed unless ``metrics=`` says otherwise; False for costly or optional metrics.
    function : callable, optional
        The public array function (ndarrays in), the one ``alignment_score`` or
        ``effective_rank`` call by this name.
    params : mapping
        Fixed keyword arguments of ``compute``, also recorded in the results' attributes.
    convention_params : callable, optional
        ``convention -> dict`` of further keyword arguments chosen by the convention.
    tables : mapping
        Table name ("rank", "alignment", "robustness", "headline") -> column label.
    fill : Any
        Value where the metric does not apply (NaN, 0, False, "").
    center, eps : optional
        Effective-rank estimators only: whether the source centres, and its regulariser.
    needs : callable, optional
        ``samples`` metrics: ``needs(**arguments) -> dict`` of the products of the shared
        similarity pass they read (``Samples.request`` keywords: ``knn``, ``exp_t``,
        ``train_knn``), so the engine asks for them all before the one pass.
    at_reference : Any, optional
        ``clean_condition`` metrics: the value at the clean condition itself (0 drift, CKA 1),
        set without computing.
    interval : bool or "requested"
        Resampled by the engine's group bootstrap (``analyze(bootstrap=B)``): the results get
        ``<variable>_ci`` with its confidence interval (``distillscope.engine.bootstrap``).
        ``True``: whenever ``bootstrap`` is on; ``"requested"``: only with ``resample="all"``,
        for metrics each replicate of which redoes a decomposition or a ridge fit (the CCA
        family, Procrustes, the cross-validated predictivity). Only for metrics of the
        mergeable statistics ``spectrum``, ``pair``, ``folds``, ``drift`` and ``probes``.
    """

    name: str
    long_name: str
    units: str
    takes: str
    statistic: str
    compute: Callable[..., Any]
    definition: str
    anchor: str
    source: str = ""
    family: str = "alignment"
    dims: tuple[str, ...] = ()
    variable: str | None = None
    coordinate: str | None = None
    default: bool = True
    function: Callable[..., Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    convention_params: Callable[[Any], dict] | None = None
    tables: Mapping[str, str] = field(default_factory=dict)
    fill: Any = float("nan")
    center: bool | None = None
    eps: float | None = None
    needs: Callable[..., dict] | None = None
    at_reference: Any = None
    interval: bool | str = False

    def __post_init__(self) -> None:
        if self.takes not in TAKES:
            raise ValueError(f"metric {self.name!r}: takes must be one of {', '.join(TAKES)}; "
                             f"got {self.takes!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"metric {self.name!r}: statistic must be one of "
                             f"{', '.join(STATISTICS)}; got {self.statistic!r}")
        if (self.variable is None) != (self.coordinate is None):
            raise ValueError(f"metric {self.name!r}: give variable and coordinate together")
        if self.interval not in (False, True, REQUESTED):
            raise ValueError(f"metric {self.name!r}: interval must be True, False or "
                             f"{REQUESTED!r}; got {self.interval!r}")

    @property
    def result_variable(self) -> str:
        """The variable of the results this metric fills."""
        return self.variable or self.name

    def arguments(self, convention: Any) -> dict:
        """The keyword arguments of ``compute`` under ``convention``."""
        params = dict(self.params)
        if self.convention_params is not None:
            params.update(self.convention_params(convention))
        return params


_REGISTRY: dict[str, Metric] = {}

#: every registered metric by name, read-only (filled as the metric modules are imported)
REGISTRY: Mapping[str, Metric] = MappingProxyType(_REGISTRY)

#: the modules that declare metrics, imported by ``metrics()`` before the registry is read
_DECLARING_MODULES = (
    "distillscope.metrics.dimensionality",
    "distillscope.metrics.frequency",
    "distillscope.metrics.alignment",
    "distillscope.metrics.predictivity",
    "distillscope.metrics.neighbours",
    "distillscope.metrics.platonic",
    "distillscope.metrics.tokens",
    "distillscope.metrics.robustness",
    "distillscope.engine.derived",
)


def register(declaration: Metric) -> Metric:
    """Add a metric to the registry; a name can be declared once."""
    if declaration.name in _REGISTRY and _REGISTRY[declaration.name] != declaration:
        raise ValueError(f"metric {declaration.name!r} is already registered")
    _REGISTRY[declaration.name] = declaration
    return declaration


def metric(name: str, **fields: Any) -> Callable[[Callable], Callable]:
    """Declare the decorated function as the metric ``name`` (see ``Metric`` for the fields).

    ``function`` (the public array function the metric is based on) is the decorated function;
    ``compute`` (what the engine calls with the statistics) defaults to it.
    """

    def declare(fn: Callable) -> Callable:
        compute = fields.pop("compute", fn)
        function = fields.pop("function", fn)
        register(Metric(name=name, compute=compute, function=function, **fields))
        return fn

    return declare


def metrics() -> Mapping[str, Metric]:
    """The whole registry, in declaration order (imports the declaring modules first)."""
    for module in _DECLARING_MODULES:
        importlib.import_module(module)
    return REGISTRY


def get(name: str) -> Metric:
    """The metric ``name``; an unknown name lists the registered ones."""
    table = metrics()
    if name not in table:
        raise KeyError(name)
    return table[name]


def select(names: str | list[str] | tuple[str, ...] | None) -> list[Metric]:
    """Metrics chosen by name: None or "default" gives the defaults, "all" every metric.

    Names may be mixed with the words "default" and "all" ("default,rbf_cka"). Unknown names
    raise KeyError with the name.
    """
    table = metrics()
    if names is None:
        names = ["default"]
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    chosen: dict[str, Metric] = {}
    for name in names:
        if name == "default":
            chosen.update((n, m) for n, m in table.items() if m.default)
        elif name == "all":
            chosen.update(table)
        elif name in table:
            chosen[name] = table[name]
        else:
            raise KeyError(name)
    order = list(table)
    return sorted(chosen.values(), key=lambda m: order.index(m.name))


def by_variable(chosen: list[Metric]) -> Iterator[tuple[str, list[Metric]]]:
    """The chosen metrics grouped by the result variable they fill, in registry order."""
    groups: dict[str, list[Metric]] = {}
    for m in chosen:
        groups.setdefault(m.result_variable, []).append(m)
    yield from groups.items()


_INTERVAL_CELL = {False: "no", True: "yes", REQUESTED: "on request"}


def markdown_table() -> str:
    """The registry as the Markdown table of ``docs/metrics.md`` (a test keeps them equal):
    ``distillscope metrics --markdown`` prints it."""
    rows = ["| metric | variable | takes | statistic | long name | units | default | interval "
            "| definition |", "|---|---|---|---|---|---|---|---|---|"]
    for m in metrics().values():
        variable = m.result_variable + (f"[{m.coordinate}]" if m.coordinate else "")
        dims = f" x {', '.join(m.dims)}" if m.dims else ""
        rows.append(f"| `{m.name}` | `{variable}`{dims} | {m.takes} | {m.statistic} | "
                    f"{m.long_name} | {m.units} | {'yes' if m.default else 'no'} | "
                    f"{_INTERVAL_CELL[m.interval]} | [{m.anchor}](#{m.anchor}) |")
    return "\n".join(rows)
