"""Running top-k lists of the similarity passes, and neighbours of one set among another.

``TopLists`` keeps each sample's k most similar candidates while tiles of a similarity matrix
are offered to it (``neighbours.similarity_pass``); ``cross_neighbours`` finds, for each query
row, its k most similar reference rows (the kNN vote of ``robustness``). Ties go to the lower
index, whatever the order of the tiles.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TopLists", "cross_neighbours", "tile_size"]


def tile_size(n: int, dtype, tile: int | None) -> int:
    """Rows per square tile of a similarity pass: ``tile`` when given, else 1 MiB tiles."""
    # 1 MiB tiles (512 x 512 float32) stay in the core's cache between the BLAS call that writes
    # them and the kernel that reads them (docs/performance.md)
    return int(tile or max(16, min(n, int(np.sqrt((1 << 20) / np.dtype(dtype).itemsize)))))


class TopLists:
    """Running top-k lists, and how a tile of similarities is offered to them.

    ``owner_of[i]`` is the list sample ``i`` owns (negative: none); ``candidate_of[i]`` the index
    stored when sample ``i`` enters a list (negative: it is no one's candidate). A list never
    gets its own sample; ties go to the lower index, whatever the order of the tiles.
    """

    def __init__(self, owner_of: np.ndarray, candidate_of: np.ndarray, k: int, dtype):
        size = int(owner_of.max(initial=-1)) + 1
        self.roles = np.stack([owner_of, candidate_of]).astype(np.int64)
        self.k = k
        self.idx = np.empty((size, k), np.int64)
        self.val = np.empty((size, k), dtype)
        self.filled = np.zeros(size, np.int64)
        self.kth = np.full(size, -np.inf, dtype)  # each list's k-th best; -inf while filling
        self.lists = (self.idx, self.val, self.filled, self.kth)

    def threshold(self, lo: int, hi: int) -> np.ndarray:
        """The k-th best of the lists samples ``lo:hi`` own (+inf for samples owning none)."""
        owner = self.roles[0, lo:hi]
        return np.where(owner >= 0, self.kth[np.maximum(owner, 0)], np.inf).astype(self.kth.dtype)

    def fill_or_threshold(self, sims: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, bool]:
        """The rows' thresholds, and whether the rows were done: if some list is still filling,
        the tile's rows are offered every entry now (``_kernels.offer_tile``) and +inf is
        returned (nothing left to mark for them)."""
        from .._kernels import offer_tile

        kth = self.threshold(row0, row0 + sims.shape[0])
        if not np.isneginf(kth).any():
            return kth, False
        offer_tile(sims, row0, col0, self.roles, self.lists)
        return np.full_like(kth, np.inf), True

    def offer_marked(self, sims: np.ndarray, hits: np.ndarray, row0: int, col0: int, *,
                     rows: bool, columns: bool) -> None:
        """Offer the marked entries of a tile to their rows' lists (with ``rows``) and their
        columns' lists (with ``columns``), each checked against the list as it is now."""
        from .._kernels import offer_marked

        marked = np.flatnonzero(hits)  # numpy's 1-D flatnonzero is 7x its 2-D nonzero
        if marked.size:
            offer_marked(sims, marked, row0, col0, int(rows) | (2 * int(columns)), self.roles,
                         self.lists)

    def offer(self, sims: np.ndarray, row0: int, col0: int, *, columns: bool) -> None:
        """Offer a tile (rows ``row0..``, columns ``col0..``) to the rows' lists and, with
        ``columns`` (a tile above the diagonal), to the columns' lists."""
        row_kth, filled_rows = self.fill_or_threshold(sims, row0, col0)
        col_kth = (self.threshold(col0, col0 + sims.shape[1]) if columns
                   else np.full(sims.shape[1], np.inf, self.val.dtype))
        hits = (sims >= row_kth[:, None]) | (sims >= col_kth[None, :])
        self.offer_marked(sims, hits, row0, col0, rows=not filled_rows, columns=columns)


def cross_neighbours(query: np.ndarray, reference: np.ndarray, k: int,
                     tile: int | None = None) -> np.ndarray:
    """For each query row, the indices of its k most similar reference rows (unit rows given;
    two different sets: no self exclusion). Ties go to the lower index."""
    m, n_ref = query.shape[0], reference.shape[0]
    tile = tile_size(max(m, n_ref), query.dtype, tile)
    # samples 0..m-1 are the queries (owners), m.. the reference rows (candidates)
    owner_of = np.r_[np.arange(m), np.full(n_ref, -1)]
    candidate_of = np.r_[np.full(m, -1), np.arange(n_ref)]
    lists = TopLists(owner_of, candidate_of, k, query.dtype)
    sims_buffer = np.empty((tile, tile), query.dtype)
    for a in range(0, m, tile):
        rows = query[a:a + tile]
        for b in range(0, n_ref, tile):
            cols = reference[b:b + tile]
            sims = sims_buffer[: rows.shape[0], : cols.shape[0]]
            np.matmul(rows, cols.T, out=sims)
            lists.offer(sims, a, m + b, columns=False)
    return lists.idx
