"""Saving and loading result datasets: netCDF (h5netcdf engine), written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .._errors import InputError
from ..outputs import write_atomically

__all__ = ["save_results", "load_results"]


def _netcdf_attrs(attrs: dict) -> dict:
    """netCDF attributes cannot be bool or None: store them as int and str."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        elif value is None:
            value = "none"
        out[key] = value
    return out


def save_results(results: xr.Dataset, path: str | os.PathLike[str], *,
                 overwrite: bool = False, inputs: Sequence = ()) -> Path:
    """Write a result dataset to netCDF atomically.

    The dataset is serialised in memory (results are small; HDF5 then never writes to a disk
    that may fail), written to a temporary file in the destination folder, synced, then moved
    into place under the output's lock (``distillscope.outputs``): readers never see a
    half-written file and a failed write leaves any existing file untouched. Without
    ``overwrite`` an existing file is never replaced, even one that appears meanwhile.

    Raises
    ------
    OutputError
        If ``path`` exists and ``overwrite`` is False, is the store the results were computed
        from (attribute ``store``) or one of ``inputs``, is not a regular file, or its folder is
        missing or read-only.
    """
    ds = results.copy()
    ds.attrs = _netcdf_attrs(ds.attrs)
    for name in list(ds.variables):
        ds[name].attrs = _netcdf_attrs(ds[name].attrs)
    return write_atomically(  # serialised in memory: HDF5 never writes to a failing disk
        Path(path), lambda fh: fh.write(ds.to_netcdf(engine="h5netcdf")), overwrite=overwrite,
        what="results file", inputs=[results.attrs.get("store"), *inputs])


def load_results(path: str | os.PathLike[str]) -> xr.Dataset:
    """Load a result file written by ``save_results`` into memory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such results file; write one with distillscope analyze "
                         "STORE -o RESULTS.nc")
    try:
        return xr.load_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not a netCDF results file ({first})") from None
