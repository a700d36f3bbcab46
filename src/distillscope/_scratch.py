"""Reusable scratch arrays for the streaming loops.

Every layer of a store is streamed through the same few large temporaries: the block read from
the file and its float64 copy. Allocated fresh for each layer, a multi-MiB array costs its first
touch, because the kernel zeroes every page on the first write (about 0.07 ms per MiB on the
project's machine): at 10k x 512 samples that is a tenth of a whole eigen-spectrum
(``docs/performance.md``). ``scratch`` hands back the array of an earlier caller instead, once
nothing refers to it any more.

An array is reused only when the pool holds the last reference to it: any view a caller keeps
(``SecondMoments.last_block``, a block yielded by ``Store.iter_chunks``) refers to it and keeps
it out of reach, so a live array is never handed out twice. One array per (purpose, dtype) is
kept between calls, at most ``MAX_BYTES`` each (in practice one block of a stream: at most
128 MiB as float64, less in the stored dtype); that memory stays allocated until ``release()``
or the end of the process.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["scratch", "release", "widen_float16", "cast_into", "MAX_BYTES"]

#: arrays larger than this are never kept
MAX_BYTES = 256 << 20

_lock = threading.Lock()
_pool: dict[tuple[str, np.dtype], np.ndarray] = {}
# references to a pooled array that is free: the pool's, the local name, getrefcount's argument
_FREE_REFS = 3


def scratch(purpose: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused when possible.

    Parameters
    ----------
    purpose : str
        Which loop asks (arrays of different purposes never replace each other in the pool).
    shape, dtype
        As for ``np.empty``.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if size * dtype.itemsize > MAX_BYTES or not hasattr(sys, "getrefcount"):
        return np.empty(shape, dtype=dtype)
    key = (purpose, dtype)
    with _lock:
        base = _pool.get(key)
        if base is None or base.size < size or sys.getrefcount(base) != _FREE_REFS:
            base = np.empty(size, dtype=dtype)
            _pool[key] = base  # an array still in use stays with its users and dies with them
        return base[:size].reshape(shape)


def release() -> None:
    """Forget the kept arrays; their memory returns once no caller refers to them."""
    with _lock:
        _pool.clear()


def widen_float16(block: np.ndarray, purpose: str = "widen") -> np.ndarray:
    """``block`` as float32 if it is float16 (exactly, by ``_kernels.widen_half``), else itself.

    The float32 copy is a scratch array of ``purpose``: valid while the caller holds it.
    """
    if block.dtype != np.float16:
        return block
    out = scratch(purpose, block.shape, np.float32)
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
