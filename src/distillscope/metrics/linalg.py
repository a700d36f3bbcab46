"""Small linear-algebra helpers shared by the alignment metrics (plain ndarrays)."""

from __future__ import annotations

import numpy as np

__all__ = ["eigh_desc", "along", "numerical_rank", "inv_sqrt"]


def eigh_desc(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues, descending, and their eigenvectors (columns) of a symmetric matrix, both
    contiguous: BLAS takes products with a reversed view at a copy's cost, or at numpy's own
    loop's (a matrix-vector product about 15x slower)."""
    lam, vec = np.linalg.eigh(matrix)
    return lam[::-1].copy(), np.ascontiguousarray(vec[:, ::-1])


def along(v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``diag(V^T S V)``: the scatter of ``S`` along each column of ``V`` (one BLAS call)."""
    return np.sum(v * (s @ v), axis=0)


def numerical_rank(lam: np.ndarray) -> int:
    """Numerical rank from descending eigenvalues of a scatter matrix."""
    if not lam.size or not lam[0] > 0:
        return 0
    return int(np.count_nonzero(lam > lam[0] * lam.size * np.finfo(np.float64).eps))


def inv_sqrt(matrix: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Pseudo-inverse square root of a symmetric PSD matrix (rank-revealing)."""
    lam, vec = eigh_desc(matrix) if eig is None else eig
    keep = lam > lam[0] * matrix.shape[0] * np.finfo(np.float64).eps if lam.size else lam > 0
    return (vec[:, keep] / np.sqrt(lam[keep])) @ vec[:, keep].T
