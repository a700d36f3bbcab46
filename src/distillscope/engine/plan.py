"""The plan of one analysis: what is read, what is accumulated, what it costs.

``build_plan(store, options)`` resolves the selection (models, conditions, layers, metrics)
against the store and lists, before anything is read:

* the **representations**: every stored dataset of the selection, with its pooling and width;
* the **pairs**: the teacher against each student (every teacher layer with every student
  layer, per condition), and each representation against its clean condition;
* the **statistics** each feeds (``STATISTICS`` of the registry), from the metrics chosen;
* the **block size** of the one pass, the bytes read and the memory held.

``Plan.describe()`` prints it (``analyze(..., dry_run=True)``, ``distillscope analyze --plan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .._errors import InputError, StoreError
from .._system import available_memory
from ..conventions import Convention
from ..metrics.predictivity import N_FOLDS
from ..metrics.neighbours import KNN_K
from ..metrics.pairs import fold_bounds
from ..metrics.tokens import ENERGY_THRESHOLDS
from ..metrics.registry import (CLEAN_CONDITION, REPRESENTATION, TEACHER_STUDENT,
                                TEACHER_STUDENT_MODELS, Metric, select)
from ..stats import splitmix64
from ..store import LayerInfo, Store
from .groups import group_memory
from .options import AnalysisOptions
from .pooling import pooled_width, resolve_pooling

__all__ = ["Representation", "Split", "Plan", "build_plan", "union_plan", "check_memory",
           "pass_memory", "preparation"]

Key = tuple[str, str, str]  # (model, condition, layer)

#: live block arrays of one pass at most (the clean condition and one other at a time)
BLOCK_BYTES = 1 << 30
MAX_BLOCK_ROWS = 16384
#: the share of each class held out as test samples when the store has labels but no split
DERIVED_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Representation:
    """One stored dataset as analysed: its layer, pooling and pooled width."""

    info: LayerInfo
    pooling: str
    width: int

    @property
    def key(self) -> Key:
        return (self.info.model, self.info.condition, self.info.layer)

    @property
    def spatial(self) -> bool:
        return self.info.kind in ("map", "tokens")

    @property
    def grid(self) -> tuple[int, int] | None:
        if self.info.kind == "map":
            return self.info.shape[2], self.info.shape[3]
        return self.info.grid if self.info.kind == "tokens" else None

    @property
    def held_dtype(self) -> np.dtype:
        """The dtype its pooled rows are held in: the stored one, float64 for means."""
        return np.dtype(np.float64) if self.pooling == "mean" else self.info.dtype


@dataclass(frozen=True)
class Split:
    """Train and test masks over the samples, and where they come from."""

    train: np.ndarray
    test: np.ndarray
    how: str


@dataclass
class Plan:
    """Everything one analysis reads and computes (see the module docstring)."""

    store: Store
    options: AnalysisOptions
    convention: Convention
    l2: bool
    spectrum_center: bool
    settings: dict[str, tuple[bool, float]]  # estimator -> (center, eps)
    metrics: list[Metric]
    models: list[str]
    conditions: list[str]
    layers: list[str]
    reps: dict[Key, Representation]
    teacher: str | None
    students: list[str]
    teacher_layers: list[str]
    student_layers: list[str]
    pairs: list[tuple[Key, Key]]
    references: list[tuple[Key, Key]]
    reference_condition: str | None
    families: dict[str, list[str]]
    split: Split | None
    folds: list[int] | None
    rows: int
    needs: dict[str, set] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the analysed samples (sorted indices) when the convention computes on a split, else None
    subset: np.ndarray | None = None
    #: the samples of the sample-level metrics when the convention takes fewer
    #: (``Convention.sample_rows``; sorted indices), else None: those of ``subset``
    sample_subset: np.ndarray | None = None

    @property
    def keeps_tokens(self) -> bool:
        """Whether a chosen metric holds the token matrices (``metrics.tokens``)."""
        return any(m.statistic == "images" and m.needs is not None
                   and m.needs(**m.arguments(self.convention)).get("keep_tokens")
                   for m in self.metrics)

    @property
    def sample_level(self) -> np.ndarray | None:
        """The samples the sample-level metrics read (sorted indices), None for all."""
        return self.sample_subset if self.sample_subset is not None else self.subset

    @property
    def n_sample_level(self) -> int:
        """How many samples the sample-level metrics are computed on."""
        return self.n_analysed if self.sample_subset is None else int(self.sample_subset.size)

    @property
    def n_analysed(self) -> int:
        """How many samples the spectra, pairs and sample-level metrics are computed on."""
        return self.store.n_samples if self.subset is None else int(self.subset.size)

    # -- what is computed -------------------------------------------------------------------
    def chosen(self, takes: str, statistic: str | None = None) -> list[Metric]:
        return [m for m in self.metrics if m.takes == takes
                and (statistic is None or m.statistic == statistic)]

    def condition_order(self) -> list[str]:
        """The clean condition first: its blocks stay while every other condition is done."""
        clean = self.reference_condition
        return ([clean] if clean in self.conditions else []) + [
            c for c in self.conditions if c != clean]

    def probe_layers(self) -> list[tuple[str, str]]:
        """(model, layer) pairs that get probes and the kNN vote: embeddings, clean present."""
        if self.split is None or self.reference_condition is None:
            return []
        clean = self.reference_condition
        return [(m, layer) for m in self.models for layer in self.layers
                if (m, clean, layer) in self.reps
                and self.reps[(m, clean, layer)].info.kind == "embedding"]

    # -- cost --------------------------------------------------------------------------------
    def bytes_read(self) -> int:
        return sum(int(np.prod(r.info.shape)) * r.info.dtype.itemsize for r in self.reps.values())

    def block_row_bytes(self, condition: str) -> int:
        """Bytes one sample takes in the block arrays of one condition: read (float16 widened
        to float32), pooled (a new array for means), prepared (float64)."""
        total = 0
        for r in self.reps.values():
            if r.info.condition == condition:
                elements = int(np.prod(r.info.shape[1:]))
                read = elements * (r.info.dtype.itemsize + (4 if r.info.dtype.itemsize == 2 else 0))
                total += read + 8 * r.width * (2 if r.pooling == "mean" else 1)
        return total

    def memory(self) -> dict[str, int]:
        """Bytes held by each kind of state (blocks, moments, cross moments, rows held, ...)."""
        n = self.store.n_samples
        folds = len(self.folds) - 1 if self.folds else 1
        in_pairs = {k for pair in self.pairs for k in pair}
        widths = {k: r.width for k, r in self.reps.items()}
        moments = sum(8 * w * w * (folds if k in in_pairs else 1) for k, w in widths.items())
        cross = sum(8 * widths[x] * widths[y] * folds for x, y in self.pairs)
        cross += sum(8 * widths[x] * widths[y] for x, y in self.references if self.needs["pair"])
        held = n + (0 if self.sample_level is None else self.n_sample_level)  # and a subset's copy
        rows = sum(held * self.reps[k].width * self.reps[k].held_dtype.itemsize
                   for k in self.needs["samples"])
        unit = max((n * self.reps[k].width * 4 for k in self.needs["samples"]), default=0)
        lists = n * KNN_K * 12 * len(self.needs["samples"])
        spatial = sum(16 * int(np.prod(self.reps[k].grid)) for k in self.needs["maps"])
        spatial += 4 * len(ENERGY_THRESHOLDS) * self.n_analysed * len(self.needs["images"])
        tokens = sum(self.n_analysed * int(np.prod(self.reps[k].info.shape[1:]))
                     * self.reps[k].info.dtype.itemsize
                     for k in self.needs["images"]) if self.keeps_tokens else 0
        live = max((self.block_row_bytes(c) for c in self.conditions), default=0)
        clean = self.block_row_bytes(self.reference_condition) if self.reference_condition else 0
        blocks = self.rows * (live + (clean if live != clean else 0))
        return {"blocks": blocks, "moments": moments, "cross moments": cross,
                "bootstrap groups": group_memory(self),
                "rows held (sample-level metrics)": rows,
                "similarity pass (one representation at a time)": unit, "neighbour lists": lists,
                "spatial spectra": spatial, "token matrices held (shared token basis)": tokens}

    def check_memory(self) -> None:
        """Refuse, before reading, a plan that needs more memory than is available."""
        check_memory([self])

    def describe(self) -> str:
        """The plan in words: what is read, what is computed, bytes and memory."""
        mib = 1 / 2**20
        memory = self.memory()
        lines = [
            f"plan for {self.store.path}: {self.store.n_samples} samples, convention "
            f"{self.convention.name}" + ("" if self.subset is None else
                                         f" (computed on the {self.n_analysed} test samples)"),
            f"  read once: {len(self.reps)} datasets, {self.bytes_read() * mib:.1f} MiB, in "
            f"blocks of {self.rows} samples",
            f"  models: {', '.join(self.models)}",
            f"  conditions: {', '.join(self.conditions)}"
            + (f" (clean: {self.reference_condition})" if self.reference_condition else ""),
            f"  representations: {len(self.reps)} (pooling: "
            + ", ".join(sorted({r.pooling for r in self.reps.values()})) + ")",
            f"  teacher-student pairs: {len(self.pairs)}"
            + (f" ({N_FOLDS} cross-validation folds)" if self.folds else ""),
            f"  clean-vs-condition pairs: {len(self.references)}",
            f"  sample-level (rows held): {len(self.needs['samples'])} representations; "
            f"probes: {len(self.probe_layers()) if self.needs['probes'] else 0} model layers",
            "  metrics: " + ", ".join(m.name for m in self.metrics),
            "  memory (MiB): " + ", ".join(f"{k} {v * mib:.1f}" for k, v in memory.items())
            + f"; total {sum(memory.values()) * mib:.1f}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    __str__ = describe


#: what each statistic's accumulators read besides the stored rows: the prepared rows
#: (normalisation and subset), the analysed subset only, or nothing (all pooled rows)
DEPENDS = {"moments": ("l2", "subset"), "pair": ("l2", "subset"), "maps": ("subset",),
           "images": ("subset",), "drift": ("subset",), "samples": (),
           "group_moments": ("l2", "subset"), "group_pair": ("l2", "subset"),
           "group_drift": ("subset",)}


def preparation(plan: Plan, statistic: str = "moments") -> tuple:
    """What a statistic's accumulators depend on in ``plan``: plans equal in it share them
    (``executor.run_plans``)."""
    subset = None if plan.subset is None else plan.subset.tobytes()
    return tuple({"l2": plan.l2, "subset": subset}[d] for d in DEPENDS[statistic])


def pass_memory(plans: Sequence[Plan]) -> dict[str, int]:
    """Bytes the plans of one pass (one per convention) hold together: moments and cross
    moments once per way of preparing rows (``preparation``: plans alike share them),
    everything else (blocks, held rows, spatial spectra) once, at its largest."""
    per = [p.memory() for p in plans]
    own = ("moments", "cross moments", "bootstrap groups")
    groups: dict[tuple, int] = {}
    for plan, memory in zip(plans, per):
        key = preparation(plan)
        groups[key] = max(groups.get(key, 0), sum(memory[k] for k in own))
    memory = {k: max(m[k] for m in per) for k in per[0] if k not in own}
    memory["moments and cross moments"] = sum(groups.values())
    return memory


def check_memory(plans: Sequence[Plan]) -> None:
    """Refuse, before reading, the plans of one pass when together they need more memory than
    is available (``pass_memory``)."""
    memory = pass_memory(plans)
    need, have = sum(memory.values()), available_memory()
    if need <= have:
        return
    part = max(memory, key=memory.get)
    raise InputError(
        f"{plans[0].store.path}: this analysis holds about {need / 2**30:.1f} GiB ({part}: "
        f"{memory[part] / 2**30:.1f} GiB) but {have / 2**30:.1f} GiB of memory is available;"
        " select fewer models, layers, metrics or conventions (--metrics: mutual_knn, "
        "uniformity, infonce_loss and the probes hold every sample), or smaller blocks (--rows)")


# ---------------------------------------------------------------------------------- building
def _select(kind: str, wanted: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if wanted is None:
        return list(available)
    missing = [w for w in wanted if w not in available]
    if missing:
        raise InputError(
            f"{kind} {missing[0]!r} is not in the store; available: {', '.join(available)}")
    return list(wanted)


def _metrics(options: AnalysisOptions, convention: Convention) -> list[Metric]:
    """The chosen metrics but those the convention omits (unless named), those it adds, and
    the descriptors of every representation (always there)."""
    try:
        left_out = options.left_out(convention)
        chosen = [m for m in select(options.metrics) if m.name not in left_out]
        chosen += [m for m in select(list(convention.metrics)) if m not in chosen]
        return chosen + [m for m in select("all") if m.family == "descriptor" and m not in chosen]
    except KeyError as err:
        from ..metrics.registry import metrics as registered

        raise InputError(f"metric {err.args[0]!r} is not registered; registered: "
                         + ", ".join(registered()) + ' (and "default", "all")') from None


def reference_condition(store: Store) -> str | None:
    """The clean condition corrupted ones are compared with: the first of kind ``clean``."""
    return next((c for c, attrs in store.conditions.items() if attrs.get("kind") == "clean"), None)


def derived_split(sample_ids: np.ndarray, labels: np.ndarray,
                  test_fraction: float = DERIVED_TEST_FRACTION) -> Split:
    """A stratified split from the sample ids alone: in each class, the samples of the lowest
    ``splitmix64(id)`` make up ``round(test_fraction * size)`` test samples (at least one
    of each class of two or more), the rest train. The same ids give the same split whatever
    their order or the store they are in."""
    order = np.lexsort((splitmix64(sample_ids), labels))
    test = np.zeros(labels.size, dtype=bool)
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], labels.size]):
        size = hi - lo
        k = min(size - 1, max(1, int(round(test_fraction * size)))) if size > 1 else 0
        test[order[lo:lo + k]] = True
    return Split(~test, test, f"derived: stratified by label, {test_fraction:.0%} test by "
                              "splitmix64(sample id) rank within each class (docs/metrics.md)")


def _split(store: Store, notes: list[str]) -> Split | None:
    if store.labels is None:
        return None
    if store.splits is not None:
        if {"train", "test"} <= set(np.unique(store.splits).tolist()):
            return Split(store.splits == "train", store.splits == "test",
                         "the store's /samples/split")
        notes.append("/samples/split has no 'train' and 'test' samples: no probe or kNN vote")
        return None
    split = derived_split(store.sample_ids, store.labels)
    notes.append("the store has labels but no /samples/split: probes and the kNN vote use a "
                 f"stratified split derived from the sample ids ({int(split.test.sum())} test "
                 f"of {split.test.size}; docs/metrics.md, 'Derived split')")
    return split


def _families(store: Store, models: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(store.models[m].family, []).append(m)
    return {f: members for f, members in groups.items() if len(members) > 1}


def build_plan(store: Store, options: AnalysisOptions) -> Plan:
    """Resolve ``options`` against ``store`` (see the module docstring); reads no values."""
    if store.n_samples < 2:
        raise StoreError(store.path, "/samples/id",
                         f"holds {store.n_samples} sample; spectra of centred data need at least 2")
    conv = options.resolved_convention()
    models = _select("model", options.models, list(store.models))
    conditions = _select("condition", options.conditions, list(store.conditions))
    infos = [i for i in store.entries() if i.model in models and i.condition in conditions]
    layers = _select("layer", options.layers, list(dict.fromkeys(i.layer for i in infos)))
    infos = [i for i in infos if i.layer in layers]
    if not infos:
        raise InputError("nothing to analyse: no stored layer matches the selection")
    reps = {}
    for info in infos:  # a bad pooling fails here, before any work
        rep = Representation(info, resolve_pooling(info, options.pooling),
                             pooled_width(info, options.pooling))
        reps[rep.key] = rep
    chosen = _metrics(options, conv)
    notes: list[str] = list(store.notes)  # what validation found worth saying
    clean = reference_condition(store)
    teacher = next((m for m in models if store.models[m].role == "teacher"), None)
    students = [m for m in models if store.models[m].role == "student"]
    pairs, t_layers, s_layers = _pairs(reps, teacher, students, conditions, layers, chosen)
    references = ([] if clean is None or clean not in conditions
                  or not any(m.takes == CLEAN_CONDITION for m in chosen)
                  else [((m, clean, layer), (m, c, layer)) for m in models for c in conditions
                        if c != clean for layer in layers
                        if (m, clean, layer) in reps and (m, c, layer) in reps])
    plan = Plan(
        store=store, options=options, convention=conv,
        l2=conv.l2_normalize if options.l2_normalize is None else bool(options.l2_normalize),
        spectrum_center=(options.center if options.center is not None
                         else (conv.center if conv.center is not None else True)),
        settings={}, metrics=chosen, models=models, conditions=conditions, layers=layers,
        reps=reps, teacher=teacher, students=students, teacher_layers=t_layers,
        student_layers=s_layers, pairs=pairs, references=references, reference_condition=clean,
        families=_families(store, models), split=_split(store, notes), folds=None, rows=1,
        notes=notes)
    from ..metrics.dimensionality import ESTIMATORS

    plan.settings = {name: conv.resolve(name, center=options.center) for name in ESTIMATORS}
    plan.needs = _statistics(plan)
    plan.subset = _subset(plan)
    plan.sample_subset = _sample_subset(plan)
    if any(m.statistic == "folds" for m in plan.metrics) and plan.pairs:
        plan.folds = fold_bounds(plan.n_analysed, N_FOLDS)
    plan.rows = _block_rows(plan)
    return plan


def union_plan(plans: Sequence[Plan]) -> Plan:
    """One plan that accumulates what any of ``plans`` (alike in preparation: normalisation
    and analysed samples) needs: their metrics and needs together, folds if any has them."""
    if len(plans) == 1:
        return plans[0]
    metrics = list({m.name: m for p in plans for m in p.metrics}.values())
    needs = {s: set().union(*(p.needs[s] for p in plans)) for s in plans[0].needs}
    folds = next((p.folds for p in plans if p.folds), None)
    return replace(plans[0], metrics=metrics, needs=needs, folds=folds)


def _subset(plan: Plan) -> np.ndarray | None:
    """The test split's samples under a convention that computes on it (``rows="test"``)."""
    if plan.convention.rows == "all":
        return None
    if plan.split is None:
        plan.notes.append(f"convention {plan.convention.name} computes on the test split, but "
                          "the store has no /samples/split with 'train' and 'test' (nor labels "
                          f"to derive one): computed on all {plan.store.n_samples} samples")
        return None
    subset = np.flatnonzero(plan.split.test)
    if subset.size < 2:
        raise StoreError(plan.store.path, "/samples/split",
                         f"holds {subset.size} test sample; convention "
                         f"{plan.convention.name} computes on the test split and needs at least 2")
    return subset


