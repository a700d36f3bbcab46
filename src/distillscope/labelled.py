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

from . import dimensionality as _array
from ._errors import InputError

__all__ = ["effective_rank", "eigenspectrum"]


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
    spec = _array._estimator(estimator)
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
