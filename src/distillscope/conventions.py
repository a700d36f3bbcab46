"""Named conventions: the preprocessing and estimator choices of one paper, bundled.

Papers report "effective rank" under incompatible choices (L2-normalised or not, centred or not,
entropy of variances or of singular values, an epsilon in the log, how seeds are combined).
A convention fixes all of them, so a number computed here can stand next to the published one.
Every result records the convention and each estimator's resolved ``center`` and ``eps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._errors import InputError
from .metrics.dimensionality import ESTIMATORS

__all__ = ["Convention", "CONVENTIONS", "get_convention"]


@dataclass(frozen=True)
class Convention:
    """Preprocessing and estimator settings of one paper or standard.

    Attributes
    ----------
    name : str
    l2_normalize : bool
        L2-normalise every sample before anything else.
    center : bool or None
        Centre for every estimator, or None to keep each estimator's published choice.
    eps : mapping of str to float
        Per-estimator regularisers that replace the published defaults.
    primary : str
        The estimator the source reports as its headline number.
    threshold : float
        The variance fraction its "dimensions for x% variance" uses.
    seed_aggregation : {"spectrum_mean", "rank_mean"}
        ``"spectrum_mean"``: rank of the seed-averaged singular values (arXiv 2603.06698);
        ``"rank_mean"``: mean of per-seed ranks.
    metrics : tuple of str
        Registered metrics the convention adds to those chosen: its paper's own numbers (off by
        default otherwise).
    rows : {"all", "test"}
        The samples every spectrum, pair statistic, drift, spatial spectrum and sample-level
        metric is computed on: all of them, or the test split only (arXiv 2603.06698's notebook
        computes on the CIFAR-10 test images). Probes and the kNN vote always fit on the train
        split and score the test split.
    seed_ddof : int
        Delta degrees of freedom of every standard deviation over seeds: 1 (the sample standard
        deviation) by default, 0 under arXiv 2603.06698 (its notebook's ``np.std``: the
        "71.11 +/- 0.44" of its Table I).
    source : str
        Citation.
    infonce_tau, infonce_batch, infonce_reduction
        InfoNCE temperature, consecutive batch size, and "sample" (mean over samples) or "batch"
        (mean of per-batch means) reduction.
    uniformity_batch, uniformity_diagonal
        Uniformity over all pairs (None) or per consecutive batch, with or without i = j.
    """

    name: str
    l2_normalize: bool
    center: bool | None
    eps: Mapping[str, float] = field(default_factory=dict)
    primary: str = "erank_variance"
    threshold: float = 0.90
    seed_aggregation: str = "rank_mean"
    metrics: tuple[str, ...] = ()
    rows: str = "all"
    seed_ddof: int = 1
    source: str = ""
    infonce_tau: float = 0.1
    infonce_batch: int = 64
    infonce_reduction: str = "sample"
    uniformity_batch: int | None = None
    uniformity_diagonal: bool = False

    def resolve(self, estimator: str, *, center: bool | None = None) -> tuple[bool, float]:
        """(center, eps) for ``estimator`` under this convention, with an explicit override."""
        spec = ESTIMATORS[estimator]
        if center is None:
            center = spec.center if self.center is None else self.center
        return bool(center), float(self.eps.get(estimator, spec.eps))


CONVENTIONS: Mapping[str, Convention] = MappingProxyType({
    c.name: c
    for c in (
        Convention(
            name="default",
            l2_normalize=False,
            center=None,
            primary="erank_variance",
            source="each estimator as its own source defines it (docs/metrics.md)",
        ),
        Convention(
            name="arxiv_2603_06698",
            l2_normalize=True,
            center=True,
            eps=MappingProxyType({"erank_variance": 1e-10, "erank_singular": 1e-10}),
            primary="erank_variance",
            threshold=0.90,
            seed_aggregation="spectrum_mean",
            rows="test",
            seed_ddof=0,
            source="arXiv 2603.06698 (L2-normalise, centre, variance entropy with 1e-10 in the "
                   "log, dims for 90% variance, rank of the seed-averaged singular values, "
                   "spreads over seeds with ddof 0, all on the test split; "
                   "InfoNCE tau 0.1 over consecutive batches of 64 averaged per batch; "
                   "uniformity per batch of 64 with the diagonal)",
            infonce_reduction="batch",
            uniformity_batch=64,
            uniformity_diagonal=True,
        ),
        Convention(
            name="tian_2511_15572_per_image",
            l2_normalize=False,
            center=None,
            metrics=("token_dims_80", "token_dims_90", "token_dims_95", "token_dims_99"),
            source="Tian et al., arXiv 2511.15572: per image, the singular values of its raw "
                   "patch-token matrix (prefix tokens dropped, uncentred), the dimensions for "
                   "80/90/95/99% of the energy, the 99th percentile over images, rounded "
                   "(released analysis/analyze_svd_separate.py, make_svd_rank_table.py)",
        ),
        Convention(
            name="tian_2511_15572_dataset",
            l2_normalize=False,
            center=None,
            metrics=("token_dims_dataset_80", "token_dims_dataset_90", "token_dims_dataset_95",
                     "token_dims_dataset_99"),
            source="Tian et al., arXiv 2511.15572: one basis for the whole set (eigenvectors "
                   "of the uncentred second moment of every patch token), each image's "
                   "dimensions of it for 80/90/95/99% of its energy, the 99th percentile over "
                   "images, rounded (released analysis/analyze_dataset_pca.py, its default "
                   "--center off)",
        ),
        Convention(
            name="rankme",
            l2_normalize=False,
            center=False,
            eps=MappingProxyType({"rankme": 1e-7}),
            primary="rankme",
            source="Garrido et al., arXiv 2210.02885 (uncentred singular values, eps 1e-7)",
        ),
    )
})


def get_convention(name: str | Convention) -> Convention:
    """Return the convention named ``name`` (or ``name`` itself if it is one)."""
    if isinstance(name, Convention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise InputError(
            f"convention must be one of {', '.join(CONVENTIONS)}; got {name!r}"
        ) from None
