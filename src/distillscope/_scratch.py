"""Reusable scratch arrays for the streaming loops, lent and given back explicitly.

The engine streams every dataset through a few large temporaries per block: the block read from
the file, its float32 widening, its float64 preparation. Allocated fresh each time, a multi-MiB
array costs its first touch, because the kernel zeroes every page on the first write (about
0.07 ms per MiB on the project's machine): at 10k x 512 samples that is a tenth of a whole
eigen-spectrum (``docs/performance.md``). The pool lends an array (``take``) and gets it back
(``give``) from whoever took it; an array is lent to one borrower at a time, by construction,
with no reliance on reference counts. Free arrays are kept between runs, at most ``MAX_BYTES``
each and ``KEEP_BYTES`` in all, until ``release()``.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["ScratchPool", "POOL", "release", "widen_float16", "cast_into", "MAX_BYTES"]

#: arrays larger than this are never kept
MAX_BYTES = 256 << 20
#: free arrays kept in all
KEEP_BYTES = 1 << 30


class ScratchPool:
    """Lends uninitialised C-contiguous arrays and keeps those given back for the next borrower.

    Examples
    --------
    >>> pool = ScratchPool()
    >>> a = pool.take((4, 3), np.float64)
    >>> pool.give(a)
    >>> b = pool.take((2, 6), np.float64)  # the same memory, reshaped
    >>> bool(np.shares_memory(a, b))
    True
    """

    def __init__(self, max_bytes: int = MAX_BYTES, keep_bytes: int = KEEP_BYTES):
        self.max_bytes = max_bytes
        self.keep_bytes = keep_bytes
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []  # 1-D base arrays nobody holds
        self._lent: dict[int, np.ndarray] = {}  # id(view) -> its base

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype``, uninitialised; give it back with ``give``."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.dtype == dtype and b.size >= size]
            base = self._free.pop(min(fits, key=lambda i: self._free[i].size)) if fits else None
        if base is None:
            base = np.empty(max(size, 1), dtype=dtype)
        view = base[:size].reshape(shape)
        with self._lock:
            self._lent[id(view)] = base
        return view

    def give(self, array: np.ndarray) -> None:
        """Take back an array lent by ``take`` (the caller must not use it afterwards)."""
        with self._lock:
            base = self._lent.pop(id(array), None)
            if base is None:
                raise ValueError("ScratchPool.give: this array was not lent by this pool")
            if base.nbytes <= self.max_bytes:
                self._free.append(base)
                self._free.sort(key=lambda b: b.nbytes)
                while sum(b.nbytes for b in self._free) > self.keep_bytes:
                    self._free.pop()  # drop the largest

    def release(self) -> None:
        """Forget the free arrays (lent ones stay with their borrowers)."""
        with self._lock:
            self._free.clear()

    @property
    def kept_bytes(self) -> int:
        """Memory held by free arrays."""
        with self._lock:
            return sum(b.nbytes for b in self._free)


#: the process's pool, shared by the store reader, the engine and the frequency accumulator
POOL = ScratchPool()


def release() -> None:
    """Forget the kept arrays of the process's pool."""
    POOL.release()


def widen_float16(block: np.ndarray) -> np.ndarray:
    """``block`` as a new float32 array if it is float16 (exactly, by ``_kernels.widen_half``),
    else ``block`` itself."""
    if block.dtype != np.float16:
        return block
    out = np.empty(block.shape, np.float32)
    cast_into(block, out)
    return out


def cast_into(block: np.ndarray, out: np.ndarray) -> None:
    """Copy ``block`` into ``out`` of the same shape, converting: float16 to float32 by the exact
    numba kernel (3.4x numpy's cast), anything else by numpy."""
    from ._kernels import jit_enabled, widen_half

    if block.dtype != np.float16 or out.dtype != np.float32 or not out.flags.c_contiguous \
            or not jit_enabled():  # without the JIT the kernel would crawl; numpy is exact too
        np.copyto(out, block, casting="unsafe")
        return
    source = np.ascontiguousarray(block)
    widen_half(source.reshape(-1).view(np.uint16), out.reshape(-1))
