r"""Robustness from features: drift under a condition, linear probes, kNN, frequency response.

Array functions (plain ndarrays in and out); ``distillscope.analyze`` streams a store through
them (``robustness_analysis``). Definitions: ``docs/metrics.md`` section 5.

* Relative feature drift of sample i under a condition:
  :math:`\delta_i = \lVert f(\tilde x_i) - f(x_i) \rVert / \lVert f(x_i) \rVert`, averaged over
  samples (samples with :math:`f(x_i) = 0` are left out and counted).
* Linear-probe accuracy, the recipe of arXiv 2603.06698: scikit-learn ``LogisticRegression``
  (lbfgs, C = 1, max_iter = 2000) fitted on L2-normalised clean training features, scored on
  the L2-normalised test features of each condition.
* kNN accuracy: majority vote of the k = 10 nearest clean training features by cosine similarity
  (scikit-learn ``KNeighborsClassifier``, brute force).
* Frequency response: the relative drift under noise restricted to one radial band, divided by
  the model's mean drift over the bands, so that models of different widths and sensitivities
  compare by the shape of their response (a low-pass model: low > mid > high).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._errors import InputError
from .alignment import _unit_rows

__all__ = ["DriftAccumulator", "frequency_response", "knn_accuracy", "probe_accuracy",
           "relative_drift", "PROBE", "KNN_K"]

#: the linear-probe recipe of arXiv 2603.06698
PROBE = {"solver": "lbfgs", "C": 1.0, "max_iter": 2000}
KNN_K = 10


class DriftAccumulator:
    """Mergeable sums of the per-sample relative drift, fed with (clean, noisy) blocks."""

    def __init__(self) -> None:
        self.total = 0.0
        self.squared = 0.0
        self.count = 0
        self.zero_norm = 0

    def update(self, clean: np.ndarray, noisy: np.ndarray) -> "DriftAccumulator":
        clean = np.asarray(clean, dtype=np.float64)
        noisy = np.asarray(noisy, dtype=np.float64)
        if clean.shape != noisy.shape or clean.ndim != 2:
            raise InputError(f"clean and noisy blocks must be (n, d) of one shape; got "
                             f"{clean.shape} and {noisy.shape}")
        norm = np.sqrt(np.einsum("ij,ij->i", clean, clean))
        diff = noisy - clean
        change = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        ok = norm > 0
        ratio = change[ok] / norm[ok]
        self.total += float(ratio.sum())
        self.squared += float((ratio**2).sum())
        self.count += int(ok.sum())
        self.zero_norm += int((~ok).sum())
        return self

    def merge(self, other: "DriftAccumulator") -> "DriftAccumulator":
        self.total += other.total
        self.squared += other.squared
        self.count += other.count
        self.zero_norm += other.zero_norm
        return self

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        if self.count < 2:
            return float("nan")
        var = (self.squared - self.total**2 / self.count) / (self.count - 1)
        return float(np.sqrt(max(var, 0.0)))


def relative_drift(clean, noisy) -> float:
    r"""Mean relative feature drift :math:`\frac1n \sum_i \lVert \tilde f_i - f_i\rVert / \lVert f_i\rVert`.

    Parameters
    ----------
    clean, noisy : array_like (n, d)
        Features of the same samples, clean and under a condition.

    Examples
    --------
    >>> relative_drift([[3.0, 4.0]], [[3.0, 5.0]])
    0.2
    """
    return DriftAccumulator().update(np.atleast_2d(clean), np.atleast_2d(noisy)).mean


def _unit(x) -> np.ndarray:
    return _unit_rows(np.asarray(x), np.float64)


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _score(predict, tests: Mapping[str, tuple] | Sequence[tuple], what: str) -> dict | list:
    """Fraction of correct ``predict(x)`` per test set ``(x, y)``, in the shape of ``tests``."""
    items = tests.items() if isinstance(tests, Mapping) else enumerate(tests)
    scores = {}
    for key, (x, y) in items:
        x, y = _check_xy(x, y, f"{what} test set {key!r}")
        scores[key] = float(np.mean(predict(x) == y))
    return scores if isinstance(tests, Mapping) else [scores[i] for i in range(len(scores))]


def _check_xy(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(f"{what}: features must be (n, d) with n labels; got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{what}: features hold NaN or infinity")
    return x, y


def probe_accuracy(train_x, train_y, tests: Mapping[str, tuple] | Sequence[tuple], *,
                   l2_normalize: bool = True, C: float = PROBE["C"],
                   max_iter: int = PROBE["max_iter"]) -> tuple[dict | list, dict]:
    """Accuracy of a logistic-regression probe fitted once on clean training features.

    Parameters
    ----------
    train_x, train_y : (n, d) features and n integer labels
    tests : mapping name -> (x, y), or a sequence of (x, y)
        Test features per condition, scored by the one fitted probe.
    l2_normalize : bool, default True
        Normalise every row to unit norm first (arXiv 2603.06698).

    Returns
    -------
    accuracies : dict or list
        Fraction correct per test set, in the shape of ``tests``.
    info : dict
        ``n_iter`` and ``converged`` of the lbfgs fit.

    References
    ----------
    arXiv 2603.06698 (scikit-learn LogisticRegression, lbfgs, C = 1, max_iter = 2000, on
    L2-normalised embeddings).
    """
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = _check_xy(train_x, train_y, "probe training set")
    if np.unique(train_y).size < 2:
        raise InputError("probe training set: needs at least two classes")
    prep = _unit if l2_normalize else _as_float64
    probe = LogisticRegression(solver=PROBE["solver"], C=C, max_iter=max_iter)
    probe.fit(prep(train_x), train_y)
    n_iter = int(np.max(probe.n_iter_))
    scores = _score(lambda x: probe.predict(prep(x)), tests, "probe")
    return scores, {"n_iter": n_iter, "converged": n_iter < max_iter}


def knn_accuracy(train_x, train_y, tests: Mapping[str, tuple] | Sequence[tuple], *,
                 k: int = KNN_K) -> dict | list:
    """Accuracy of a k-nearest-neighbour vote (cosine similarity) against clean training features.

    Ties of the vote go to the smallest label (scikit-learn's ``KNeighborsClassifier``).
    """
    from sklearn.neighbors import KNeighborsClassifier

    train_x, train_y = _check_xy(train_x, train_y, "kNN training set")
    if not 1 <= k <= train_x.shape[0]:
        raise InputError(f"k must be in 1..{train_x.shape[0]} (training samples); got {k}")
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    knn.fit(_as_float64(train_x), train_y)
    return _score(lambda x: knn.predict(_as_float64(x)), tests, "kNN")


def frequency_response(band_drift: Mapping[str, float] | Sequence[float]) -> np.ndarray:
    r"""Drift per band over the mean drift across bands: the shape of the response.

    .. math:: r_b = \delta_b \Big/ \tfrac{1}{B} \sum_{b'} \delta_{b'}

    1 everywhere for a model equally sensitive in every band; ``r_low > r_mid > r_high`` for a
    low-pass model. Dividing by the mean removes the model's overall sensitivity (and so its
    width and feature scale), leaving how it is spread over the bands.

    Examples
    --------
    >>> frequency_response([0.3, 0.2, 0.1]).round(2).tolist()
    [1.5, 1.0, 0.5]
    """
    values = np.asarray(list(band_drift.values()) if isinstance(band_drift, Mapping)
                        else band_drift, dtype=np.float64)
    mean = values.mean()
    return values / mean if mean > 0 else np.full_like(values, np.nan)