def _sample_subset(plan: Plan) -> np.ndarray | None:
    """The convention's subsample for the sample-level metrics (``Convention.sample_rows``):
    of the analysed samples, those of the lowest splitmix64(id)."""
    wanted = plan.convention.sample_rows
    analysed = (np.arange(plan.store.n_samples) if plan.subset is None else plan.subset)
    if wanted is None or analysed.size <= wanted:
        return None
    ranks = np.argsort(splitmix64(plan.store.sample_ids[analysed]), kind="stable")
    return np.sort(analysed[ranks[:wanted]])


def _pairs(reps, teacher, students, conditions, layers, chosen):
    if teacher is None or not students or not any(
            m.takes in (TEACHER_STUDENT, TEACHER_STUDENT_MODELS) for m in chosen):
        return [], [], []
    pairs = []
    for c in conditions:
        t_keys = [(teacher, c, layer) for layer in layers if (teacher, c, layer) in reps]
        for s in students:
            s_keys = [(s, c, layer) for layer in layers if (s, c, layer) in reps]
            pairs += [(t, k) for t in t_keys for k in s_keys]
    t_layers = list(dict.fromkeys(t[2] for t, _ in pairs))
    s_layers = list(dict.fromkeys(s[2] for _, s in pairs))
    return pairs, t_layers, s_layers


