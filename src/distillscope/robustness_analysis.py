"""Robustness of every model and layer under every condition, against clean, as xarray.

For each model, layer and condition the clean and the corrupted activations are streamed in
lockstep blocks and pooled: the relative drift and the clean-versus-corrupted linear CKA come from
mergeable sums (memory independent of n). Linear probes and kNN need the samples themselves:
for layers of kind ``embedding`` the pooled clean *training* features and each condition's
*test* features are held in memory (``n x d`` values, stated in the attributes). Band-limited
noise conditions give the frequency response. Definitions: ``docs/metrics.md`` section 5.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .metrics.alignment import DegenerateWarning, PairMoments, linear_cka
from .alignment_analysis import _pooled, _stream, _unit
from .conventions import Convention
from .metrics.frequency import BANDS
from .metrics.robustness import KNN_K, PROBE, DriftAccumulator, frequency_response, knn_accuracy, probe_accuracy
from .store import LayerInfo, Store

__all__ = ["robustness_dataset", "reference_condition"]

VARIABLES = {
    "feature_drift": ("relative feature drift", "1",
                      "mean_i ||f(x~_i) - f(x_i)|| / ||f(x_i)|| of pooled features against the clean condition"),
    "feature_drift_std": ("spread of the relative feature drift", "1",
                          "sample standard deviation over samples of the per-sample relative drift"),
    "cka_clean_noisy": ("linear CKA, clean against the condition", "1",
                        "linear CKA between a layer's clean and corrupted features (Kornblith et al. 2019)"),
    "cka_clean_noisy_debiased": ("debiased linear CKA, clean against the condition", "1",
                                 "linear CKA with unbiased HSIC (Song et al. 2012)"),
    "probe_accuracy": ("linear-probe accuracy", "1",
                       "LogisticRegression(lbfgs, C=1, max_iter=2000) fitted on L2-normalised clean "
                       "train features, scored on the condition's L2-normalised test features "
                       "(arXiv 2603.06698)"),
    "knn_accuracy": ("kNN accuracy", "1",
                     f"majority vote of the {KNN_K} most cosine-similar clean train features, "
                     "scored on the condition's test features"),
}
AGGREGATED = ("feature_drift", "cka_clean_noisy", "probe_accuracy", "knn_accuracy")


def reference_condition(st: Store) -> str | None:
    """The clean condition corrupted ones are compared with: the first of kind ``clean``."""
    return next((c for c, attrs in st.conditions.items() if attrs.get("kind") == "clean"), None)


class _Rows:
    """Collects the pooled features (float32) of the samples where ``mask`` is True."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.parts: list[np.ndarray] = []

    def add(self, start: int, pooled: np.ndarray) -> None:
        keep = self.mask[start:start + pooled.shape[0]]
        if keep.any():
            self.parts.append(pooled[keep].astype(np.float32))

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts)


def _pooled_rows(st: Store, info: LayerInfo, pooling: str, rows, masks: list[np.ndarray]
                 ) -> list[np.ndarray]:
    """The pooled features of the samples of each mask, in store order, in one pass."""
    collect = [_Rows(m) for m in masks]
    for start, (block,) in _stream(st, [info], rows):
        pooled = _pooled(block, info, pooling)
        for c in collect:
            c.add(start, pooled)
    return [c.array() for c in collect]


def _drift_and_cka(st: Store, clean: LayerInfo, other: LayerInfo, pooling: str, l2: bool, rows,
                   bar, keep: _Rows | None = None) -> tuple[float, float, float, float]:
    """Drift and CKA of ``other`` against ``clean``; ``keep`` also collects rows of ``other``."""
    drift = DriftAccumulator()
    pair = None
    for start, (a, b) in _stream(st, [clean, other], rows):
        pa, pb = _pooled(a, clean, pooling), _pooled(b, other, pooling)
        if keep is not None:
            keep.add(start, pb)
        drift.update(pa, pb)
        za, zb = (_unit(pa), _unit(pb)) if l2 else (pa.astype(np.float64), pb.astype(np.float64))
        if pair is None:
            pair = PairMoments(za.shape[1], zb.shape[1], shift=(za.mean(axis=0), zb.mean(axis=0)))
        pair.update(za, zb)
        if bar is not None:
            bar.update(pa.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateWarning)
        cka = linear_cka(pair)
        debiased = linear_cka(pair, debiased=True) if pair.count >= 4 else float("nan")
    return drift.mean, drift.std, cka, debiased


