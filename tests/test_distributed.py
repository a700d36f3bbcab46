"""``analyze`` on dask.distributed (``distillscope.engine.distributed``): the same results as one
process on the multi-student benchmark store, a killed worker included; each test starts and
stops its own ``LocalCluster``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import distillscope as ds
from distillscope.cli import main

distributed = pytest.importorskip("dask.distributed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_analyze import make_store  # noqa: E402

TWO = ("clean", "gauss_0.1")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The engine's benchmark store (a 768-d teacher, 4 students of 512-d in two families,
    3 conditions), 1,200 samples with labels and a split, and its single-process results
    over two of the conditions (a third of the time)."""
    path = make_store(tmp_path_factory.mktemp("dist") / "bench.h5", 1200, split=True)
    return path, ds.analyze(path, rows=256, conditions=TWO)


def _same(a, b, rtol=1e-10):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_local_cluster_equals_one_process(bench, tmp_path, capsys):
    path, single = bench
    out = tmp_path / "r.nc"
    assert main(["analyze", str(path), "-o", str(out), "--rows", "256", "--conditions", *TWO,
                 "--scheduler", "local:2", "-q"]) == 0
    assert "wrote" in capsys.readouterr().out
    _same(single, ds.load_results(out))


def test_a_worker_killed_mid_analysis_gives_the_same_result(bench):
    path, single = bench
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = []

        def kill_one_when_busy():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.3)  # inside a task
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one_when_busy)
        killer.start()
        again = ds.analyze(path, rows=256, conditions=TWO, client=client)
        killer.join()
    assert killed, "no worker was killed"
    _same(single, again)


def test_scheduler_errors_are_one_line_and_plain_analyze_starts_no_dask(bench, tmp_path,
                                                                        capsys):
    path, _ = bench
    assert main(["analyze", str(path), "-o", str(tmp_path / "r.nc"), "--scheduler",
                 "local:none"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--scheduler local:N" in err
    code = ("import sys, warnings, distillscope as ds; warnings.simplefilter('ignore');"
            f"ds.analyze({str(path)!r}, metrics='erank_variance');"
            "print('distributed' in sys.modules, 'distillscope.engine.distributed' in "
            "sys.modules)")  # (xarray imports dask itself, when installed, to know its arrays)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False False"
