"""Named conventions: the preprocessing and estimator choices of one paper, bundled.

Papers report "effective rank" under incompatible choices (L2-normalised or not, centred or not,
entropy of variances or of singular values, an epsilon in the log, how seeds are combined).
A convention fixes all of them, so a number computed here can stand next to the published one.
Every result records the convention and each estimator's resolved ``center`` and ``eps``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ._errors import InputError
from .metrics.dimensionality import ESTIMATORS

__all__ = ["Convention", "CONVENTIONS", "get_convention", "resolve_conventions",
           "REGISTRY_CONVENTIONS", "NOT_COMPUTABLE", "library_convention"]


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
    omits : tuple of str
        Default metrics the convention leaves out unless they are named (``metrics=``,
        ``--metrics``): under ``arxiv_2603_06698``, the library's decompositions of a pair's
        cross moments (the CCA family, principal angles, Procrustes, the ridge predictivity and
        retention). They are not its paper's numbers, no paper reports them on L2-normalised
        rows, and their SVDs, eigendecompositions and ridge solves would be most of what the
        convention adds to an analysis of every sample.
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
    powerlaw_range : (int, int)
        First and last rank (1-based, inclusive) of the power-law fit (``powerlaw_alpha``).
    sample_rows : int, optional
        Compute the sample-level metrics (mutual kNN, uniformity, InfoNCE; not the probes) on
        this many samples: those of the lowest ``splitmix64(sample id)``, so the same ids give
        the same subsample in any store order (Huh et al. score 1024 images; mutual kNN at
        k = 10 depends on n). None: every analysed sample.
    """

    name: str
    l2_normalize: bool
    center: bool | None
    eps: Mapping[str, float] = field(default_factory=dict)
    primary: str = "erank_variance"
    threshold: float = 0.90
    seed_aggregation: str = "rank_mean"
    metrics: tuple[str, ...] = ()
    omits: tuple[str, ...] = ()
    rows: str = "all"
    seed_ddof: int = 1
    source: str = ""
    infonce_tau: float = 0.1
    infonce_batch: int = 64
    infonce_reduction: str = "sample"
    uniformity_batch: int | None = None
    uniformity_diagonal: bool = False
    powerlaw_range: tuple[int, int] = (11, 100)
    sample_rows: int | None = None

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
            omits=("cca_mean", "cca_r2", "svcca", "pwcca", "principal_angles",
                   "procrustes_angular", "linear_predictivity", "retention"),
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
            name="agrawal_neurips2022",
            l2_normalize=False,
            center=None,
            metrics=("powerlaw_alpha",),
            powerlaw_range=(4, 100),
            source="Agrawal et al., alpha-ReQ, NeurIPS 2022: alpha of the centred covariance "
                   "spectrum, weighted least squares of log lambda_k on [-log k, 1] with "
                   "weights 1/k over ranks 4..100 (released fastssl: utils/powerlaw.py "
                   "stringer_get_powerlaw, scripts/train_model.py trange np.arange(3, 100))",
        ),
        Convention(
            name="kornblith_1905_00414",
            l2_normalize=False,
            center=None,
            metrics=("linear_cka", "linear_hsic", "cca_mean", "cca_r2", "svcca", "svcca_r2",
                     "pwcca", "linreg_r2"),
            source="Kornblith et al., arXiv 1905.00414, Table 1: the similarity indexes of "
                   "centred features (linear CKA with the biased HSIC, linear HSIC, CCA mean "
                   "rho and R^2, SVCCA at 99% variance, PWCCA, linear-regression R^2); the RBF "
                   "CKA of its Table 2 on request (--metrics rbf_cka_02,rbf_cka_04,rbf_cka_08: "
                   "n x n kernels), as its Demo.ipynb computes them",
        ),
        Convention(
            name="huh_2405_07987",
            l2_normalize=False,
            center=None,
            metrics=("mutual_knn_best",),
            sample_rows=1024,
            source="Huh et al., arXiv 2405.07987: mutual k-NN (k = 10) of the teacher and each "
                   "student after clamping each model to its mean per-sample 95th percentile of "
                   "|x|, rows L2-normalised, the best over every layer pair and the "
                   "concatenation of all layers, on 1024 samples (released "
                   "measure_alignment.py, metrics.py; the sample-level metrics on the 1024 "
                   "samples of lowest splitmix64(id))",
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


def resolve_conventions(spec: str | Convention | Sequence[str | Convention]) -> list[Convention]:
    """The conventions ``spec`` names: one name or Convention, ``"NAME,NAME"``, ``"all"`` (every
    one of ``CONVENTIONS``), or a sequence of names and Conventions; each once, in order."""
    if isinstance(spec, Convention):
        return [spec]
    if isinstance(spec, str):
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if not names:
            raise InputError(f"convention must name at least one of {', '.join(CONVENTIONS)} "
                             f"(or 'all'); got {spec!r}")
        spec = names
    out: list[Convention] = []
    for item in spec:
        for c in (list(CONVENTIONS.values()) if item == "all" else [get_convention(item)]):
            if c.name in {o.name for o in out}:
                continue
            out.append(c)
    if not out:
        raise InputError("convention: give at least one name (or 'all')")
    return out


#: every convention of the papers registry (``papers/*.toml``, ``[conventions.*] name``) that
#: features can be analysed under: the library convention that computes it and the registered
#: metrics that hold its numbers (``analyze --convention LIBRARY --metrics default,METRIC``
#: for a metric that is not computed by default). ``tests/test_papers.py`` keeps this complete.
REGISTRY_CONVENTIONS: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType({
    "arxiv_2603_06698": ("arxiv_2603_06698", ("erank_variance", "seed_averaged_rank")),
    "arxiv_2603_06698_dims90": ("arxiv_2603_06698", ("n_components_90", "seed_averaged_dims")),
    "arxiv_2603_06698_singular": ("arxiv_2603_06698", ("seed_averaged_singular_rank",)),
    "arxiv_2603_06698_alignment": ("arxiv_2603_06698", ("cosine_alignment",)),
    "arxiv_2603_06698_infonce": ("arxiv_2603_06698", ("infonce_loss",)),
    "arxiv_2603_06698_uniformity": ("arxiv_2603_06698", ("uniformity",)),
    "arxiv_2603_06698_varcaptured": ("arxiv_2603_06698", ("variance_captured_uncentred",)),
    "arxiv_2603_06698_probe": ("arxiv_2603_06698", ("probe_accuracy",)),
    "tian_2511_15572_per_image": ("tian_2511_15572_per_image", (
        "token_dims_80", "token_dims_90", "token_dims_95", "token_dims_99")),
    "tian_2511_15572_dataset": ("tian_2511_15572_dataset", (
        "token_dims_dataset_80", "token_dims_dataset_90", "token_dims_dataset_95",
        "token_dims_dataset_99")),
    "garrido_2210_02885": ("rankme", ("rankme",)),
    "agrawal_neurips2022": ("agrawal_neurips2022", ("powerlaw_alpha",)),
    "huh_2405_07987": ("huh_2405_07987", ("mutual_knn_best",)),
    "kornblith_1905_00414": ("kornblith_1905_00414", ("linear_cka",)),
    "kornblith_1905_00414_rbf02": ("kornblith_1905_00414", ("rbf_cka_02",)),
    "kornblith_1905_00414_rbf04": ("kornblith_1905_00414", ("rbf_cka_04",)),
    "kornblith_1905_00414_rbf08": ("kornblith_1905_00414", ("rbf_cka_08",)),
    "kornblith_1905_00414_linear_hsic": ("kornblith_1905_00414", ("linear_hsic",)),
    "kornblith_1905_00414_cca_r2": ("kornblith_1905_00414", ("cca_r2",)),
    "kornblith_1905_00414_cca_rho": ("kornblith_1905_00414", ("cca_mean",)),
    "kornblith_1905_00414_svcca_r2": ("kornblith_1905_00414", ("svcca_r2",)),
    "kornblith_1905_00414_svcca_rho": ("kornblith_1905_00414", ("svcca",)),
    "kornblith_1905_00414_pwcca": ("kornblith_1905_00414", ("pwcca",)),
    "kornblith_1905_00414_linreg": ("kornblith_1905_00414", ("linreg_r2",)),
})

#: registry conventions no analysis of features can follow, and why
NOT_COMPUTABLE: Mapping[str, str] = MappingProxyType({
    "huh_2405_07987_places": "the vision-vision study states only k = 10, 1000 Places-365 "
                             "images and the definition; its layer, pooling, normalisation and "
                             "clipping are neither stated nor in the released code",
    "beyer_2106_05237": "a training objective (function matching) behind top-1 accuracies, "
                        "not a measure of features",
})


def library_convention(registry_name: str) -> str | None:
    """The library convention that computes a registry convention (None if none can)."""
    found = REGISTRY_CONVENTIONS.get(registry_name)
    return found[0] if found else None
