"""Alignment of every student with the teacher, streamed from a store, as xarray.

For each condition and student, the teacher's and the student's layers are read in lockstep
blocks, pooled (as for dimensionality), optionally L2-normalised, and fed to one
``PairMoments`` per (teacher layer, student layer) and per cross-validation fold (contiguous
folds of the sample order, sharing one shift). Moment-based metrics come from the merged folds;
mutual kNN, InfoNCE and uniformity need the pooled samples, which are kept in memory in their
stored dtype (``n x (d_teacher + d_student)`` values per student; stated in the attributes).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .metrics.alignment import (
    DegenerateWarning,
    _unit_rows,
    PairMoments,
    cca,
    infonce,
    linear_cka,
    mutual_knn,
    principal_angles,
    procrustes_angular,
    pwcca,
    ridge_retention,
    svcca,
    uniformity,
    variance_captured,
)
from ._errors import InputError
from .conventions import Convention
from .metrics.moments import NonFiniteError
from .engine.pooling import pool
from ._errors import StoreError
from .store import LayerInfo, Store, nonfinite_message

__all__ = ["alignment_dataset", "SCALARS"]

N_FOLDS = 5
N_ANGLES = 10
KNN_K = 10
RIDGE = 1e-3

#: name -> (long_name, units, definition)
SCALARS = {
    "linear_cka": ("linear CKA", "1", "||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); Kornblith et al., arXiv 1905.00414"),
    "linear_cka_debiased": ("debiased linear CKA", "1", "CKA with unbiased HSIC (Song et al. 2012, eq. 5); can be negative"),
    "cca_mean": ("mean canonical correlation", "1", "mean of s_i(Qx^T Qy) of centred data; NaN when d1 + d2 >= n"),
    "cca_r2": ("mean squared canonical correlation", "1", "mean of rho_i^2; NaN when d1 + d2 >= n"),
    "svcca": ("SVCCA", "1", "CCA mean after keeping 99% of each side's variance; Raghu et al., arXiv 1706.05806"),
    "pwcca": ("PWCCA", "1", "sum a_i rho_i / sum a_i, a_i = sum_j |<h_i, x_j>| on the narrower layer; Morcos et al., arXiv 1806.05759"),
    "procrustes_angular": ("angular Procrustes distance", "rad", "arccos(||Xc^T Yc||_* / (||Xc||_F ||Yc||_F)) (alpha = 1); Williams et al., arXiv 2110.14739"),
    "linear_predictivity": ("cross-validated linear predictivity", "1", f"{N_FOLDS}-fold ridge R^2 of the teacher from the student, pooled over teacher dimensions (penalty {RIDGE} tr(Syy)/d2)"),
    "mutual_knn": ("mutual k-NN alignment", "1", f"mean |kNN_X(i) & kNN_Y(i)| / k, cosine, self excluded, k = {KNN_K}; Huh et al., arXiv 2405.07987"),
    "infonce_loss": ("InfoNCE loss", "nat", "-mean ln softmax_j(cos(s_i, t_j) / tau)_ii over consecutive batches; student and teacher in one space only"),
    "infonce_mi_bound": ("InfoNCE mutual-information bound", "nat", "ln B - L (<= ln B); van den Oord et al., arXiv 1807.03748"),
}


def _pooled(block: np.ndarray, info: LayerInfo, pooling: str) -> np.ndarray:
    """Pooled block, in the stored dtype (float64 for means); raises on NaN or infinity."""
    z = np.asarray(pool(block, info, pooling))
    if not np.isfinite(z).all():
        raise NonFiniteError(int((~np.isfinite(z)).any(axis=1).sum()), 0, 0)
    return z


def _unit(z: np.ndarray) -> np.ndarray:
    return _unit_rows(z, np.float64)


def _stream(st: Store, infos: list[LayerInfo], rows: int | None):
    """Blocks of several layers of one model in lockstep: yields (start, [block per layer])."""
    if rows is None:
        rows = min(_default_rows(st, info) for info in infos)
    iterators = [st.iter_chunks(info, rows, widen=True) for info in infos]
    for parts in zip(*iterators):
        yield parts[0][0], [block for _, block in parts]


def _default_rows(st: Store, info: LayerInfo) -> int:
    return max(64, min(4096, (64 << 20) // (8 * max(1, int(np.prod(info.shape[1:]))))))


def alignment_dataset(st: Store, model_names: list[str], condition_names: list[str],
                      layer_names: list[str], conv: Convention, l2: bool, pooling: str,
                      rows: int | None, n_comp: int, bar=None) -> xr.Dataset | None:
    """Alignment variables for every student against the teacher (None without both)."""
    teacher = next((m for m in model_names if st.models[m].role == "teacher"), None)
    students = [m for m in model_names if st.models[m].role == "student"]
    if teacher is None or not students:
        return None
    n = st.n_samples

    def layers_of(model, condition):
        return [info for name, info in st.layers(model, condition).items() if name in layer_names]

    t_layers = list(dict.fromkeys(i.layer for c in condition_names for i in layers_of(teacher, c)))
    s_layers = list(dict.fromkeys(i.layer for s in students for c in condition_names
                                  for i in layers_of(s, c)))
    if not t_layers or not s_layers:
        return None
    shape = (len(students), len(condition_names), len(t_layers), len(s_layers))
    scalars = {name: np.full(shape, np.nan) for name in SCALARS}
    inflated = np.zeros(shape, dtype=bool)
    angles = np.full((*shape, N_ANGLES), np.nan)
    captured = np.full((*shape, n_comp), np.nan)
    retention = np.full((*shape, n_comp), np.nan)
    uniform = np.full((len(model_names), len(condition_names), len(layer_names)), np.nan)
    bounds = [f * n // N_FOLDS for f in range(N_FOLDS + 1)]

    for j, condition in enumerate(condition_names):
        t_infos = layers_of(teacher, condition)
        if not t_infos:
            continue
        for i, student in enumerate(students):
            s_infos = layers_of(student, condition)
            if not s_infos:
                continue
            infos = t_infos + s_infos
            folds: dict[tuple[int, int], list[PairMoments]] = {}
            kept: list[np.ndarray | None] = [None] * len(infos)
            try:
                for start, blocks in _stream(st, infos, rows):
                    pooled = [_pooled(b, info, pooling) for b, info in zip(blocks, infos)]
                    stop = start + pooled[0].shape[0]
                    for q, block in enumerate(pooled):  # sample-level metrics normalise rows
                        if kept[q] is None:             # themselves: keep the pooled values
                            kept[q] = np.empty((n, block.shape[1]), np.promote_types(block.dtype, np.float32))
                        kept[q][start:stop] = block
                    z = [_unit(b) if l2 else b.astype(np.float64) for b in pooled]
                    for a in range(len(t_infos)):
                        for b in range(len(s_infos)):
                            zx, zy = z[a], z[len(t_infos) + b]
                            if (a, b) not in folds:
                                shift = (zx.mean(axis=0), zy.mean(axis=0))
                                folds[a, b] = [PairMoments(zx.shape[1], zy.shape[1], shift=shift)
                                               for _ in range(N_FOLDS)]
                            for f in range(N_FOLDS):
                                lo, hi = max(start, bounds[f]), min(stop, bounds[f + 1])
                                if lo < hi:
                                    folds[a, b][f].update(zx[lo - start:hi - start],
                                                          zy[lo - start:hi - start])
                    if bar is not None:
                        bar.update(stop - start)
            except NonFiniteError:
                for info in infos:
                    n_nan, n_inf, sample, feature = st.locate_nonfinite(info)
                    if n_nan or n_inf:
                        raise StoreError(st.path, info.path, nonfinite_message(
                            n_nan, n_inf, sample, int(st.sample_ids[sample]), feature)) from None
                raise
            for a, t_info in enumerate(t_infos):
                for b, s_info in enumerate(s_infos):
                    idx = (i, j, t_layers.index(t_info.layer), s_layers.index(s_info.layer))
                    parts = folds[a, b]
                    full = PairMoments(parts[0].d1, parts[0].d2, shift=parts[0]._shift)
                    for part in parts:
                        full.merge(part)
                    x, y = kept[a], kept[len(t_infos) + b]
                    values, flags = _pair_metrics(full, parts, x, y, conv)
                    for name, value in values.items():
                        scalars[name][idx] = value
                    inflated[idx] = flags["inflated"]
                    k = min(N_ANGLES, full.d1, full.d2, n - 1)
                    try:
                        angles[idx + (slice(0, k),)] = principal_angles(full, k=k)
                    except InputError:
                        pass  # fewer than k non-zero directions: NaN
                    if full.d1 == full.d2:
                        curve = variance_captured(full)
                        captured[idx + (slice(0, curve.size),)] = curve
                    spectrum = flags["retention"]
                    retention[idx + (slice(0, spectrum.size),)] = spectrum
            for arr, info in zip(kept, infos):
                m_idx = model_names.index(info.model)
                l_idx = layer_names.index(info.layer)
                if np.isnan(uniform[m_idx, j, l_idx]):
                    uniform[m_idx, j, l_idx] = uniformity(
                        arr, batch_size=conv.uniformity_batch,
                        include_diagonal=conv.uniformity_diagonal)

    dims = ("student", "condition", "teacher_layer", "student_layer")
    data_vars = {name: (dims, scalars[name], {"long_name": ln, "units": u, "definition": d})
                 for name, (ln, u, d) in SCALARS.items()}
    data_vars["small_sample"] = (dims, inflated, {
        "long_name": "pair with max(d1, d2) > n / 10", "units": "1",
        "definition": "True where the CCA family and biased linear CKA are known to be "
                      "inflated by the sample size; prefer linear_cka_debiased there"})
    data_vars["principal_angles"] = ((*dims, "angle"), angles, {
        "long_name": "principal angle between top-k principal subspaces", "units": "rad",
        "definition": f"sample space, k = {N_ANGLES} (fewer when a side is narrower), ascending; "
                      "Bjorck & Golub 1973"})
    data_vars["variance_captured"] = ((*dims, "component"), captured, {
        "long_name": "student variance captured by the teacher's top-k directions", "units": "1",
        "definition": "A(k) = sum_{j<=k} ||Yc v_j||^2 / ||Yc||_F^2, v_j teacher principal "
                      "directions; same-space pairs only (arXiv 2603.06698 Fig. 1)"})
    data_vars["retention"] = ((*dims, "component"), retention, {
        "long_name": "teacher variance retained per teacher principal direction", "units": "1",
        "definition": f"1 - v_j^T R v_j / v_j^T S_tt v_j, R the held-out residual scatter of "
                      f"{N_FOLDS}-fold ridge regression of the teacher on the student; docs/metrics.md"})
    data_vars["uniformity"] = (("model", "condition", "layer"), uniform, {
        "long_name": "uniformity", "units": "1",
        "definition": ("ln mean exp(-2 ||z_i - z_j||^2) of L2-normalised embeddings, "
                       + (f"per batch of {conv.uniformity_batch}, mean over batches"
                          if conv.uniformity_batch else "over all pairs")
                       + (", i = j included" if conv.uniformity_diagonal else ", i != j")
                       + "; Wang & Isola, arXiv 2005.10242")})
    coords = {"student": students, "teacher_layer": t_layers, "student_layer": s_layers,
              "angle": np.arange(1, N_ANGLES + 1), "component": np.arange(1, n_comp + 1),
              "condition": condition_names, "model": model_names, "layer": layer_names}
    attrs = {"infonce_tau": conv.infonce_tau, "infonce_batch": conv.infonce_batch,
             "infonce_reduction": conv.infonce_reduction, "mutual_knn_k": KNN_K,
             "mutual_knn_chance": KNN_K / (n - 1), "cv_folds": N_FOLDS, "ridge": RIDGE,
             "alignment_memory": "pooled samples of one student and the teacher held in memory "
                                 "(stored dtype, float64 for mean pooling)"}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _pair_metrics(full: PairMoments, folds: list[PairMoments], x: np.ndarray, y: np.ndarray,
                  conv: Convention) -> tuple[dict, dict]:
    n = full.count
    inflated = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateWarning)
        values = {"linear_cka": linear_cka(full)}
        values["linear_cka_debiased"] = linear_cka(full, debiased=True) if n >= 4 else np.nan
        for name, fn in (("cca", cca), ("svcca", svcca), ("pwcca", pwcca)):
            try:
                result = fn(full)
            except InputError:
                continue
            if name == "cca":
                if result.size:
                    values["cca_mean"] = float(result.mean())
                    values["cca_r2"] = float((result**2).mean())
            else:
                values[name] = result
        inflated = any(issubclass(w.category, DegenerateWarning) for w in caught)
    values["procrustes_angular"] = procrustes_angular(full)
    if n >= 2 * N_FOLDS:
        predictivity, spectrum = ridge_retention(folds, ridge=RIDGE)
    else:
        predictivity, spectrum = np.nan, np.full(full.d1, np.nan)
    values["linear_predictivity"] = predictivity
    values["mutual_knn"] = mutual_knn(x, y, k=min(KNN_K, n - 1))[0]
    if full.d1 == full.d2:
        values["infonce_loss"], values["infonce_mi_bound"] = infonce(
            y, x, tau=conv.infonce_tau, batch_size=conv.infonce_batch,
            reduction=conv.infonce_reduction)
    return values, {"inflated": inflated, "retention": spectrum}
