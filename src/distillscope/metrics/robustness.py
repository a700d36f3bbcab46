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
  (the blocked similarity pass of ``distillscope.metrics.neighbours``; ties to the lower index,
  the vote's ties to the smallest label, as scikit-learn's ``KNeighborsClassifier``).
* Frequency response: the relative drift under noise restricted to one radial band, divided by
  the model's mean drift over the bands, so that models of different widths and sensitivities
  compare by the shape of their response (a low-pass model: low > mid > high).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._errors import InputError
from .alignment import linear_cka
from .neighbours import KNN_K, Samples, cross_neighbours, knn_vote, unit_rows
from .registry import CLEAN_CONDITION, Metric, metric, register

__all__ = ["DriftAccumulator", "Probes", "frequency_response", "knn_accuracy", "probe_accuracy",
           "relative_drift", "PROBE", "KNN_K"]

#: the linear-probe recipe of arXiv 2603.06698
PROBE = {"solver": "lbfgs", "C": 1.0, "max_iter": 2000}


class DriftAccumulator:
    """Mergeable sums of the per-sample relative drift, fed with (clean, noisy) blocks.

    Attributes ``total``, ``squared``, ``count``, ``zero_norm`` are plain numbers (picklable).
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.squared = 0.0
        self.count = 0
        self.zero_norm = 0

    def update(self, clean: np.ndarray, noisy: np.ndarray) -> "DriftAccumulator":
        from .._kernels import drift_sums, jit_enabled
        from .._scratch import widen_float16

        clean, noisy = (widen_float16(np.asarray(a)) for a in (clean, noisy))
        if clean.shape != noisy.shape or clean.ndim != 2:
            raise InputError(f"clean and noisy blocks must be (n, d) of one shape; got "
                             f"{clean.shape} and {noisy.shape}")
        if jit_enabled():  # one fused pass in float64
            total, squared, count, zero = drift_sums(np.ascontiguousarray(clean),
                                                     np.ascontiguousarray(noisy))
        else:  # the same sums in numpy
            c, d = clean.astype(np.float64), noisy.astype(np.float64) - clean
            norm, change = (np.sqrt(np.einsum("ij,ij->i", a, a)) for a in (c, d))
            ratio = change[norm > 0] / norm[norm > 0]
            total, squared = float(ratio.sum()), float((ratio**2).sum())
            count, zero = int(ratio.size), int(np.count_nonzero(norm == 0))
        self.total += total
        self.squared += squared
        self.count += count
        self.zero_norm += zero
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
    return unit_rows(np.asarray(x), np.float64)


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _score(predict, tests: Mapping[str, tuple] | Sequence[tuple], what: str,
           correct: dict | None = None) -> dict | list:
    """Fraction of correct ``predict(x)`` per test set ``(x, y)``, in the shape of ``tests``
    (and, given ``correct``, each test sample's correctness in it)."""
    items = tests.items() if isinstance(tests, Mapping) else enumerate(tests)
    scores = {}
    for key, (x, y) in items:
        x, y = _check_xy(x, y, f"{what} test set {key!r}")
        hits = predict(x) == y
        scores[key] = float(np.mean(hits))
        if correct is not None:
            correct[key] = hits
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
                   max_iter: int = PROBE["max_iter"],
                   correct: dict | None = None) -> tuple[dict | list, dict]:
    """Accuracy of a logistic-regression probe fitted once on clean training features.

    Parameters
    ----------
    train_x, train_y : (n, d) features and n integer labels
    tests : mapping name -> (x, y), or a sequence of (x, y)
        Test features per condition, scored by the one fitted probe.
    l2_normalize : bool, default True
        Normalise every row to unit norm first (arXiv 2603.06698).
    correct : dict, optional
        Filled with each test set's per-sample correctness (boolean arrays), by key.

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
    scores = _score(lambda x: probe.predict(prep(x)), tests, "probe", correct)
    return scores, {"n_iter": n_iter, "converged": n_iter < max_iter}


def knn_accuracy(train_x, train_y, tests: Mapping[str, tuple] | Sequence[tuple], *,
                 k: int = KNN_K) -> dict | list:
    """Accuracy of a k-nearest-neighbour vote (cosine similarity) against clean training features.

    Neighbours by ``neighbours.cross_neighbours`` (ties to the lower index), ties of the vote to
    the smallest label (scikit-learn's ``KNeighborsClassifier``). Similarities are float64 for
    float64 features, float32 otherwise.
    """
    train_x, train_y = _check_xy(train_x, train_y, "kNN training set")
    if not 1 <= k <= train_x.shape[0]:
        raise InputError(f"k must be in 1..{train_x.shape[0]} (training samples); got {k}")
    dtype = np.float64 if train_x.dtype == np.float64 else np.float32
    reference = unit_rows(train_x, dtype)

    def predict(x):
        return knn_vote(cross_neighbours(unit_rows(x, dtype), reference, k), train_y)

    return _score(predict, tests, "kNN")


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


class Probes:
    """The samples a linear probe and a kNN vote need, for one model and layer.

    Parameters
    ----------
    clean : Samples
        The clean condition's pooled rows (all samples).
    conditions : mapping of condition name -> Samples
        Every condition's pooled rows, the clean one included.
    labels : ndarray (n,)
    split : (train_mask, test_mask)
        Boolean masks over the samples.

    The probe is fitted once, on the clean training rows, and scored on every condition's test
    rows (arXiv 2603.06698); so is the kNN vote (the clean condition's neighbours come from its
    shared similarity pass, the others' from one query-against-training pass each).
    """

    def __init__(self, clean: Samples, conditions: Mapping[str, Samples], labels: np.ndarray,
                 split: tuple[np.ndarray, np.ndarray]):
        self.clean = clean
        self.conditions = dict(conditions)
        self.labels = np.asarray(labels)
        self.train, self.test = split
        self.info: dict = {}
        self._cache: dict = {}
        #: per condition, each test sample's correctness under the last accuracy asked for
        #: (``accuracy`` or ``knn``): what the bootstrap resamples (``engine.bootstrap``)
        self.last_correct: dict[str, np.ndarray] = {}

    def accuracy(self, C: float = PROBE["C"], max_iter: int = PROBE["max_iter"]) -> dict:
        """Probe accuracy per condition (cached); ``info`` gets ``n_iter`` and ``converged``."""
        key = ("probe", C, max_iter)
        if key not in self._cache:
            y_train, y_test = self.labels[self.train], self.labels[self.test]
            tests = {c: (s.values[self.test], y_test) for c, s in self.conditions.items()}
            correct: dict = {}
            scores, self.info = probe_accuracy(
                self.clean.values[self.train], y_train, tests, C=C, max_iter=max_iter,
                correct=correct)
            self._cache[key] = scores, correct
        self.last_correct = self._cache[key][1]
        return self._cache[key][0]

    def knn(self, k: int = KNN_K) -> dict:
        """kNN-vote accuracy per condition (cached)."""
        key = ("knn", k)
        if key not in self._cache:
            train_labels = self.labels[self.train]
            y_test = self.labels[self.test]
            k = min(k, int(np.count_nonzero(self.train)))
            with self.clean.unit() as clean:
                reference = clean[self.train]
            out, correct = {}, {}
            for name, samples in self.conditions.items():
                if samples is self.clean:
                    neighbours = self.clean.train_neighbours(k, (self.train, self.test))
                    predicted = knn_vote(neighbours, self.labels)
                else:
                    with samples.unit() as unit:
                        query = unit[self.test]
                    neighbours = cross_neighbours(query, reference, k)
                    predicted = knn_vote(neighbours, train_labels)
                correct[name] = predicted == y_test
                out[name] = float(np.mean(correct[name]))
            self._cache[key] = out, correct
        self.last_correct = self._cache[key][1]
        return self._cache[key][0]


# ------------------------------------------------------------------------------- declarations
_DRIFT = "mean_i ||f(x~_i) - f(x_i)|| / ||f(x_i)|| of pooled features against the clean condition"
register(Metric(
    name="feature_drift", long_name="relative feature drift", units="1", takes=CLEAN_CONDITION,
    statistic="drift", compute=lambda drift: drift.mean, function=relative_drift,
    anchor="robustness-from-features", family="robustness", at_reference=0.0,
    tables={"robustness": "drift"}, definition=_DRIFT, interval=True))
register(Metric(
    name="feature_drift_std", long_name="spread of the relative feature drift", units="1",
    takes=CLEAN_CONDITION, statistic="drift", compute=lambda drift: drift.std,
    anchor="robustness-from-features", family="robustness", at_reference=0.0,
    definition="sample standard deviation over samples of the per-sample relative drift",
    interval=True))
register(Metric(
    name="cka_clean_noisy", long_name="linear CKA, clean against the condition", units="1",
    takes=CLEAN_CONDITION, statistic="pair", compute=linear_cka, function=linear_cka,
    anchor="robustness-from-features", family="robustness", at_reference=1.0,
    source="Kornblith et al., arXiv 1905.00414", tables={"robustness": "CKA(clean)"},
    definition="linear CKA between a layer's clean and corrupted features (Kornblith et al. 2019)",
    interval=True))
register(Metric(
    name="cka_clean_noisy_debiased", long_name="debiased linear CKA, clean against the condition",
    units="1", takes=CLEAN_CONDITION, statistic="pair", family="robustness", at_reference=1.0,
    compute=lambda pair: linear_cka(pair, debiased=True), anchor="robustness-from-features",
    source="Song et al. 2012, arXiv 0704.2668",
    definition="linear CKA with unbiased HSIC (Song et al. 2012)", interval=True))
metric("probe_accuracy", long_name="linear-probe accuracy", units="1", takes=CLEAN_CONDITION,
       statistic="probes", family="robustness", anchor="robustness-from-features",
       source="arXiv 2603.06698", params={"C": PROBE["C"], "max_iter": PROBE["max_iter"]},
       compute=lambda probes, C, max_iter: probes.accuracy(C, max_iter),
       tables={"robustness": "probe acc", "headline": "probe acc {condition}"},
       definition="LogisticRegression(lbfgs, C=1, max_iter=2000) fitted on L2-normalised clean "
                  "train features, scored on the condition's L2-normalised test features "
                  "(arXiv 2603.06698)", interval=True)(probe_accuracy)
metric("knn_accuracy", long_name="kNN accuracy", units="1", takes=CLEAN_CONDITION,
       statistic="probes", family="robustness", anchor="robustness-from-features",
       params={"k": KNN_K}, needs=lambda k: {"train_knn": k},
       compute=lambda probes, k: probes.knn(k),
       tables={"robustness": "kNN acc", "headline": "kNN acc {clean}"},
       definition=f"majority vote of the {KNN_K} most cosine-similar clean train features, "
                  "scored on the condition's test features", interval=True)(knn_accuracy)
