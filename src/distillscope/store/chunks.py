"""Reading a dataset's chunks straight from the file, checksums verified in numba."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import h5py
import numpy as np

from .._errors import StoreError

if TYPE_CHECKING:
    from .reader import Store

__all__ = ["ChunkReader"]


class ChunkReader:
    """Reads a dataset's chunks straight from the file, verifying fletcher32 in numba.

    Used when the dataset is chunked along samples only, stored little-endian, filtered by
    fletcher32 alone (or nothing), every chunk written with its filter applied, and blocks are
    whole chunks. Each chunk's bytes go by ``preadv`` directly into the caller's block (the edge
    chunk through a scratch buffer) and its checksum is verified with HDF5's exact algorithm,
    accepting the byte-swapped variant HDF5 itself accepts from files of before 1.6.3. This
    skips HDF5's filter pipeline, which copies every chunk twice and checksums at a quarter of
    the speed (docs/performance.md). Anything else reads through h5py.
    """

    def __init__(self, store: "Store", ds: h5py.Dataset, chunk_rows: int, row_bytes: int,
                 verify: bool, chunks: dict[int, tuple[int, int]]):
        self.fd = store._raw_fd
        self.store = store
        self.n = ds.shape[0]
        self.chunk_rows = chunk_rows
        self.row_bytes = row_bytes
        self.verify = verify
        self.chunks = chunks
        self.scratch = np.empty(chunk_rows * row_bytes + 4, dtype=np.uint8)
        self.tail = np.empty(4, dtype=np.uint8)

    @classmethod
    def open(cls, store: "Store", ds: h5py.Dataset, rows: int) -> "ChunkReader | None":
        import sys

        if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
            return None
        chunk_rows = ds.chunks[0]
        if rows % chunk_rows or sys.byteorder != "little" or ds.dtype.byteorder == ">":
            return None
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if filters not in ([], [h5py.h5z.FILTER_FLETCHER32]):
            return None
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
        expected = chunk_rows * row_bytes + (4 if filters else 0)
        chunks = {}
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            if info.filter_mask != 0 or info.size != expected:
                return None
            chunks[info.chunk_offset[0]] = (info.byte_offset, info.size)
        if len(chunks) != -(-ds.shape[0] // chunk_rows):
            return None  # unwritten chunks: let HDF5 supply the fill value
        return cls(store, ds, chunk_rows, row_bytes, bool(filters), chunks)

    def read(self, start: int, stop: int, block: np.ndarray, where: str) -> None:
        from .._kernels import fletcher32

        flat = block.reshape(-1).view(np.uint8)
        for row0 in range(start, stop, self.chunk_rows):
            offset, size = self.chunks[row0]
            rows_here = min(self.chunk_rows, self.n - row0)
            data_bytes = self.chunk_rows * self.row_bytes
            if rows_here == self.chunk_rows:
                lo = (row0 - start) * self.row_bytes
                target = flat[lo:lo + data_bytes]
                parts = [target, self.tail] if self.verify else [target]
            else:
                target = self.scratch[:data_bytes]
                parts = [self.scratch[:size]]
            got = os.preadv(self.fd, parts, offset)
            if got != size:
                raise StoreError(self.store.path, where, f"chunk at samples {row0}.. is cut short "
                                 f"({got} of {size} bytes); the file is truncated")
            if self.verify:
                stored = (self.tail if rows_here == self.chunk_rows
                          else self.scratch[data_bytes:data_bytes + 4])
                value = int.from_bytes(bytes(stored), "little")
                computed = fletcher32(target)
                swapped = ((computed & 0x00FF00FF) << 8) | ((computed >> 8) & 0x00FF00FF)
                if value not in (computed, swapped):
                    raise StoreError(self.store.path, where, f"cannot read samples {row0}.."
                                     f"{row0 + rows_here - 1} (fletcher32 checksum mismatch); "
                                     "the file is damaged: re-extract or restore it")
            if rows_here != self.chunk_rows:
                lo = (row0 - start) * self.row_bytes
                flat[lo:lo + rows_here * self.row_bytes] = target[:rows_here * self.row_bytes]

