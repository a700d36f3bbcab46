"""Coverage of the bootstrap intervals: how often the 95% interval holds the true value.

Gaussian features with a known covariance spectrum (``lam_i = i^-1``, d = 32, teacher) and a
student that is a known linear map of the teacher plus noise (d = 16), so the population
effective rank, participation ratio and linear CKA are known in closed form. Each repetition
writes a fresh store of ``n`` samples, runs ``distillscope.analyze(bootstrap=200)`` (the engine's
own code path: groups by sample id, replicates of the accumulated sums) and checks whether the
interval holds the population value. Also printed: the mean bias of the estimate (estimate
minus truth) next to the mean interval width, so a biased estimator is seen for what it is.
Not part of the test suite (minutes); ``--quick`` runs 40 repetitions at n = 1,000.

    python benchmarks/interval_coverage.py [--repetitions 400] [--interval percentile|bca]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import distillscope as ds

D_TEACHER, D_STUDENT = 32, 16
METRICS = ("erank_variance", "participation_ratio", "linear_cka")


def population():
    """Covariances of the teacher x ~ N(0, diag(lam)) and the student y = x A + e."""
    lam = 1.0 / np.arange(1, D_TEACHER + 1)
    a = np.random.default_rng(99).standard_normal((D_TEACHER, D_STUDENT)) / np.sqrt(D_TEACHER)
    noise = 0.05
    sxx = np.diag(lam)
    sxy = sxx @ a
    syy = a.T @ sxx @ a + noise * np.eye(D_STUDENT)
    p = lam / lam.sum()
    truth = {"erank_variance": float(np.exp(-(p * np.log(p)).sum())),
             "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
             "linear_cka": float((sxy**2).sum() / np.sqrt((sxx**2).sum() * (syy**2).sum()))}
    return lam, a, noise, truth


def one_run(folder: Path, n: int, rep: int, interval: str, replicates: int, groups: int):
    lam, a, noise, truth = population()
    rng = np.random.default_rng([n, rep])
    x = rng.standard_normal((n, D_TEACHER)) * np.sqrt(lam)
    y = x @ a + np.sqrt(noise) * rng.standard_normal((n, D_STUDENT))
    path = folder / "simulated.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(n) + rep * 10**7, overwrite=True) as w:
        w.add_condition("clean", kind="clean")
        w.add_model("teacher", role="teacher", architecture="gaussian", n_params=1)
        w.add_model("student", role="student", architecture="gaussian", n_params=1)
        w.write_layer("teacher", "clean", "e", x)
        w.write_layer("student", "clean", "e", y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ds.analyze(path, metrics=",".join(METRICS), bootstrap=replicates,
                       interval=interval, bootstrap_seed=rep,
                       bootstrap_groups=groups)
    out = {}
    for m in ("erank_variance", "participation_ratio"):
        est = float(r.effective_rank.sel(model="teacher", estimator=m).values.ravel()[0])
        lo, hi = r.effective_rank_ci.sel(model="teacher", estimator=m).values.ravel()
        out[m] = (est, lo, hi)
    est = float(r.linear_cka.values.ravel()[0])
    lo, hi = r.linear_cka_ci.values.ravel()
    out["linear_cka"] = (est, lo, hi)
    return {m: (e, lo, hi, lo <= truth[m] <= hi) for m, (e, lo, hi) in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repetitions", type=int, default=400)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--interval", default="jackknife", choices=("jackknife", "bca", "percentile"))
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    reps, sizes = args.repetitions, [int(s) for s in args.sizes.split(",")]
    if args.quick:
        reps, sizes = 40, [1000]
    truth = population()[3]
    print(f"## coverage of {args.interval} 95% intervals, group bootstrap B = "
          f"{args.replicates}, G = {args.groups}; {reps} repetitions (Monte Carlo s.e. "
          f"{100 * np.sqrt(0.95 * 0.05 / reps):.1f} points)")
    print("| metric | n | true value | coverage | mean bias (estimate - truth) | "
          "mean interval width |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            start = time.perf_counter()
            runs = [one_run(Path(tmp), n, i, args.interval, args.replicates,
                            args.groups) for i in range(reps)]
            for m in METRICS:
                rows = np.array([r[m] for r in runs], dtype=float)
                cover = 100 * rows[:, 3].mean()
                bias = np.mean(rows[:, 0] - truth[m])
                width = np.mean(rows[:, 2] - rows[:, 1])
                print(f"| {m} | {n:,} | {truth[m]:.4f} | {cover:.1f}% | {bias:+.4f} | "
                      f"{width:.4f} |", flush=True)
            print(f"<!-- n = {n}: {time.perf_counter() - start:.0f} s -->", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
