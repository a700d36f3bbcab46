"""Huh et al.'s alignment of two models: mutual k-NN, best over layer pairs (arXiv 2405.07987).

"The Platonic Representation Hypothesis" (ICML 2024) scores how alike two models' neighbour
structures are. Its released code (``measure_alignment.py`` and ``metrics.py`` of
github.com/minyoungg/platonic-rep, at the paper's commit 4dd084e) computes, for one pair of
models given the features of every layer of each:

1. **clipping** (``prepare_features``, ``remove_outliers`` with q = 0.95, ``exact=False``): for
   each model, q-hat = the mean over samples of the per-sample 95th percentile (linear
   interpolation) of |x| over all of that sample's layers and dimensions; every value is clamped
   to [-q-hat, q-hat]. Layers of different widths come as a list and are clipped one by one;
2. **candidates**: each layer, and the concatenation of all layers (``flatten(1, 2)``);
3. **mutual k-NN** of every candidate pair (``compute_score``): rows L2-normalised, neighbours
   by inner product with the sample itself excluded, ``mean_i |S_x(i) & S_y(i)| / k``, k = 10;
4. the **maximum** over all candidate pairs (an optimistic choice of layers, not one fixed pair).

Here the layers are a model's analysed representations under one condition (pooled as the
analysis pools them: the CLS token of a ViT block, the mean of a feature map); the
concatenation candidate is formed for every model (the released code forms it for models whose
layers share a width, the ones it stacks into one tensor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import InputError
from .neighbours import KNN_K, Samples
from .registry import TEACHER_STUDENT_MODELS, metric

__all__ = ["clip_outliers", "mutual_knn_best"]

#: the quantile of |x| that values are clamped to
CLIP_QUANTILE = 0.95


def clip_outliers(layers: Sequence[np.ndarray], q: float = CLIP_QUANTILE) -> list[np.ndarray]:
    r"""Clamp one model's layers to :math:`[-\hat q, \hat q]` (Huh et al.'s ``remove_outliers``).

    Layers of one width are clipped together: :math:`\hat q` is the mean over samples of the
    per-sample ``q``-quantile of :math:`|x|` over all their layers and dimensions (the released
    code's default, ``exact=False``); layers of different widths one by one (its list form).

    Parameters
    ----------
    layers : sequence of ndarray (n, d_l)
    q : float in (0, 1]; 1 clips nothing

    Returns
    -------
    list of float64 ndarray, clipped
    """
    if not 0.0 < q <= 1.0:
        raise InputError(f"q must lie in (0, 1]; got {q!r}")
    layers = [np.asarray(x, dtype=np.float64) for x in layers]
    if q == 1.0:
        return layers
    widths = {x.shape[1] for x in layers}

    def clip(group: list[np.ndarray]) -> list[np.ndarray]:
        flat = np.abs(np.concatenate(group, axis=1))
        bound = float(np.quantile(flat, q, axis=1).mean())
        return [np.clip(x, -bound, bound) for x in group]

    return clip(layers) if len(widths) == 1 else [clip([x])[0] for x in layers]


def _neighbour_lists(layers: Sequence[np.ndarray], k: int, q: float) -> list[np.ndarray]:
    """The k-NN lists of one model's candidates: each clipped layer, then their concatenation
    (one layer: itself only)."""
    clipped = clip_outliers(layers, q)
    found = clipped + ([np.concatenate(clipped, axis=1)] if len(clipped) > 1 else [])
    return [Samples(x).neighbours(k) for x in found]


def _shared_lists(side: Sequence[Samples], k: int, q: float) -> list[np.ndarray]:
    """``_neighbour_lists`` of one model's held layers, computed once per pass (a teacher's
    serve every student), cached on its first layer."""
    return side[0].cached(("mutual_knn_best", tuple(id(s) for s in side), k, q),
                          lambda: _neighbour_lists([s.values for s in side], k, q))


def _best(xs: list[np.ndarray], ys: list[np.ndarray], n: int, k: int) -> float:
    from .._kernels import knn_overlap

    best = 0.0
    for a in xs:
        for b in ys:
            best = max(best, knn_overlap(np.ascontiguousarray(a), np.ascontiguousarray(b))
                       / (n * k))
    return float(best)


def _check(x_layers: Sequence, y_layers: Sequence, k: int) -> int:
    """The common row count, after checking the layers and k."""
    if not x_layers or not y_layers:
        raise InputError("mutual_knn_best needs at least one layer of each model")
    n = {x.shape[0] for x in list(x_layers) + list(y_layers)}
    if len(n) != 1:
        raise InputError(f"every layer must hold the same samples; got row counts {sorted(n)}")
    n = n.pop()
    if not 1 <= int(k) < n:
        raise InputError(f"k must lie in 1..n-1 = {n - 1}; got {k}")
    return n


def _from_samples(tx: Sequence[Samples], sy: Sequence[Samples], k: int, q: float) -> float:
    n = _check([t.held for t in tx], [s.held for s in sy], k)
    return _best(_shared_lists(tx, int(k), q), _shared_lists(sy, int(k), q), n, int(k))


@metric("mutual_knn_best", long_name="mutual k-NN alignment, best layer pair", units="1",
        takes=TEACHER_STUDENT_MODELS, statistic="samples", anchor="mutual-knn-best-layer-pair",
        source="Huh et al., arXiv 2405.07987 (measure_alignment.py)", default=False,
        params={"k": KNN_K, "q": CLIP_QUANTILE},
        compute=_from_samples,
        definition="max over teacher x student layer pairs, the concatenation of all layers "
                   "included, of mutual kNN (k = 10, cosine, self excluded) after clamping each "
                   "model to the mean per-sample 95th percentile of |x|")
def mutual_knn_best(x_layers: Sequence[np.ndarray], y_layers: Sequence[np.ndarray], *,
                    k: int = KNN_K, q: float = CLIP_QUANTILE) -> float:
    r"""Huh et al.'s alignment of two models (module docstring):
    :math:`\max_{i, j} m_{NN}(\mathrm{clip}(X)_i, \mathrm{clip}(Y)_j)` over each model's layers
    and their concatenation, :math:`m_{NN} = \frac1n \sum_i |S_x(i) \cap S_y(i)| / k`.

    Parameters
    ----------
    x_layers, y_layers : sequences of ndarray (n, d)
        Every layer of each model, rows the same samples in the same order.
    k : int, default 10
    q : float, default 0.95

    Returns
    -------
    float in [0, 1]
    """
    n = _check(x_layers, y_layers, k)
    return _best(_neighbour_lists(x_layers, int(k), q), _neighbour_lists(y_layers, int(k), q),
                 n, int(k))
