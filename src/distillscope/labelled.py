"""The labelled layer: the same functions on ndarrays or xarray DataArrays.

Each function here adds names and metadata to its twin in ``distillscope.dimensionality`` and
nothing else: an ndarray goes straight to the twin; a DataArray is mapped over its other
dimensions with ``xarray.apply_ufunc``, and the result carries ``long_name``, ``units`` and the
``definition`` with every preprocessing choice in its attributes.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import xarray as xr

from ._errors import InputError
from .metrics import dimensionality as _array
from .metrics.registry import TEACHER_STUDENT, metrics

__all__ = ["effective_rank", "eigenspectrum", "alignment_score", "ALIGNMENT_SCORES"]


def _core_dims(data: xr.DataArray, sample_dim: Hashable | None,
               feature_dim: Hashable | None) -> list[Hashable]:
    if data.ndim < 2:
        raise InputError(f"data must have a sample and a feature dimension; got dims {data.dims}")
    sample = sample_dim if sample_dim is not None else ("sample" if "sample" in data.dims else data.dims[-2])
    feature = feature_dim if feature_dim is not None else next(d for d in reversed(data.dims) if d != sample)
    for name, dim in (("sample_dim", sample), ("feature_dim", feature)):
        if dim not in data.dims:
            raise InputError(f"{name} {dim!r} is not a dimension of data {data.dims}")
    if sample == feature:
        raise InputError(f"sample_dim and feature_dim must differ; both are {sample!r}")
    return [sample, feature]


def effective_rank(data, estimator: str = "erank_variance", *, sample_dim: Hashable | None = None,
                   feature_dim: Hashable | None = None, center: bool | None = None,
                   l2_normalize: bool = False, eps: float | None = None):
    """Effective rank of samples x features data, for ndarrays and DataArrays.

    Parameters
    ----------
    data : ndarray (n, d) or DataArray
        A DataArray may have further dimensions (model, layer, ...): the rank is computed for
        each of their combinations.
    estimator : str
        A key of ``distillscope.ESTIMATORS``.
    sample_dim, feature_dim : hashable, optional
        DataArray dimensions; default ``"sample"`` (or the second to last) and the last other.
    center, l2_normalize, eps
        As in ``distillscope.dimensionality.effective_rank``; recorded in the attributes.

    Returns
    -------
    float or DataArray
    """
    if not isinstance(data, xr.DataArray):
        return _array.effective_rank(data, estimator, center=center, l2_normalize=l2_normalize,
                                     eps=eps)
    spec = _array.get_estimator(estimator)
    core = _core_dims(data, sample_dim, feature_dim)
    out = xr.apply_ufunc(
        _array.effective_rank, data, input_core_dims=[core], vectorize=True,
        kwargs={"estimator": estimator, "center": center, "l2_normalize": l2_normalize,
                "eps": eps},
        output_dtypes=[np.float64],
    )
    out.name = "effective_rank"
    out.attrs = {
        "long_name": f"effective rank ({estimator})", "units": "dimensions",
        "definition": spec.definition, "estimator": estimator,
        "center": int(spec.center if center is None else center),
        "l2_normalize": int(l2_normalize), "eps": spec.eps if eps is None else float(eps),
    }
    return out


def eigenspectrum(data, *, sample_dim: Hashable | None = None, feature_dim: Hashable | None = None,
                  center: bool = True, l2_normalize: bool = False):
    """Covariance eigen-spectrum (descending, float64) of ndarrays or DataArrays.

    A DataArray result has the feature dimension replaced by ``component`` (1-based).
    """
    if not isinstance(data, xr.DataArray):
        return _array.eigenspectrum(data, center=center, l2_normalize=l2_normalize)
    core = _core_dims(data, sample_dim, feature_dim)
    d = data.sizes[core[1]]
    out = xr.apply_ufunc(
        _array.eigenspectrum, data, input_core_dims=[core], output_core_dims=[["component"]],
        vectorize=True, kwargs={"center": center, "l2_normalize": l2_normalize},
        output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {"component": d}},
    )
    out = out.assign_coords(component=np.arange(1, d + 1))
    out.name = "spectrum"
    out.attrs = {
        "long_name": "covariance eigenvalue", "units": "feature units squared",
        "definition": ("eigenvalues of Zc^T Zc / (n - 1), descending" if center
                       else "eigenvalues of Z^T Z / n, descending"),
        "center": int(center), "l2_normalize": int(l2_normalize),
    }
    return out


def _scores() -> dict:
    """The registered teacher-student metrics computable from two arrays, by name."""
    return {name: m for name, m in metrics().items()
            if m.takes == TEACHER_STUDENT and m.statistic in ("pair", "samples", "folds")
            and not m.dims and isinstance(m.fill, float)}


def _score(metric, x, y, **kwargs) -> float:
    """A teacher-student metric of two arrays: their statistic, then the registry's compute."""
    from .conventions import get_convention
    from .metrics.predictivity import N_FOLDS, CrossValidation
    from .metrics.neighbours import Samples
    from .metrics.pairs import check_pair, fold_bounds, pair_moments

    arguments = {**metric.arguments(get_convention("default")), **kwargs}
    if metric.statistic == "samples":
        x, y = check_pair(x, y)
        return metric.compute(Samples(x), Samples(y), **arguments)
    if metric.statistic == "folds":
        x, y = check_pair(x, y)
        bounds = fold_bounds(x.shape[0], N_FOLDS)
        folds = CrossValidation(pair_moments(x[lo:hi], y[lo:hi])
                                for lo, hi in zip(bounds, bounds[1:]))
        return metric.compute(folds, **arguments)
    return metric.compute(pair_moments(x, y), **arguments)


