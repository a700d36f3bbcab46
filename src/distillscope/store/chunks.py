"""Reading sample ranges of a dataset: chunk by chunk where the layout allows, h5py otherwise.

``DatasetReader`` reads consecutive ranges ``[start, stop)`` of one dataset into buffers lent by
the scratch pool, every row exactly once over a pass, whatever the block size.

Where a dataset is chunked along samples only, stored little-endian, filtered by fletcher32
alone (or not at all), and every chunk was written with its filter applied, each chunk's bytes
come straight from ``H5Dread_chunk`` (``Dataset.id.read_direct_chunk``, no second file
descriptor; HDF5 resolves the address, user block included) and the checksum is verified by
HDF5's exact algorithm in numba, accepting the byte-swapped variant HDF5 itself accepts from
files of before 1.6.3. This skips HDF5's filter pipeline, which copies every chunk twice and
checksums at a quarter of the speed (``docs/performance.md``). A chunk that straddles two blocks
is read once, kept, and finishes the next block. Anything else (contiguous storage, other
filters, big-endian or otherwise non-native floats, no JIT) reads through h5py, which decodes
it. Chunks that were never written are an error naming the samples, in either path: HDF5
would return its fill value, and a store with unwritten rows is not a store a writer finished.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import h5py
import numpy as np

from .._errors import StoreError
from .._scratch import POOL, cast_into
from .schema import first_line

__all__ = ["DatasetReader", "ChunkReader", "chunk_table", "unwritten", "declared_chunks",
           "chunk_bytes", "DIRECT_MIN_CHUNK_BYTES"]


#: many chunks smaller than this read faster through h5py (HDF5 walks them without a Python
#: call each): 100k rows of 256 bytes, direct against h5py, chunks of 1 row 1.58 against
#: 0.80 s, 64 rows 23 against 17 ms, 192 rows even, 256 rows 8 against 12 ms
#: (docs/performance.md); below ``DIRECT_ANY_CHUNKS`` chunks the difference is noise
DIRECT_MIN_CHUNK_BYTES = 64 << 10
DIRECT_ANY_CHUNKS = 1024


def chunk_table(ds: h5py.Dataset) -> dict[int, tuple[int, int]] | None:
    """For a dataset chunked along samples only: first row of each stored chunk -> (filter
    mask, stored size). None for other layouts (contiguous, chunked along features)."""
    if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    table: dict[int, tuple[int, int]] = {}
    ds.id.chunk_iter(lambda info: table.__setitem__(info.chunk_offset[0],
                                                    (info.filter_mask, info.size)))
    return table


def declared_chunks(ds: h5py.Dataset) -> int:
    """How many chunks a chunked dataset's shape declares (written or not)."""
    return math.prod(-(-s // c) for s, c in zip(ds.shape, ds.chunks))


def chunk_bytes(ds: h5py.Dataset) -> int:
    """Bytes of one chunk of a chunked dataset."""
    return ds.dtype.itemsize * math.prod(ds.chunks)


def unwritten(ds: h5py.Dataset) -> tuple[int, int, int, int] | None:
    """``(first, last, missing, declared)``: the first range of samples whose chunks were never
    written, with the counts of missing and declared chunks; None when every chunk is there
    (or the dataset is not chunked). HDF5 would read a missing chunk as its fill value."""
    if ds.chunks is None or ds.size == 0:
        return None
    declared = declared_chunks(ds)
    have = ds.id.get_num_chunks()
    if have >= declared:
        return None
    rows = ds.chunks[0]
    offsets: list[int] = []
    ds.id.chunk_iter(lambda info: offsets.append(info.chunk_offset[0] // rows))
    written = np.bincount(np.asarray(offsets, dtype=np.int64), minlength=-(-ds.shape[0] // rows))
    first = int(np.flatnonzero(written < declared // written.size)[0]) * rows
    return first, min(ds.shape[0], first + rows) - 1, declared - have, declared


class ChunkReader:
    """Direct chunk reads of one dataset whose layout allows them (see the module docstring)."""

    def __init__(self, ds: h5py.Dataset, verify: bool, where: tuple[Path, str]):
        self.ds = ds
        self.n = ds.shape[0]
        self.chunk_rows = ds.chunks[0]
        self.row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
        self.data_bytes = self.chunk_rows * self.row_bytes
        self.stored_bytes = self.data_bytes + (4 if verify else 0)
        self.verify = verify
        self.where = where
        self._chunk = np.empty(self.stored_bytes, np.uint8)  # a chunk that straddles blocks
        self._cached: int | None = None
        self.chunks_read = 0

    @classmethod
    def open(cls, ds: h5py.Dataset, table, where: tuple[Path, str]) -> "ChunkReader | None":
        """A direct reader when ``ds``'s layout allows one, else None."""
        from .._kernels import jit_enabled

        if table is None or not jit_enabled() or sys.byteorder != "little":
            return None  # without the JIT the checksum kernel would run byte by byte
        if ds.dtype.byteorder == ">" or ds.dtype.kind != "f":
            return None
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if filters not in ([], [h5py.h5z.FILTER_FLETCHER32]):
            return None
        reader = cls(ds, bool(filters), where)
        if any(mask != 0 or size != reader.stored_bytes for mask, size in table.values()):
            return None  # a chunk stored without its filter, or of another size
        return reader

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``start:stop`` into ``out`` (a byte buffer of at least ``(stop - start) *
        row_bytes + 4`` bytes: a chunk's checksum lands just past its rows, then moves)."""
        first = start // self.chunk_rows
        for c in range(first, (stop - 1) // self.chunk_rows + 1):
            row0 = c * self.chunk_rows
            rows_here = min(self.chunk_rows, self.n - row0)
            lo, hi = max(start, row0), min(stop, row0 + rows_here)
            target = (lo - start) * self.row_bytes
            whole = lo == row0 and hi == row0 + rows_here and rows_here == self.chunk_rows
            if whole:
                region = out[target:target + self.stored_bytes]
                self._read_chunk(c, region)
                continue
            if self._cached != c:
                self._read_chunk(c, self._chunk)
                self._cached = c
            part = self._chunk[(lo - row0) * self.row_bytes:(hi - row0) * self.row_bytes]
            out[target:target + part.size] = part

    def _read_chunk(self, c: int, region: np.ndarray) -> None:
        from .._kernels import fletcher32

        row0 = c * self.chunk_rows
        offsets = (row0,) + (0,) * (self.ds.ndim - 1)
        try:
            self.ds.id.read_direct_chunk(offsets, out=region)
        except (OSError, ValueError) as err:
            raise StoreError(*self.where, f"cannot read the chunk of samples {row0}.. "
                             f"({first_line(err)}); the file is damaged or truncated: "
                             "re-extract or restore it") from None
        self.chunks_read += 1
        if self.verify:
            data = region[:self.data_bytes]
            value = int.from_bytes(bytes(region[self.data_bytes:self.stored_bytes]), "little")
            computed = fletcher32(data)
            swapped = ((computed & 0x00FF00FF) << 8) | ((computed >> 8) & 0x00FF00FF)
            if value not in (computed, swapped):
                last = min(self.n, row0 + self.chunk_rows) - 1
                raise StoreError(*self.where, f"cannot read samples {row0}..{last} (fletcher32 "
                                 "checksum mismatch); the file is damaged: re-extract or "
                                 "restore it")


class DatasetReader:
    """Consecutive sample ranges of one dataset, as native arrays lent by the scratch pool.

    Parameters
    ----------
    ds : h5py.Dataset
    where : (file, HDF5 path)
        Named in errors.
    widen : bool
        float16 comes back as float32 (exact; numpy computes faster on float32).

    Each ``read`` returns an array the caller gives back with ``done`` (or keeps: then the pool
    never sees it again). ``rows_read`` counts the rows taken from the file.
    """

    def __init__(self, ds: h5py.Dataset, where: tuple[Path, str], *, widen: bool = True,
                 pool=POOL):
        self.ds = ds
        self.where = where
        self.pool = pool
        self.native = ds.dtype.newbyteorder("=")
        self.out_dtype = np.dtype(np.float32) if widen and self.native == np.float16 \
            else self.native
        self.sample_shape = tuple(ds.shape[1:])
        self.row_bytes = self.native.itemsize * int(np.prod(self.sample_shape))
        gap = unwritten(ds)
        if gap is not None:
            raise StoreError(*where, f"samples {gap[0]}..{gap[1]} were never written (their "
                             "chunk is missing; HDF5 would read its fill value): the writer did "
                             "not finish; re-extract the store")
        many_small = (ds.chunks is not None and ds.shape[0] > DIRECT_ANY_CHUNKS * ds.chunks[0]
                      and chunk_bytes(ds) < DIRECT_MIN_CHUNK_BYTES)
        self.direct = None if many_small else ChunkReader.open(ds, chunk_table(ds), where)
        self.rows_read = 0
        self._raw_of: dict[int, np.ndarray] = {}  # id(typed view) -> the byte buffer lent
        self.on_read = lambda rows: None  # the store counts reads per dataset

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an ``(m, *sample_shape)`` array of ``out_dtype``."""
        m = stop - start
        raw = self.pool.take((m * self.row_bytes + 4,), np.uint8)  # + a checksum's landing
        block = raw[:m * self.row_bytes].view(self.native).reshape(m, *self.sample_shape)
        try:
            if self.direct is not None:
                self.direct.read(start, stop, raw)
            else:
                self.ds.read_direct(block, np.s_[start:stop], np.s_[0:m])
        except OSError as err:
            self.pool.give(raw)
            raise StoreError(*self.where, f"cannot read samples {start}..{stop - 1} "
                             f"({first_line(err)}); the file is damaged: re-extract or restore "
                             "it") from None
        except BaseException:
            self.pool.give(raw)
            raise
        self.rows_read += m
        self.on_read(m)
        if self.out_dtype == self.native:
            self._raw_of[id(block)] = raw
            return block
        wide = self.pool.take(block.shape, self.out_dtype)
        cast_into(block, wide)
        self.pool.give(raw)
        return wide

    def done(self, block: np.ndarray) -> None:
        """Give a block returned by ``read`` back to the pool."""
        raw = self._raw_of.pop(id(block), None)
        self.pool.give(raw if raw is not None else block)
