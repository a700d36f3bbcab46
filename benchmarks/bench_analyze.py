"""A full ``analyze`` against its floor, on the store of the engine issue.

The store: a 768-d teacher and 4 students of 512-d (two families of two seeds), 20,000 samples,
3 conditions (clean and two Gaussian-noise levels), float16 embeddings (about 330 MiB), no labels.
Timed in this process, best of ``--repeats``:

* ``floor``: what any one-pass analysis of every default metric must do, and nothing else: read
  every dataset once block by block (checksums verified), the moment GEMMs (``Z^T Z`` per
  representation, float64), the cross-moment GEMMs (``X^T Y`` per teacher-student and
  clean-condition pair), and one blocked similarity GEMM per representation (the upper tiles of
  ``Z Z^T``, float32) -- the same blocks and tiles as the engine.
* ``distillscope analyze``: every default metric, results assembled.

It prints the ratio, the share of each stage of the analysis (the pass, the similarity passes,
then each metric family), the bytes read (``rchar``) against the store's size, and peak memory.
``--quick`` runs a 1,000-sample store (a smoke test).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import distillscope as ds
from _common import arguments, status_mib

STUDENTS = (("s_small_0", "small", 0, 24), ("s_small_1", "small", 1, 24),
            ("s_big_0", "big", 0, 40), ("s_big_1", "big", 1, 40))


def make_store(path: Path, n: int, seed: int = 0, *, split: bool = False) -> Path:
    """The benchmark store: structured features (a shared latent, teacher richer than students).
    ``split``: with 10 labels (the sign pattern of the first latent directions) and a train/test
    split of 5:1 (CIFAR-10's), so probes are fitted and test-split conventions run as designed."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 128)) * np.arange(1, 129) ** -0.6
    mix = rng.standard_normal((128, 768)) / 10
    labels = splits = None
    if split:
        labels = (np.floor(latent[:, 0] * 4).astype(np.int64) % 5) * 2 + (latent[:, 1] > 0)
        splits = np.where(np.arange(n) % 6 == 5, "test", "train")
    with ds.StoreWriter(path, sample_ids=np.arange(n), labels=labels, splits=splits,
                        overwrite=True) as w:
        for name, sigma in (("clean", 0.0), ("gauss_0.1", 0.1), ("gauss_0.2", 0.2)):
            if sigma:
                w.add_condition(name, kind="gaussian_noise", space="normalized", sigma=sigma)
            else:
                w.add_condition(name, kind="clean")
        w.add_model("teacher", role="teacher", architecture="bench teacher", n_params=86_000_000)
        for name, family, s, _ in STUDENTS:
            w.add_model(name, role="student", architecture=f"bench {family}", n_params=1_000_000,
                        family=family, seed=s)
        for c, sigma in (("clean", 0.0), ("gauss_0.1", 0.1), ("gauss_0.2", 0.2)):
            x = latent + sigma * rng.standard_normal(latent.shape)
            t = x @ mix + 0.05 * rng.standard_normal((n, 768))
            w.write_layer("teacher", c, "embedding", t.astype(np.float16))
            for name, _, s, keep in STUDENTS:
                r = np.random.default_rng([seed, s, keep])
                e = x[:, :keep] @ r.standard_normal((keep, 512)) / np.sqrt(keep)
                e += (0.02 + 0.1 * sigma) * r.standard_normal((n, 512))
                w.write_layer(name, c, "embedding", e.astype(np.float16))
    return path


def floor(path: Path, rows: int, tile: int = 512) -> None:
    """Reads, moment and cross-moment GEMMs, one blocked similarity GEMM per representation."""
    with ds.open_store(path) as st:
        infos = {(i.model, i.condition): i for i in st.entries()}
        readers = {k: st.reader(i) for k, i in infos.items()}
        n = st.n_samples
        teacher = next(m for m in st.models if st.models[m].role == "teacher")
        pairs = [((teacher, c), (m, c)) for (m, c) in infos if m != teacher]
        pairs += [((m, "clean"), (m, c)) for (m, c) in infos if c != "clean"]
        moments = {k: 0.0 for k in infos}
        cross = {p: 0.0 for p in pairs}
        held = {k: np.empty((n, i.shape[1]), np.float32) for k, i in infos.items()}
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            z = {}
            for k, reader in readers.items():
                block = reader.read(start, stop)
                held[k][start:stop] = block
                z[k] = block.astype(np.float64)
                reader.done(block)
                moments[k] = moments[k] + z[k].T @ z[k]
            for a, b in pairs:
                cross[(a, b)] = cross[(a, b)] + z[a].T @ z[b]
        out = np.empty((tile, tile), np.float32)
        for rows_held in held.values():
            for a in range(0, n, tile):
                for b in range(a, n, tile):
                    x, y = rows_held[a:a + tile], rows_held[b:b + tile]
                    np.matmul(x, y.T, out=out[:x.shape[0], :y.shape[0]])


def analyze(path: Path) -> tuple[object, dict[str, float]]:
    """The full analysis, stage by stage (the engine's own functions, as ``ds.analyze`` runs)."""
    from distillscope.engine.assemble import assemble
    from distillscope.engine.executor import run
    from distillscope.engine.finalize import compute_values
    from distillscope.engine.options import AnalysisOptions
    from distillscope.engine.plan import build_plan

    stages = {}
    with ds.open_store(path) as st, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        plan = build_plan(st, AnalysisOptions())
        stats = run(plan)
        stages["one pass (read, pool, prepare, accumulate)"] = time.perf_counter() - start
        values = compute_values(plan, stats)
        stages.update(values.timings)
        start = time.perf_counter()
        results = assemble(plan, values)
        stages["assemble"] = time.perf_counter() - start
    return results, stages, plan.rows


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar")).split()[1])


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=2)
    args = p.parse_args(argv)
    n = 1000 if args.quick else 20_000
    with tempfile.TemporaryDirectory() as folder:
        path = make_store(Path(folder) / "bench.h5", n)
        size = path.stat().st_size
        analyze(make_store(Path(folder) / "warm.h5", 300))  # compile the kernels first
        best = {"floor": np.inf, "analyze": np.inf}
        stages, rows, read = None, None, None
        for _ in range(args.repeats):
            gc.collect()
            before, t = _rchar(), time.perf_counter()
            _, took, rows = analyze(path)
            elapsed = time.perf_counter() - t
            if elapsed < best["analyze"]:
                best["analyze"], stages, read = elapsed, took, _rchar() - before
            gc.collect()
            t = time.perf_counter()
            floor(path, rows)
            best["floor"] = min(best["floor"], time.perf_counter() - t)
        peak = status_mib("VmHWM")
    print(f"## full analyze, {n} samples: teacher 768-d + 4 students 512-d x 3 conditions, "
          f"float16 ({size / 2**20:.0f} MiB), blocks of {rows}")
    print(f"{'floor (reads, moment + cross GEMMs, similarity GEMMs)':<58} {best['floor']:8.2f}s  1.00x")
    print(f"{'distillscope analyze (every default metric)':<58} {best['analyze']:8.2f}s "
          f"{best['analyze'] / best['floor']:5.2f}x")
    print(f"bytes read: {read / 2**20:.0f} MiB = {read / size:.2f}x the store; peak RSS "
          f"{peak:.0f} MiB")
    print("share of the analysis by stage:")
    total = sum(stages.values())
    for name, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {name:<50} {seconds:7.2f}s {100 * seconds / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
