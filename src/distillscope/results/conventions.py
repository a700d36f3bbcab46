"""Results of several conventions in one dataset, along a ``convention`` dimension, and back.

``analyze(store, convention="default,arxiv_2603_06698")`` (or ``"all"``) computes every
convention in one pass; ``stack_conventions`` puts their results together:

* every data variable gains the leading dimension ``convention`` (NaN where a convention does
  not compute the variable: the token dimensions of Tian et al. under ``default``, say);
* a coordinate that differs between conventions (``estimator_center``, ``estimator_eps``)
  gains it too;
* a run attribute that differs (``convention_source``, ``convention_primary``,
  ``l2_normalize``, ``analysed_samples``, ...) becomes a coordinate along ``convention``,
  named ``convention_<attribute>`` (the ``convention_`` prefix is not doubled);
* a variable attribute that differs (``ddof`` of the seed spreads, say) is kept as one string,
  ``"NAME=value; NAME=value"``;
* the run attribute ``conventions`` lists them in order, ``convention_attributes`` the run
  attributes that became coordinates, and the coordinate ``convention_variables`` the
  variables each computes.

``one_convention(results, name)`` gives one convention's results as a single-convention
analysis would have returned them (its attributes restored, the variables it does not compute
dropped), so everything that reads one convention (report, tables, compare) reads either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .._errors import InputError
from .attributes import describe

__all__ = ["stack_conventions", "one_convention", "convention_names"]

#: run attributes that may differ between the conventions of one pass without being about them
_SAME_RUN = ("created",)


def _coordinate_name(attribute: str) -> str:
    return attribute if attribute.startswith("convention_") else f"convention_{attribute}"


def _joined(values: dict[str, object]) -> str:
    return "; ".join(f"{name}={value}" for name, value in values.items())


def _differing(attrs: list[dict]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for a in attrs for k in a))
    return {k: [a.get(k) for a in attrs] for k in keys
            if any(a.get(k) != attrs[0].get(k) for a in attrs)}


def stack_conventions(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Single-convention results of one pass on one ``convention`` dimension (module
    docstring)."""
    names = [str(p.attrs["convention"]) for p in parts]
    if len(set(names)) != len(names):
        raise InputError(f"stack_conventions: each convention once; got {names}")
    runs = [dict(p.attrs) for p in parts]
    differing = {k: v for k, v in _differing(runs).items() if k not in _SAME_RUN + ("convention",)}
    stacked = xr.concat(_every_coordinate([_bare(p) for p in parts]),
                        dim=xr.Variable("convention", names), data_vars="all",
                        coords="different", compat="equals", join="outer",
                        combine_attrs="drop")
    stacked = stacked.assign_coords(convention=names)
    for name in stacked.variables:
        found = [dict(p[name].attrs) for p in parts if name in p.variables]
        holders = [c for c, p in zip(names, parts) if name in p.variables]
        attrs = dict(found[0]) if found else {}
        for key, values in _differing(found).items():
            attrs[key] = _joined({c: v for c, v in zip(holders, values) if v is not None})
        stacked[name].attrs = attrs
    for key, values in differing.items():
        kinds = {type(v) for v in values}
        if None in values or len(kinds) > 1 or kinds <= {str}:
            values = ["" if v is None else str(v) for v in values]
        stacked = stacked.assign_coords({_coordinate_name(key): ("convention", values)})
    stacked = stacked.assign_coords(convention_variables=("convention", [
        ", ".join(p.data_vars) for p in parts]))
    stacked.attrs = {k: v for k, v in runs[0].items() if k not in differing}
    stacked.attrs["convention"] = names[0]
    stacked.attrs["conventions"] = ", ".join(names)
    stacked.attrs["convention_attributes"] = ", ".join(differing)
    stacked.attrs["convention_note"] = (
        "several conventions computed in one pass; every variable has the convention "
        "dimension, and what differs between them are convention_* coordinates "
        "(docs/results-format.md)")
    return describe(stacked)


def _bare(results: xr.Dataset) -> xr.Dataset:
    """A shallow copy without attributes (``drop_attrs`` rebuilds the dataset: much slower)."""
    bare = results.copy(deep=False)
    for variable in bare.variables.values():
        variable.attrs = {}
    bare.attrs = {}
    return bare


def _every_coordinate(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Each part with every coordinate of any part (a variable some conventions omit takes its
    own with it, ``angle`` say): concatenation needs each one in all of them."""
    found: dict[str, xr.Variable] = {}
    for part in parts:
        for name, coordinate in part.coords.items():
            found.setdefault(str(name), coordinate.variable)
    return [part.assign_coords({n: v for n, v in found.items() if n not in part.coords})
            for part in parts]


def convention_names(results: xr.Dataset) -> list[str]:
    """The conventions of a results dataset: its ``convention`` coordinate, or its one."""
    if "convention" in results.dims:
        return [str(c) for c in results["convention"].values]
    return [str(results.attrs.get("convention", "default"))]


def one_convention(results: xr.Dataset, name: str | None = None) -> xr.Dataset:
    """One convention's results (the first by default) as its own analysis returned them."""
    names = convention_names(results)
    name = names[0] if name is None else name
    if name not in names:
        raise InputError(f"no convention {name!r} in these results; they hold {', '.join(names)}")
    if "convention" not in results.dims:
        return results
    one = results.sel(convention=name)
    moved = [k for k in str(results.attrs.get("convention_attributes", "")).split(", ") if k]
    attrs = {k: v for k, v in results.attrs.items()
             if k not in ("conventions", "convention_note", "convention_attributes")}
    for key in moved:
        value = _plain(one[_coordinate_name(key)].values.item())
        if value != "":
            attrs[key] = value
    attrs["convention"] = name
    computed = str(one["convention_variables"].values.item()).split(", ")
    one = one.drop_vars([_coordinate_name(k) for k in moved]
                        + ["convention", "convention_variables"])
    one = one[[v for v in one.data_vars if v in computed]]
    for var in one.variables:
        picked = {k: _pick(v, name, names) for k, v in results[var].attrs.items()}
        one[var].attrs = {k: v for k, v in picked.items() if v is not _NOT_HERE}
    one.attrs = attrs
    return one


_NOT_HERE = object()  # an attribute the other conventions have and this one has not


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _pick(value, name: str, names: list[str]):
    """One convention's value of an attribute ``stack_conventions`` joined."""
    if not isinstance(value, str) or "=" not in value:
        return value
    parts = dict(part.split("=", 1) for part in value.split("; ") if "=" in part)
    if not set(parts) <= set(names):
        return value
    if name not in parts:
        return _NOT_HERE
    text = parts[name]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
