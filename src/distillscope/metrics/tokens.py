"""Per-image dimensionality of token (and map) layers: how many directions one image needs.

Tian et al. (arXiv 2511.15572, "From Per-Image Low-Rank to Encoding Mismatch") measure a ViT's
last-layer representation image by image: the singular values of one image's raw (uncentred)
``N x D`` matrix of patch tokens (the CLS and other prefix tokens dropped), the energy
``sigma_k^2``, and the smallest ``k`` reaching 80 / 90 / 95 / 99% of it; their table reports
the 99th percentile of ``k`` over 1,000 ImageNet-val images, rounded (their released
``analysis/analyze_svd_separate.py`` and ``make_svd_rank_table.py``; registry entry
``tian_2511_15572``). A map layer ``(c, h, w)`` is read as its ``h w`` positions of ``c``
channels.

.. math:: d_t(i) = \\min\\{k : \\textstyle\\sum_{j \\le k} \\sigma_j(X_i)^2 \\ge
          t \\sum_j \\sigma_j(X_i)^2\\}, \\qquad \\mathrm{token\\_dims}_t =
          \\mathrm{round}(\\mathrm{percentile}_{99}\\, d_t)

Memory: one small integer per image and threshold (the per-image values are held to take the
percentile: 16 bytes per image).

Their dataset-level reading (``token_dims_dataset_*``; released ``analysis/analyze_dataset_pca.py``)
measures each image in one basis shared by the whole set: ``V``, the eigenvectors of the
uncentred second moment of every patch token of every image, ``C = sum_i X_i^T X_i / T``
(descending), and ``d_t(i) = min{d : ||X_i V_d||_F^2 >= t ||X_i||_F^2}`` (``D`` if never
reached), summarised by the same rounded 99th percentile. The basis is known only once every
image has been read, so these metrics hold the token matrices themselves (``n N D`` values in
the stored dtype: 300 MB for 1,000 images of 196 x 768 float16 tokens) and say so in the plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import InputError
from .registry import REPRESENTATION, Metric, register

__all__ = ["ENERGY_THRESHOLDS", "per_image_dims", "shared_basis_dims", "PerImageDims",
           "token_dims", "as_tokens"]

#: the energy shares of arXiv 2511.15572's table
ENERGY_THRESHOLDS = (0.80, 0.90, 0.95, 0.99)


def as_tokens(x: np.ndarray, kind: str, num_prefix_tokens: int = 0) -> np.ndarray:
    """``(m, N, D)`` token matrices of a block: a token layer's patch tokens (prefix dropped),
    or a map layer's ``h w`` positions of ``c`` channels."""
    if kind == "tokens":
        return x[:, num_prefix_tokens:, :]
    if kind == "map":
        m, c = x.shape[:2]
        return x.reshape(m, c, -1).transpose(0, 2, 1)
    raise InputError(f"per-image dimensions need a token or map layer; got a {kind} layer")


def per_image_dims(tokens: np.ndarray,
                   thresholds: Sequence[float] = ENERGY_THRESHOLDS) -> np.ndarray:
    """``(m, len(thresholds))`` dimensions each image's token matrix needs for each energy share.

    Parameters
    ----------
    tokens : ndarray, shape (m, N, D)
        Raw, uncentred token matrices (float16/32/64; computed in float64).
    thresholds : sequence of float in (0, 1]

    Returns
    -------
    ndarray of int32
        ``d_t(i)``: the smallest ``k`` with ``sum_{j<=k} s_j^2 >= t sum_j s_j^2``; 0 for an
        all-zero image.
    """
    x = np.asarray(tokens)
    if x.ndim != 3 or min(x.shape[1:]) < 1:
        raise InputError(f"tokens must be (images, tokens, features) with both sizes >= 1; got "
                         f"shape {x.shape}")
    t = _thresholds(thresholds)
    energy = np.linalg.svd(x.astype(np.float64, copy=False), compute_uv=False) ** 2
    cumulative = np.cumsum(energy, axis=1)
    dims = _first_reaching(cumulative, cumulative[:, -1], t)
    dims[cumulative[:, -1] == 0] = 0
    return dims


def _thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if not np.all((t > 0) & (t <= 1)):
        raise InputError(f"thresholds must lie in (0, 1]; got {list(thresholds)}")
    return t