#: the names ``alignment_score`` accepts: the registry's scalar teacher-student metrics
ALIGNMENT_SCORES = tuple(_scores())


def alignment_score(teacher, student, metric: str = "linear_cka", *,
                    sample_dim: Hashable | None = None, feature_dim: Hashable | None = None,
                    **kwargs):
    """A scalar teacher-student alignment score, for ndarrays or DataArrays.

    Parameters
    ----------
    teacher, student : ndarray (n, d1), (n, d2) or DataArray
        DataArrays share the sample dimension and may have further shared dimensions (model,
        condition, ...), over which the score is mapped; their feature dimensions may differ in
        size (and name).
    metric : str
        A registered teacher-student metric (``ALIGNMENT_SCORES``, from the registry;
        ``docs/metrics.md`` section 2).
    **kwargs
        Passed to the metric (``k`` for mutual_knn, ``tau``/``batch_size``/``reduction`` for
        InfoNCE, ``alpha`` for Procrustes, ``threshold`` for RBF CKA).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((200, 8))
    >>> round(alignment_score(x, 2 * x @ np.linalg.qr(np.ones((8, 8)) + np.eye(8))[0]), 6)
    1.0
    """
    scores = _scores()
    if metric not in scores:
        raise InputError(f"metric must be one of {', '.join(scores)}; got {metric!r}")
    declared = scores[metric]

    def fn(x, y, **kw):
        return _score(declared, x, y, **kw)

    if not isinstance(teacher, xr.DataArray) and not isinstance(student, xr.DataArray):
        return fn(teacher, student, **kwargs)
    if not (isinstance(teacher, xr.DataArray) and isinstance(student, xr.DataArray)):
        raise InputError("teacher and student must both be ndarrays or both DataArrays")
    t_core = _core_dims(teacher, sample_dim, feature_dim)
    s_core = _core_dims(student, sample_dim, feature_dim)
    if t_core[0] != s_core[0]:
        raise InputError(f"teacher and student must share the sample dimension; got "
                         f"{t_core[0]!r} and {s_core[0]!r}")
    sample = t_core[0]
    if sample in teacher.coords and sample in student.coords:
        a, b = teacher[sample].values, student[sample].values
        if a.shape != b.shape or not np.array_equal(a, b):
            if a.shape != b.shape:
                raise InputError(f"teacher has {a.size} samples, student {b.size}")
            i = int(np.flatnonzero(a != b)[0])
            raise InputError(f"sample ids differ between teacher and student, first at position "
                             f"{i} (teacher {a[i].item()!r}, student {b[i].item()!r}); align them first")
    student = student.rename({s_core[1]: "__student_feature"})
    out = xr.apply_ufunc(
        lambda x, y: fn(x, y, **kwargs), teacher, student,
        input_core_dims=[t_core, [s_core[0], "__student_feature"]], vectorize=True,
        output_dtypes=[np.float64], join="exact",
    )
    out.name = metric
    out.attrs = {"long_name": declared.long_name, "units": declared.units,
                 "definition": declared.definition, "metric": metric,
                 "reference": f"docs/metrics.md#{declared.anchor}",
                 **{k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))}}
    return out
