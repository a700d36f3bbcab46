"""distillscope: spectral diagnostics of distilled models from saved features.

What distillation did to a model's geometry (dimensional collapse, eigen-spectra, and more as
the project grows), computed by streaming an HDF5 feature store, returned as xarray.
``import distillscope`` imports neither torch nor matplotlib and compiles no kernel.
"""

from ._errors import DistillscopeError, InputError, OutputError, StoreError
from ._version import __version__
from .conventions import CONVENTIONS, Convention, get_convention
from .engine.analyze import AnalysisNote, analyze
from .engine.options import AnalysisOptions
from .metrics.dimensionality import (
    ESTIMATORS,
    erank_singular,
    erank_variance,
    n_components,
    participation_ratio,
    powerlaw_alpha,
    rank_from_spectrum,
    rankme,
    seed_averaged_erank,
    stable_rank,
)
from .labelled import ALIGNMENT_SCORES, alignment_score, effective_rank, eigenspectrum
from .metrics.moments import SecondMoments
from .metrics.pairs import PairMoments
from .results import load_results, save_results
from .store import Store, StoreWriter, open_store, validate_store

__all__ = [
    "__version__",
    # feature store
    "Store",
    "StoreWriter",
    "open_store",
    "validate_store",
    # analysis and results
    "analyze",
    "AnalysisOptions",
    "AnalysisNote",
    "save_results",
    "load_results",
    # dimensionality
    "ESTIMATORS",
    "CONVENTIONS",
    "Convention",
    "get_convention",
    "SecondMoments",
    "PairMoments",
    "eigenspectrum",
    "effective_rank",
    "erank_variance",
    "erank_singular",
    "rankme",
    "participation_ratio",
    "stable_rank",
    "n_components",
    "powerlaw_alpha",
    "rank_from_spectrum",
    "seed_averaged_erank",
    # alignment (array functions: distillscope.alignment)
    "ALIGNMENT_SCORES",
    "alignment_score",
    # errors
    "DistillscopeError",
    "InputError",
    "StoreError",
    "OutputError",
]
