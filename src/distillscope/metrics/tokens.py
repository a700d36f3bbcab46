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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import InputError
from .registry import REPRESENTATION, Metric, register

__all__ = ["ENERGY_THRESHOLDS", "per_image_dims", "PerImageDims", "token_dims", "as_tokens"]

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
    t = np.asarray(thresholds, dtype=np.float64)
    if not np.all((t > 0) & (t <= 1)):
        raise InputError(f"thresholds must lie in (0, 1]; got {list(thresholds)}")
    energy = np.linalg.svd(x.astype(np.float64, copy=False), compute_uv=False) ** 2
    cumulative = np.cumsum(energy, axis=1)
    total = cumulative[:, -1:]
    share = np.divide(cumulative, total, out=np.zeros_like(cumulative), where=total > 0)
    # the first k reaching t: np.searchsorted(share, t) + 1 on each row, as the released code
    dims = (share[:, :, None] < t[None, None, :]).sum(axis=1) + 1
    dims[total[:, 0] == 0] = 0
    return np.minimum(dims, energy.shape[1]).astype(np.int32)


class PerImageDims:
    """The per-image dimensions of one representation, accumulated block by block (mergeable:
    blocks keep their sample offsets)."""

    def __init__(self, thresholds: Sequence[float] = ENERGY_THRESHOLDS):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.segments: list[tuple[int, np.ndarray]] = []

    def update(self, tokens: np.ndarray, start: int = 0) -> None:
        if len(tokens):
            self.segments.append((start, per_image_dims(tokens, self.thresholds)))

    def merge(self, other: "PerImageDims") -> "PerImageDims":
        self.segments.extend(other.segments)
        return self

    @property
    def dims(self) -> np.ndarray:
        """``(n, len(thresholds))`` in sample order."""
        self.segments.sort(key=lambda segment: segment[0])
        if not self.segments:
            return np.zeros((0, len(self.thresholds)), np.int32)
        return np.concatenate([d for _, d in self.segments])


def token_dims(acc: PerImageDims, threshold: float = 0.90, percentile: float = 99.0) -> float:
    """``round(percentile_p d_t)`` over images (numpy's linear interpolation, then rounded to
    the nearest integer as arXiv 2511.15572's table: ``int(round(np.percentile(d, 99)))``)."""
    if threshold not in acc.thresholds:
        raise InputError(f"threshold {threshold} was not accumulated; have {acc.thresholds}")
    dims = acc.dims[:, acc.thresholds.index(threshold)]
    if dims.size == 0:
        raise InputError("no image to take a percentile over")
    return float(round(float(np.percentile(dims, percentile))))


for _t in ENERGY_THRESHOLDS:
    register(Metric(
        name=f"token_dims_{round(_t * 100)}",
        long_name=f"per-image dimensions for {round(_t * 100)}% of the token energy, "
                  "99th percentile over images",
        units="dimensions", takes=REPRESENTATION, statistic="images", family="dimensionality",
        anchor="per-image-token-dimensions", default=False, compute=token_dims,
        params={"threshold": _t, "percentile": 99.0},
        source="Tian et al., arXiv 2511.15572 (released analysis/analyze_svd_separate.py)",
        definition=f"round(percentile_99 over images of d_t), d_t the smallest k with "
                   f"sum_(j<=k) s_j^2 >= {_t} sum_j s_j^2, s the singular values of one "
                   f"image's raw patch-token matrix (prefix tokens dropped; maps: positions x "
                   f"channels)"))
