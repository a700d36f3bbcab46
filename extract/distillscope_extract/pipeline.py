"""The input pipeline: each batch read once, each model input built once, every model fed.

For one batch of samples the uint8 images are read (and decoded, for an image folder) once. For
each condition, each *distinct* preprocessing builds its model input once: the pixels move to
the device, where the resize, the normalisation and the condition run; every model with that
preprocessing then runs on that very tensor. With ``k`` models sharing one preprocessing (the
embedded default and arXiv 2603.06698 feed every model one pipeline) the input work is ``k``
times smaller than building it per model, and the features are the same bit for bit, since each
input is the same function of the same pixels (``tests/test_extract.py``).

With ``workers > 0`` whole batches are built ahead in threads while the models run on earlier
ones: reading, PIL's decoding, numpy's generators and torch's kernels release the GIL, and a
thread shares the decoded batch with no copy (a process would pickle it). On CUDA the uint8
pixels go through pinned memory with non-blocking copies. Every random draw is seeded by (run
seed, condition, sample id) (``conditions.py``), so the order of work never changes a feature.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .conditions import Condition
from .data import ImageData
from .preprocess import Preprocessing

__all__ = ["Batch", "Need", "build_batches", "memory_format"]

#: what one batch must provide: (preprocessing, condition) pairs
Need = tuple[tuple[Preprocessing, Condition], ...]


@dataclass
class Batch:
    """The inputs of samples ``start:stop``, one per (preprocessing, condition name)."""

    start: int
    stop: int
    inputs: dict[tuple[Preprocessing, str], torch.Tensor]

    def input(self, prep: Preprocessing, condition: Condition) -> torch.Tensor:
        return self.inputs[prep, condition.name]


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` when asked (NHWC convolutions: faster on most CPUs and on
    tensor cores; the same features within float rounding), else the default layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


def _pixels(data: ImageData, start: int, stop: int, device: str) -> list[np.ndarray] | torch.Tensor:
    """The uint8 images of one batch: on CUDA, one pinned (k, h, w, 3) tensor when they share
    a size (copied to the device without blocking); else numpy arrays."""
    images = data.images(start, stop)
    if device != "cuda" or not images or any(im.shape != images[0].shape for im in images):
        return images
    return torch.from_numpy(np.stack(images)).pin_memory()


def build_batches(data: ImageData, starts: Iterable[int], batch_size: int,
                  needs: Callable[[int], Need], *, seed: int, device: str, workers: int = 0,
                  channels_last: bool = False) -> Iterator[Batch]:
    """The batches starting at ``starts``, each with the inputs ``needs(start)`` asks for.

    Parameters
    ----------
    data : ImageData
        The samples, in store order.
    starts : iterable of int
        First sample of each batch (multiples of ``batch_size``).
    needs : callable
        ``needs(start)``: the (preprocessing, condition) pairs some model still needs there.
    seed : int
        The run seed of every condition's draws.
    device : str
        Where the inputs are built and left.
    workers : int
        Threads building batches ahead (0: in the calling thread, as the models run).
    channels_last : bool
        Leave the inputs in NHWC memory layout.
    """
    n, fmt = len(data), memory_format(channels_last)

    def build(start: int) -> Batch:
        stop = min(n, start + batch_size)
        pixels, ids = _pixels(data, start, stop, device), data.ids[start:stop]
        inputs = {}
        for prep, condition in needs(start):
            x = prep(pixels, condition, ids, seed, device=device)
            inputs[prep, condition.name] = x.contiguous(memory_format=fmt)
        return Batch(start, stop, inputs)

    if workers == 0:
        yield from map(build, starts)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="distillscope-inputs") as pool:
        pending: deque = deque()
        try:
            for start in starts:
                pending.append(pool.submit(build, start))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a failed or abandoned run: the threads stop after their current batch
            for future in pending:
                with contextlib.suppress(Exception):
                    future.cancel()