def _statistics(plan: Plan) -> dict[str, set]:
    """Which keys (representations or pairs) each statistic is accumulated for."""
    chosen = {(m.takes, m.statistic) for m in plan.metrics}
    needs: dict[str, set] = {s: set() for s in ("moments", "maps", "images", "pair", "folds",
                                                 "samples", "drift", "probes")}
    needs["moments"] = set(plan.reps)
    for statistic in ("maps", "images"):
        if any(s == statistic for _, s in chosen):
            needs[statistic] = {k for k, r in plan.reps.items() if r.spatial}
    if (TEACHER_STUDENT, "pair") in chosen:
        needs["pair"].update(plan.pairs)
    if (CLEAN_CONDITION, "pair") in chosen:
        needs["pair"].update(plan.references)
    if (TEACHER_STUDENT, "folds") in chosen:
        needs["folds"].update(plan.pairs)
    if {(TEACHER_STUDENT, "samples"), (TEACHER_STUDENT_MODELS, "samples")} & chosen:
        needs["samples"].update(k for pair in plan.pairs for k in pair)
    if (REPRESENTATION, "samples") in chosen:
        needs["samples"].update(plan.reps)
    if (CLEAN_CONDITION, "drift") in chosen:
        needs["drift"].update(plan.references)
    if (CLEAN_CONDITION, "probes") in chosen and plan.split is not None:
        needs["probes"] = {True}
        needs["samples"].update((m, c, layer) for m, layer in plan.probe_layers()
                                for c in plan.conditions if (m, c, layer) in plan.reps)
    return needs


def _block_rows(plan: Plan) -> int:
    if plan.options.rows:
        return plan.options.rows
    clean = plan.reference_condition
    per_row = max(plan.block_row_bytes(c) + (plan.block_row_bytes(clean)
                                             if clean and c != clean else 0)
                  for c in plan.conditions)
    return int(max(64, min(MAX_BLOCK_ROWS, BLOCK_BYTES // max(per_row, 1))))
