"""``analyze``: stream a feature store and compute every dimensionality metric, as xarray.

For each model x condition x layer the activations are read chunk by chunk, pooled to one vector
per sample (``distillscope.pooling``), optionally L2-normalised, and accumulated into mergeable
second moments (``distillscope.moments``); memory depends on the feature width, not on the
number of samples. The result layout is documented in ``docs/results-format.md``.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Sequence

import numpy as np
import xarray as xr

from ._errors import InputError, StoreError
from ._version import __version__
from .conventions import Convention, get_convention
from .metrics.dimensionality import ESTIMATORS, powerlaw_alpha, rank_from_spectrum, seed_averaged_erank
from .metrics.moments import NonFiniteError, SecondMoments
from .engine.pooling import pool, pooled_width, resolve_pooling
from .store import LayerInfo, Store, nonfinite_message, open_store

__all__ = ["analyze"]

_INT_FILL = 0


def _select(kind: str, wanted: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if wanted is None:
        return list(available)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [w for w in wanted if w not in available]
    if missing:
        raise InputError(
            f"{kind} {missing[0]!r} is not in the store; available: {', '.join(available)}"
        )
    return wanted


def _spatial_grid(info: LayerInfo) -> tuple[int, int] | None:
    if info.kind == "map":
        return info.shape[2], info.shape[3]
    if info.kind == "tokens":
        return info.grid
    return None


def _moments_of(store: Store, info: LayerInfo, pooling: str, l2_normalize: bool,
                rows: int | None, bar, spectrum=None) -> SecondMoments:
    """Stream one layer into its moments and, for maps and tokens, its spatial power spectrum."""
    from .metrics.frequency import tokens_to_maps

    moments = SecondMoments(pooled_width(info, pooling), l2_normalize=l2_normalize)
    for start, block in store.iter_chunks(info, rows, widen=True):
        try:
            moments.update(pool(block, info, pooling))
            if spectrum is not None:
                maps = (block if info.kind == "map"
                        else tokens_to_maps(block, info.grid, info.num_prefix_tokens))
                spectrum.update(maps)
        except NonFiniteError:
            n_nan, n_inf, sample, feature = store.locate_nonfinite(info)
            raise StoreError(store.path, info.path, nonfinite_message(
                n_nan, n_inf, sample, int(store.sample_ids[sample]), feature)) from None
        if bar is not None:
            bar.update(block.shape[0])
    return moments


def _constant_features(moments: SecondMoments) -> int:
    """Features whose variance is zero up to the rounding of their mean."""
    n = moments.count
    variance = np.diag(moments.scatter(center=True)) / (n - 1)
    tolerance = (n * np.finfo(np.float64).eps * np.abs(moments.mean)) ** 2
    return int(np.count_nonzero(variance <= tolerance))


def analyze(store, *, models: Sequence[str] | None = None,
            conditions: Sequence[str] | None = None, layers: Sequence[str] | None = None,
            convention: str | Convention = "default", l2_normalize: bool | None = None,
            center: bool | None = None, pooling: str = "auto", rows: int | None = None,
            allow_incomplete: bool = False, alignment: bool = True,
            frequency: bool = True, remove_map_mean: bool = False, park_kim: bool = False,
            robustness: bool = True, progress: bool = False) -> xr.Dataset:
    """Eigen-spectra and every effective-rank estimator for each model, condition and layer.

    Parameters
    ----------
    store : path-like or Store
        A feature store (``distillscope.open_store`` validates it).
    models, conditions, layers : sequence of str, optional
        Restrict the analysis; default everything in the store.
    convention : str or Convention, default "default"
        Named preprocessing and estimator choices: "default" (each estimator as its source
        defines it), "arxiv_2603_06698" or "rankme" (``distillscope.CONVENTIONS``).
    l2_normalize, center : bool, optional
        Override the convention for every estimator.
    pooling : {"auto", "mean", "max", "cls", "flatten"}
        How maps and tokens become one vector per sample (``distillscope.pooling``).
    rows : int, optional
        Samples per streamed block (default: up to 16384, at most 128 MiB as float64).
    allow_incomplete : bool, default False
        Read a store whose ``complete`` flag is not set.
    frequency : bool, default True
        For maps and tokens, the spatial power spectrum by band (``docs/metrics.md`` section 3):
        ``band_fraction``, ``radial_profile``, ``grid_height``/``grid_width``, read in the same
        pass as the moments.
    remove_map_mean : bool, default False
        Remove each map's spatial mean before its FFT.
    park_kim : bool, default False
        Also Park & Kim's ``relative_log_amplitude`` (square grids; one FFT per map, slower).
    alignment : bool, default True
        Also compare every student with the teacher (``docs/metrics.md`` section 2): adds the
        variables of ``distillscope.alignment_analysis`` with dims (student, condition,
        teacher_layer, student_layer); needs a teacher and at least one student.
    robustness : bool, default True
        Against the store's clean condition (``docs/metrics.md`` section 5): relative feature
        drift, clean-versus-corrupted CKA and the change of effective rank for every model,
        condition and layer; linear-probe and kNN accuracy for embedding layers when the store
        has labels and train/test splits; seed means and spreads per family; the frequency
        response when the store has band-limited noise in the low, mid and high bands
        (``distillscope.robustness_analysis``).
    progress : bool, default False
        Show a progress bar on standard error.

    Returns
    -------
    xarray.Dataset
        ``effective_rank`` (model, condition, layer, estimator), ``spectrum`` (model,
        condition, layer, component), ``powerlaw_alpha``, ``n_features``, ``available``,
        ``constant_features``, ``zero_norm_samples``, ``pooling``; with several seeds of one
        model family also ``seed_averaged_rank`` and ``seed_rank_std`` (family, condition,
        layer). Layers a model does not have are NaN with ``available = False``.

    References
    ----------
    Definitions and sources: ``docs/metrics.md``.
    """
    conv = get_convention(convention)
    l2 = conv.l2_normalize if l2_normalize is None else bool(l2_normalize)
    spectrum_center = center if center is not None else (conv.center if conv.center is not None else True)
    settings = {name: conv.resolve(name, center=center) for name in ESTIMATORS}

    own = not isinstance(store, Store)
    st = open_store(store, allow_incomplete=allow_incomplete) if own else store
    try:
        return _analyze(st, models, conditions, layers, conv, l2, spectrum_center, settings,
                        pooling, rows, alignment, frequency, remove_map_mean, park_kim,
                        robustness, progress)
    finally:
        if own:
            st.close()


def _analyze(st: Store, models, conditions, layers, conv: Convention, l2: bool,
             spectrum_center: bool, settings: dict, pooling: str, rows, alignment: bool,
             frequency: bool, remove_map_mean: bool, park_kim: bool, robustness: bool,
             progress) -> xr.Dataset:
    if st.n_samples < 2:
        raise StoreError(st.path, "/samples/id",
                         f"holds {st.n_samples} sample; spectra of centred data need at least 2")
    model_names = _select("model", models, list(st.models))
    condition_names = _select("condition", conditions, list(st.conditions))
    entries = [info for info in st.entries()
               if info.model in model_names and info.condition in condition_names]
    all_layers = list(dict.fromkeys(info.layer for info in entries))
    layer_names = _select("layer", layers, all_layers)
    entries = [info for info in entries if info.layer in layer_names]
    if not entries:
        raise InputError("nothing to analyse: no stored layer matches the selection")
    for info in entries:
        resolve_pooling(info, pooling)  # fail on a bad pooling before any work

    estimators = list(ESTIMATORS)
    shape = (len(model_names), len(condition_names), len(layer_names))
    widths = {id(info): pooled_width(info, pooling) for info in entries}
    n_comp = max(widths.values())
    ranks = np.full((*shape, len(estimators)), np.nan)
    spectra = np.full((*shape, n_comp), np.nan)
    alpha = np.full(shape, np.nan)
    n_features = np.full(shape, _INT_FILL, dtype=np.int64)
    available = np.zeros(shape, dtype=bool)
    constant = np.full(shape, _INT_FILL, dtype=np.int64)
    zero_norm = np.full(shape, _INT_FILL, dtype=np.int64)
    pooled_how = np.full(shape, "", dtype=object)
    per_entry_spectrum: dict[tuple[str, str, str], np.ndarray] = {}
    spatial_results: dict[tuple[int, int, int], object] = {}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        n_students = sum(st.models[m].role == "student" for m in model_names)
        passes = len(entries) + (n_students * len(condition_names) if alignment else 0)
        if robustness:
            passes += sum(st.conditions[i.condition].get("kind") != "clean" for i in entries)
        bar = tqdm(total=st.n_samples * passes, unit="sample", unit_scale=True,
                   desc="analyze", file=sys.stderr, dynamic_ncols=True,
                   disable=None)  # None: only on a terminal
    try:
        for info in entries:
            if bar is not None:
                bar.set_postfix_str(f"{info.model}/{info.condition}/{info.layer}", refresh=False)
            idx = (model_names.index(info.model), condition_names.index(info.condition),
                   layer_names.index(info.layer))
            grid = _spatial_grid(info) if frequency else None
            spatial = None
            if grid is not None:
                from .metrics.frequency import SpectrumAccumulator

                spatial = SpectrumAccumulator(grid, remove_mean=remove_map_mean,
                                              log_amplitude=park_kim and grid[0] == grid[1])
            moments = _moments_of(st, info, pooling, l2, rows, bar, spatial)
            if spatial is not None:
                spatial_results[idx] = spatial
            lam = {True: moments.eigenvalues(center=True)}
            if not all(c for c, _ in settings.values()) or not spectrum_center:
                lam[False] = moments.eigenvalues(center=False)
            n_values = min(moments.count, moments.n_features)
            for k, name in enumerate(estimators):
                c, eps = settings[name]
                ranks[idx + (k,)] = rank_from_spectrum(lam[c], name, eps=eps, n_values=n_values)
            spectrum = lam[spectrum_center]
            spectra[idx + (slice(0, spectrum.size),)] = spectrum
            alpha[idx] = powerlaw_alpha(spectrum)
            n_features[idx] = moments.n_features
            available[idx] = True
            constant[idx] = _constant_features(moments)
            zero_norm[idx] = moments.zero_norm_rows
            pooled_how[idx] = resolve_pooling(info, pooling)
            per_entry_spectrum[(info.model, info.condition, info.layer)] = lam[True]
        aligned = None
        if alignment:
            from .alignment_analysis import alignment_dataset

            aligned = alignment_dataset(st, model_names, condition_names, layer_names, conv, l2,
                                        pooling, rows, n_comp, bar)
        robust = None
        if robustness:
            from .robustness_analysis import robustness_dataset

            robust = robustness_dataset(st, model_names, condition_names, layer_names, conv, l2,
                                        pooling, rows, bar)
    finally:
        if bar is not None:
            bar.close()

    infos = [st.models[m] for m in model_names]
    dims3 = ("model", "condition", "layer")
    coords = {
        "model": model_names,
        "condition": condition_names,
        "layer": layer_names,
        "estimator": estimators,
        "component": np.arange(1, n_comp + 1),
        "role": ("model", [i.role for i in infos]),
        "architecture": ("model", [i.architecture for i in infos]),
        "n_params": ("model", np.array([i.n_params for i in infos], dtype=np.int64)),
        "model_family": ("model", [i.family for i in infos]),
        "seed": ("model", np.array([i.seed for i in infos], dtype=np.int64)),
        "condition_kind": ("condition", [str(st.conditions[c].get("kind", "")) for c in condition_names]),
        "condition_sigma": ("condition", np.array([float(st.conditions[c].get("sigma", np.nan))
                                                   for c in condition_names])),
        "condition_space": ("condition", [str(st.conditions[c].get("space", "")) for c in condition_names]),
        "condition_band": ("condition", [str(st.conditions[c].get("band", "")) for c in condition_names]),
        "estimator_center": ("estimator", np.array([settings[e][0] for e in estimators])),
        "estimator_eps": ("estimator", np.array([settings[e][1] for e in estimators])),
        "estimator_definition": ("estimator", [ESTIMATORS[e].definition for e in estimators]),
    }
    data_vars = {
        "effective_rank": ((*dims3, "estimator"), ranks, {
            "long_name": "effective rank", "units": "dimensions",
            "definition": "per estimator: see the estimator_definition coordinate; "
                          "docs/metrics.md section 1",
        }),
        "spectrum": ((*dims3, "component"), spectra, {
            "long_name": "covariance eigenvalue", "units": "feature units squared",
            "definition": ("eigenvalues of Zc^T Zc / (n - 1), descending, float64, values below "
                           "lam_max * m * eps set to 0; NaN beyond n_features" if spectrum_center
                           else "eigenvalues of Z^T Z / n (uncentred), descending; NaN beyond "
                                "n_features"),
            "center": int(spectrum_center),
        }),
        "powerlaw_alpha": (dims3, alpha, {
            "long_name": "power-law decay coefficient", "units": "1",
            "definition": "WLS of ln(lam_i / sum lam) on [-ln i, 1], weights 1/i, ranks 11..100; "
                          "alpha-ReQ, Agrawal et al. NeurIPS 2022; NaN if fewer than 100 "
                          "positive eigenvalues",
        }),
        "n_features": (dims3, n_features, {
            "long_name": "features after pooling", "units": "1",
            "definition": "width d of the analysed matrix; 0 where the layer is absent",
        }),
        "available": (dims3, available, {
            "long_name": "layer present in the store", "units": "1",
            "definition": "False where the model has no such layer under the condition",
        }),
        "constant_features": (dims3, constant, {
            "long_name": "zero-variance features", "units": "1",
            "definition": "features with variance <= (n eps |mean|)^2; if all are, every rank is 0",
        }),
        "zero_norm_samples": (dims3, zero_norm, {
            "long_name": "samples of zero norm", "units": "1",
            "definition": "rows with ||z|| = 0, left at zero by L2 normalisation",
        }),
        "pooling": (dims3, pooled_how.astype(str), {
            "long_name": "pooling applied", "units": "1",
            "definition": "none (embedding), mean, max, cls or flatten; see distillscope.pooling",
        }),
    }
    _add_seed_aggregates(data_vars, coords, conv, settings, infos, condition_names, layer_names,
                         per_entry_spectrum)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    attrs = {
        "title": "distillscope effective-dimensionality results",
        "distillscope_version": __version__,
        "convention": conv.name,
        "convention_source": conv.source,
        "convention_primary": conv.primary,
        "l2_normalize": int(l2),
        "spectrum_center": int(spectrum_center),
        "pooling_requested": pooling,
        "n_samples": st.n_samples,
        "store": os.fspath(st.path),
        "store_created": str(st.attrs.get("created", "")),
        "store_producer": f"{st.attrs.get('producer', '')} {st.attrs.get('producer_version', '')}",
        "created": created,
        "versions": _versions(),
    }
    if spatial_results:
        from .frequency_analysis import frequency_variables

        frequency_variables(data_vars, coords, attrs, spatial_results, shape, remove_map_mean)
    result = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if aligned is not None:
        result = xr.merge([result, aligned], join="exact", combine_attrs="no_conflicts")
    if robust is not None:
        result = xr.merge([result, robust], join="exact", combine_attrs="no_conflicts")
        clean = robust.attrs["reference_condition"]
        if clean in condition_names:
            primary = result["effective_rank"].sel(estimator=conv.primary, drop=True)
            change = primary - primary.sel(condition=clean, drop=True)
            result["effective_rank_change"] = change.assign_attrs(
                long_name="change of effective rank against clean", units="dimensions",
                definition=f"{conv.primary}(condition) - {conv.primary}({clean}), convention "
                           f"{conv.name}")
    return result


def _add_seed_aggregates(data_vars, coords, conv, settings, infos, condition_names,
                         layer_names, per_entry_spectrum) -> None:
    families: dict[str, list[str]] = {}
    for info in infos:
        families.setdefault(info.family, []).append(info.name)
    families = {f: m for f, m in families.items() if len(m) > 1}
    if not families:
        return
    names = list(families)
    shape = (len(names), len(condition_names), len(layer_names))
    averaged = np.full(shape, np.nan)
    spread = np.full(shape, np.nan)
    eps = settings["erank_variance"][1]
    for i, family in enumerate(names):
        for j, condition in enumerate(condition_names):
            for k, layer in enumerate(layer_names):
                spectra = [per_entry_spectrum.get((m, condition, layer)) for m in families[family]]
                if any(s is None for s in spectra) or len({s.size for s in spectra}) != 1:
                    continue
                per_seed = np.array([rank_from_spectrum(s, "erank_variance", eps=eps)
                                     for s in spectra])
                spread[i, j, k] = per_seed.std(ddof=1)
                averaged[i, j, k] = (seed_averaged_erank(spectra, eps)
                                     if conv.seed_aggregation == "spectrum_mean"
                                     else per_seed.mean())
    coords["family"] = names
    coords["family_size"] = ("family", np.array([len(families[f]) for f in names], dtype=np.int64))
    how = ("erank_variance of the seed-averaged singular values (arXiv 2603.06698)"
           if conv.seed_aggregation == "spectrum_mean" else "mean of per-seed erank_variance")
    data_vars["seed_averaged_rank"] = (("family", "condition", "layer"), averaged, {
        "long_name": "seed-aggregated effective rank", "units": "dimensions",
        "definition": how, "aggregation": conv.seed_aggregation,
    })
    data_vars["seed_rank_std"] = (("family", "condition", "layer"), spread, {
        "long_name": "spread of per-seed effective rank", "units": "dimensions",
        "definition": "sample standard deviation (ddof=1) of erank_variance over seeds",
    })


def _versions() -> str:
    import h5py
    import scipy

    import numba

    return (f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
            f"h5py {h5py.__version__}, xarray {xr.__version__}")
