"""Counter-based random numbers, drawn where the batch lives (``[run] rng = "counter"``).

The default generator (``rng = "numpy"``) draws each sample's noise on the CPU with numpy's
PCG64, seeded by (run seed, condition, sample id). That cannot run on a GPU, and at 224 x 224
it costs 1.2 ms per image and condition on a CPU core: at thousands of images per second the
GPU waits for it (``docs/performance.md``). With ``rng = "counter"`` every random number is a
pure function of its coordinates, so it is computed by integer tensor operations on any device:

* a sample's key ``K = mix(mix(mix(seed) ^ condition key) ^ sample id)``, with ``mix`` the
  splitmix64 finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
  OOPSLA 2014) and the condition key the CRC-32 of its name, as the numpy generator's seed;
* the ``j``-th 64-bit word of that sample ``mix(K + (j + 1) * 0x9E3779B97F4A7C15)`` (modulo
  2^64; the top 24 bits make a float32 uniform in (0, 1): ``(w >> 40) + 0.5) / 2^24``;
* normals by Box-Muller from words ``2i`` and ``2i + 1``:
  ``sqrt(-2 ln u1) cos(2 pi u2)`` (float32; the largest magnitude is 5.9).

The integers are the same bit for bit on every device (torch's int64 arithmetic wraps; the
logical shifts are masked arithmetic ones); the normals differ only by the rounding of ``log``
and ``cos`` between devices (``tests/test_extract_counter.py`` checks the torch code against a
numpy evaluation in uint64 and float64). Another generator than numpy's means other noise, so
a store records ``rng`` with each condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["GOLDEN", "RNGS", "counter_normals", "counter_uniforms", "sample_keys", "splitmix64"]

#: ``[run] rng``: where and how each sample's random numbers are drawn
RNGS = ("numpy", "counter")
GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def splitmix64(z: int) -> int:
    """The splitmix64 finaliser of a Python integer (modulo 2^64)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _signed(u: int) -> int:
    """A uint64 as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


def sample_keys(seed: int, condition_key: int, sample_ids: Sequence[int]) -> list[int]:
    """Each sample's key ``mix(mix(mix(seed) ^ condition key) ^ sample id)``, as uint64."""
    base = splitmix64(splitmix64(int(seed)) ^ int(condition_key))
    return [splitmix64(base ^ (int(i) & _MASK)) for i in sample_ids]


def _shift(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's is arithmetic: mask the sign's copies)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shift(z, 30)) * _signed(_M1)
    z = (z ^ _shift(z, 27)) * _signed(_M2)
    return z ^ _shift(z, 31)


def _words(keys: Sequence[int], count: int, device) -> torch.Tensor:
    """``(len(keys), count)`` int64: word ``j`` of each sample, ``mix(K + (j + 1) GOLDEN)``."""
    k = torch.tensor([_signed(key) for key in keys], dtype=torch.int64, device=device)
    j = torch.arange(1, count + 1, dtype=torch.int64, device=device)
    return _mix(k[:, None] + j[None, :] * _signed(GOLDEN))


def counter_uniforms(keys: Sequence[int], count: int, device="cpu",
                     offset: int = 0) -> torch.Tensor:
    """``(len(keys), count)`` float32 uniforms in (0, 1) from words ``offset ..``."""
    words = _words(keys, offset + count, device)[:, offset:]
    return (_shift(words, 40).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def counter_normals(keys: Sequence[int], shape: tuple[int, ...], device="cpu") -> torch.Tensor:
    """``(len(keys), *shape)`` float32 standard normals (Box-Muller from words 2i, 2i + 1),
    a few samples at a time (at most 2^24 words, 128 MiB of int64, in flight)."""
    count = math.prod(shape)
    step = max(1, (1 << 23) // max(count, 1))
    out = torch.empty((len(keys), count), dtype=torch.float32, device=device)
    for start in range(0, len(keys), step):
        u = counter_uniforms(keys[start:start + step], 2 * count, device)
        radius = torch.sqrt(-2.0 * torch.log(u[:, 0::2]))
        out[start:start + step] = radius * torch.cos((2.0 * math.pi) * u[:, 1::2])
    return out.reshape(len(keys), *shape)
