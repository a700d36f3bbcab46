"""Band energy of feature maps streamed from a store, against a plain numpy version and the floor.

n maps of c x h x w (default 10k x 256 x 14 x 14, float32 store), timed in this process:

* ``floor``: a bare real FFT (``scipy.fft.rfft2``) of the same arrays in memory, nothing else.
* ``plain numpy``: ``np.fft.fft2`` in float64, ``|F|^2`` averaged over samples and channels, bands
  by ``np.bincount`` over the radius: the obvious implementation, on the arrays in memory.
* ``distillscope streamed``: ``SpectrumAccumulator`` fed block by block from the HDF5 store
  (checksums verified), band fractions at the end; also from a float16 copy of the store.

Peak memory: VmHWM growth of a fresh process per method.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import distillscope as ds
from distillscope.metrics import frequency as fr
from _common import arguments, best_time, peak_memory as _peak

LAYER = ("student", "clean", "conv")


def make_store(path: Path, n: int, c: int, h: int, w: int, seed: int = 0,
               dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    with ds.StoreWriter(path, sample_ids=np.arange(n), overwrite=True) as writer:
        writer.add_condition("clean")
        writer.add_model("student", role="student", architecture="bench")
        layer = writer.create_layer(*LAYER, (c, h, w), dtype=dtype)
        for start in range(0, n, 500):
            m = min(500, n - start)
            layer.append(rng.standard_normal((m, c, h, w), dtype=np.float32).astype(dtype))
    return path


def load(path: Path) -> np.ndarray:
    with ds.open_store(path) as st:
        return st.read(st.layers(*LAYER[:2])[LAYER[2]])


def floor(maps: np.ndarray) -> None:
    import scipy.fft

    step = max(1, (64 << 20) // (maps[0].nbytes * 2))
    for start in range(0, maps.shape[0], step):
        scipy.fft.rfft2(maps[start:start + step], workers=-1)


def plain(maps: np.ndarray) -> dict:
    h, w = maps.shape[2:]
    total = np.zeros((h, w))
    step = max(1, (64 << 20) // (maps[0].nbytes * 4))
    for start in range(0, maps.shape[0], step):
        f = np.fft.fft2(maps[start:start + step].astype(np.float64), norm="ortho")
        total += (np.abs(f) ** 2).sum(axis=(0, 1))
    rho = fr.normalised_radius(h, w).ravel()
    which = np.digitize(rho, [1 / 3, 2 / 3])
    power = total.ravel().copy()
    power[0] = 0.0
    sums = np.bincount(which, weights=power, minlength=3)
    return dict(zip(fr.BANDS, sums / sums.sum()))


def streamed(path: Path) -> dict:
    with ds.open_store(path) as st:
        info = st.layers(*LAYER[:2])[LAYER[2]]
        acc = fr.SpectrumAccumulator(info.shape[2:])
        for _, block in st.iter_chunks(info):
            acc.update(block)
        return fr.band_fractions(acc.mean_power())


def streamed_float16(path: Path) -> dict:
    """``streamed`` on a float16 copy of the store (half the bytes to read)."""
    return streamed(path.with_name(path.stem + "_f16.h5"))


METHODS = {"floor (bare rfft2)": ("memory", floor),
           "plain numpy (fft2 + bincount)": ("memory", plain),
           "distillscope streamed": ("store", streamed),
           "distillscope, float16 store": ("store", streamed_float16)}


def peak_memory(method: str, path: Path) -> float:
    return _peak("bench_frequency", "METHODS", method, path,
                 "b.streamed(b.make_store(path.with_name('warm.h5'), 4, 2, 4, 4))")


def run(n, c, h, w, repeats, memory, folder: Path) -> str:
    streamed(make_store(folder / "warm.h5", 4, 2, 4, 4))  # compile the kernel
    path = make_store(folder / "maps.h5", n, c, h, w)
    make_store(folder / "maps_f16.h5", n, c, h, w, dtype=np.float16)
    maps = load(path)
    base = best_time(floor, maps, repeats)
    lines = [f"## band energy, n = {n} maps of {c} x {h} x {w}, float32",
             f"{'method':<32} {'time':>9} {'vs floor':>9} {'peak MiB':>9}  low / mid / high"]
    results = {}
    for name, (kind, fn) in METHODS.items():
        arg = maps if kind == "memory" else path
        t = base if fn is floor else best_time(fn, arg, repeats)
        value = fn(arg)
        results[name] = t
        mem = peak_memory(name, path) if memory else float("nan")
        shown = "" if value is None else " / ".join(f"{v:.6f}" for v in value.values())
        lines.append(f"{name:<32} {t:8.3f}s {t / base:8.2f}x {mem:9.1f}  {shown}")
    lines.append(f"distillscope streamed is {results['plain numpy (fft2 + bincount)'] / results['distillscope streamed']:.2f}x "
                 "faster than plain numpy")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=2)
    args = p.parse_args(argv)
    n, c = (200, 32) if args.quick else (10_000, 256)
    with tempfile.TemporaryDirectory() as folder:
        print(run(n, c, 14, 14, args.repeats, not args.no_memory, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