def robustness_dataset(st: Store, model_names: list[str], condition_names: list[str],
                       layer_names: list[str], conv: Convention, l2: bool, pooling: str,
                       rows: int | None, bar=None) -> xr.Dataset | None:
    """Robustness variables (None when the store has no clean condition)."""
    clean = reference_condition(st)
    if clean is None:
        return None
    shape = (len(model_names), len(condition_names), len(layer_names))
    values = {name: np.full(shape, np.nan) for name in VARIABLES}
    splits = st.splits
    can_probe = (st.labels is not None and splits is not None
                 and {"train", "test"} <= set(np.unique(splits).tolist()))
    train = splits == "train" if can_probe else None
    test = splits == "test" if can_probe else None
    probe_info = {"n_iter": [], "converged": []}
    for i, model in enumerate(model_names):
        reference = st.layers(model, clean)
        stored = [st.layers(model, c) for c in condition_names]
        for k, layer in enumerate(layer_names):
            if layer not in reference:
                continue
            ref = reference[layer]
            present = {j: layers[layer] for j, layers in enumerate(stored) if layer in layers}
            probe = can_probe and ref.kind == "embedding" and bool(present)
            test_rows: dict[int, np.ndarray] = {}
            for j, info in present.items():
                if condition_names[j] == clean:
                    values["feature_drift"][i, j, k] = 0.0
                    values["feature_drift_std"][i, j, k] = 0.0
                    values["cka_clean_noisy"][i, j, k] = 1.0
                    values["cka_clean_noisy_debiased"][i, j, k] = 1.0
                    continue
                keep = _Rows(test) if probe else None  # test rows, read in the same pass
                (values["feature_drift"][i, j, k], values["feature_drift_std"][i, j, k],
                 values["cka_clean_noisy"][i, j, k],
                 values["cka_clean_noisy_debiased"][i, j, k]) = _drift_and_cka(
                    st, ref, info, pooling, l2, rows, bar, keep)
                if keep is not None:
                    test_rows[j] = keep.array()
            if probe:
                x_train, x_clean_test = _pooled_rows(st, ref, pooling, rows, [train, test])
                y_train, y_test = st.labels[train], st.labels[test]
                tests = {j: (test_rows.get(j, x_clean_test), y_test) for j in present}
                accuracy, info = probe_accuracy(x_train, y_train, tests)
                probe_info["n_iter"].append(info["n_iter"])
                probe_info["converged"].append(info["converged"])
                knn = knn_accuracy(x_train, y_train, tests, k=min(KNN_K, len(y_train)))
                for j in present:
                    values["probe_accuracy"][i, j, k] = accuracy[j]
                    values["knn_accuracy"][i, j, k] = knn[j]

    dims = ("model", "condition", "layer")
    data_vars = {name: (dims, values[name], {"long_name": ln, "units": u, "definition": d})
                 for name, (ln, u, d) in VARIABLES.items()}
    coords = {"model": model_names, "condition": condition_names, "layer": layer_names}
    _seed_aggregates(st, data_vars, coords, values, model_names, condition_names, layer_names)
    _frequency_response(st, data_vars, coords, values, condition_names)
    attrs = {
        "reference_condition": clean,
        "probe": (f"LogisticRegression(solver={PROBE['solver']}, C={PROBE['C']}, "
                  f"max_iter={PROBE['max_iter']}) on L2-normalised embeddings"
                  if can_probe else "not fitted: the store has no labels with train and test splits"),
        "probe_converged": int(all(probe_info["converged"])) if probe_info["converged"] else -1,
        "probe_max_iterations": max(probe_info["n_iter"], default=-1),
        "knn_k": KNN_K,
        "robustness_memory": "pooled clean train and per-condition test features of one embedding "
                             "layer held in memory (float32) for probes and kNN; drift and CKA "
                             "streamed",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _seed_aggregates(st: Store, data_vars, coords, values, model_names, condition_names,
                     layer_names) -> None:
    families: dict[str, list[int]] = {}
    for i, m in enumerate(model_names):
        families.setdefault(st.models[m].family, []).append(i)
    families = {f: idx for f, idx in families.items() if len(idx) > 1}
    if not families:
        return
    coords["family"] = list(families)
    dims = ("family", "condition", "layer")
    for name in AGGREGATED:
        stack = np.stack([values[name][idx] for idx in families.values()])  # (F, seeds, C, L)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            mean = np.nanmean(stack, axis=1) if stack.size else stack
            std = np.nanstd(stack, axis=1, ddof=1)
        long_name = VARIABLES[name][0]
        data_vars[f"{name}_seed_mean"] = (dims, mean, {
            "long_name": f"{long_name}, mean over seeds", "units": VARIABLES[name][1],
            "definition": f"mean of {name} over the models of one family (seeds)"})
        data_vars[f"{name}_seed_std"] = (dims, std, {
            "long_name": f"{long_name}, spread over seeds", "units": VARIABLES[name][1],
            "definition": f"sample standard deviation (ddof=1) of {name} over seeds"})


def _frequency_response(st: Store, data_vars, coords, values, condition_names) -> None:
    """Drift under band-limited noise per band, and its shape (``robustness.frequency_response``)."""
    by_band: dict[str, int] = {}
    for j, c in enumerate(condition_names):
        attrs = st.conditions[c]
        if attrs.get("kind") == "band_noise" and attrs.get("band") in BANDS:
            by_band.setdefault(str(attrs["band"]), j)  # several sigmas: the first listed
    if set(by_band) != set(BANDS):
        return
    bands = list(BANDS)
    drift = np.stack([values["feature_drift"][:, by_band[b], :] for b in bands], axis=1)
    response = np.full_like(drift, np.nan)
    for i in range(drift.shape[0]):
        for k in range(drift.shape[2]):
            if np.isfinite(drift[i, :, k]).all():
                response[i, :, k] = frequency_response(drift[i, :, k])
    coords["band"] = bands
    coords["band_condition"] = ("band", [condition_names[by_band[b]] for b in bands])
    dims = ("model", "band", "layer")
    data_vars["band_drift"] = (dims, drift, {
        "long_name": "relative feature drift under band-limited noise", "units": "1",
        "definition": "feature_drift under the band_noise condition of each band (equal per-pixel "
                      "sigma in every band)"})
    data_vars["frequency_response"] = (dims, response, {
        "long_name": "frequency response", "units": "1",
        "definition": "band_drift / mean over bands of band_drift: 1 = flat, low > high = "
                      "low-pass; docs/metrics.md section 5"})