def _first_reaching(cumulative: np.ndarray, total: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(m, len(t))``: per row, the first k whose ``cumulative[k-1] / total`` reaches each t
    (``np.searchsorted(share, t) + 1``, as the released code), at most the row's length."""
    share = np.divide(cumulative, total[:, None], out=np.zeros_like(cumulative),
                      where=total[:, None] > 0)
    dims = (share[:, :, None] < t[None, None, :]).sum(axis=1) + 1
    return np.minimum(dims, cumulative.shape[1]).astype(np.int32)


def shared_basis_dims(tokens: Sequence[np.ndarray],
                      thresholds: Sequence[float] = ENERGY_THRESHOLDS) -> np.ndarray:
    """``(n, len(thresholds))`` dimensions of one shared basis each image needs (the
    dataset-level reading of arXiv 2511.15572; module docstring).

    Parameters
    ----------
    tokens : sequence of ndarray, each (m, N, D)
        Every image's raw token matrix, in blocks (computed in float64).
    """
    blocks = [np.asarray(b, dtype=np.float64) for b in tokens if len(b)]
    if not blocks:
        raise InputError("no image to build the shared basis from")
    t = _thresholds(thresholds)
    gram = sum(np.einsum("mnd,mne->de", b, b) for b in blocks)
    count = sum(b.shape[0] * b.shape[1] for b in blocks)
    eigenvalues, vectors = np.linalg.eigh(gram / count)
    basis = vectors[:, np.argsort(eigenvalues)[::-1]]
    out = []
    for b in blocks:
        projected = b @ basis
        energy = np.einsum("mnd,mnd->md", projected, projected)  # ||X_i v_j||^2, (m, D)
        out.append(_first_reaching(np.cumsum(energy, axis=1), np.einsum("mnd,mnd->m", b, b), t))
    return np.concatenate(out)


class PerImageDims:
    """The per-image dimensions of one representation, accumulated block by block (mergeable:
    blocks keep their sample offsets). With ``keep_tokens`` the token matrices are held too,
    for the shared-basis reading (``shared_basis_dims``)."""

    def __init__(self, thresholds: Sequence[float] = ENERGY_THRESHOLDS,
                 keep_tokens: bool = False, dtype=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.keep_tokens = bool(keep_tokens)
        self.dtype = None if dtype is None else np.dtype(dtype)  # of the held tokens
        self.segments: list[tuple[int, np.ndarray]] = []
        self.tokens: list[tuple[int, np.ndarray]] = []
        self._shared: np.ndarray | None = None

    def update(self, tokens: np.ndarray, start: int = 0) -> None:
        if len(tokens):
            self.segments.append((start, per_image_dims(tokens, self.thresholds)))
            if self.keep_tokens:
                self.tokens.append((start, np.array(tokens, dtype=self.dtype)))

    def merge(self, other: "PerImageDims") -> "PerImageDims":
        self.segments.extend(other.segments)
        self.tokens.extend(other.tokens)
        self._shared = None
        return self

    @property
    def dims(self) -> np.ndarray:
        """``(n, len(thresholds))`` in sample order."""
        self.segments.sort(key=lambda segment: segment[0])
        if not self.segments:
            return np.zeros((0, len(self.thresholds)), np.int32)
        return np.concatenate([d for _, d in self.segments])

    @property
    def shared_dims(self) -> np.ndarray:
        """``(n, len(thresholds))`` in the shared basis of every held token (cached)."""
        if not self.keep_tokens:
            raise InputError("the shared-basis dimensions need the token matrices: accumulate "
                             "with keep_tokens=True")
        if self._shared is None:
            self.tokens.sort(key=lambda block: block[0])
            self._shared = shared_basis_dims([b for _, b in self.tokens], self.thresholds)
        return self._shared


def token_dims(acc: PerImageDims, threshold: float = 0.90, percentile: float = 99.0,
               shared_basis: bool = False) -> float:
    """``round(percentile_p d_t)`` over images (numpy's linear interpolation, then rounded to
    the nearest integer as arXiv 2511.15572's table: ``int(round(np.percentile(d, 99)))``),
    per image or in the shared basis."""
    if threshold not in acc.thresholds:
        raise InputError(f"threshold {threshold} was not accumulated; have {acc.thresholds}")
    dims = (acc.shared_dims if shared_basis else acc.dims)[:, acc.thresholds.index(threshold)]
    if dims.size == 0:
        raise InputError("no image to take a percentile over")
    return float(round(float(np.percentile(dims, percentile))))


def _register(name: str, long_name: str, script: str, definition: str, **params) -> None:
    register(Metric(
        name=name, long_name=long_name + ", 99th percentile over images", units="dimensions",
        takes=REPRESENTATION, statistic="images", family="dimensionality",
        anchor="per-image-token-dimensions", default=False, compute=token_dims,
        params={"percentile": 99.0, **params},
        needs=(lambda **_: {"keep_tokens": True}) if params.get("shared_basis") else None,
        source=f"Tian et al., arXiv 2511.15572 (released analysis/{script})",
        definition="round(percentile_99 over images of d_t), " + definition))


for _t in ENERGY_THRESHOLDS:
    _percent = round(_t * 100)
    _register(f"token_dims_{_percent}",
              f"per-image dimensions for {_percent}% of the token energy",
              "analyze_svd_separate.py",
              f"d_t the smallest k with sum_(j<=k) s_j^2 >= {_t} sum_j s_j^2, s the singular "
              "values of one image's raw patch-token matrix (prefix tokens dropped; maps: "
              "positions x channels)", threshold=_t)
    _register(f"token_dims_dataset_{_percent}",
              f"dimensions of the shared token basis for {_percent}% of each image's energy",
              "analyze_dataset_pca.py",
              f"d_t the smallest d with ||X_i V_d||_F^2 >= {_t} ||X_i||_F^2, V the "
              "eigenvectors of the uncentred second moment of every patch token (holds the "
              "tokens)", threshold=_t, shared_basis=True)
