"""Reduce stored activations to one vector per sample before dimensionality metrics.

Embeddings (n, d) pass through. Feature maps (n, c, h, w) and tokens (n, t, d) are pooled:

========== ======================================= =============================================
pooling    maps (n, c, h, w)                       tokens (n, t, d)
========== ======================================= =============================================
``auto``   ``mean``                                ``cls`` when there are prefix tokens, else
                                                   ``mean``
``mean``   global average over h, w -> (n, c)      average over the h*w patch tokens -> (n, d)
``max``    global max over h, w -> (n, c)          max over the patch tokens -> (n, d)
``cls``    not defined                             the first prefix token -> (n, d)
``flatten`` every position a feature -> (n, c*h*w)  patch tokens, flattened -> (n, h*w*d)
========== ======================================= =============================================

Prefix tokens (CLS, distillation, registers) never enter ``mean``, ``max`` or ``flatten``.
Means are taken in float64.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from ..store import LayerInfo

__all__ = ["POOLINGS", "pooled_width", "pool", "resolve_pooling"]

POOLINGS = ("auto", "mean", "max", "cls", "flatten")


def resolve_pooling(info: LayerInfo, pooling: str) -> str:
    """The concrete pooling for a layer ("none" for embeddings)."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    if info.kind == "embedding":
        return "none"
    if pooling == "auto":
        if info.kind == "tokens" and info.num_prefix_tokens:
            return "cls"
        return "mean"
    if pooling == "cls" and (info.kind != "tokens" or not info.num_prefix_tokens):
        raise InputError(
            f"{info.path}: pooling 'cls' needs tokens with a prefix token; this layer is a "
            f"{info.kind} without one (use 'mean')"
        )
    return pooling


def pooled_width(info: LayerInfo, pooling: str) -> int:
    """Number of features after pooling."""
    how = resolve_pooling(info, pooling)
    shape = info.shape[1:]
    if how == "none":
        return shape[0]
    if info.kind == "map":
        return int(np.prod(shape)) if how == "flatten" else shape[0]
    patches = shape[0] - (info.num_prefix_tokens or 0)
    return patches * shape[1] if how == "flatten" else shape[1]


def pool(block: np.ndarray, info: LayerInfo, pooling: str) -> np.ndarray:
    """Pool a block of samples of the layer ``info`` to a 2-D (samples, features) array."""
    how = resolve_pooling(info, pooling)
    if how == "none":
        return block
    m = block.shape[0]
    if info.kind == "map":
        if how == "mean":
            return block.mean(axis=(2, 3), dtype=np.float64)
        if how == "max":
            return block.max(axis=(2, 3))
        return block.reshape(m, -1)
    prefix = info.num_prefix_tokens or 0
    if how == "cls":
        return block[:, 0, :]
    patches = block[:, prefix:, :]
    if how == "mean":
        return patches.mean(axis=1, dtype=np.float64)
    if how == "max":
        return patches.max(axis=1)
    return patches.reshape(m, -1)
