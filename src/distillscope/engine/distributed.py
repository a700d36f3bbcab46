"""``analyze`` on dask.distributed: the engine's one pass as tasks over ranges of samples.

Each task opens the store (a file or a folder of shards) on its worker, builds the same plans
(plans are deterministic: the store and the options decide them) and feeds the accumulators the
rows of its range, in the engine's blocks (``executor.feed_range``); the tasks' accumulator
states (picklable) are merged pairwise, neighbours with neighbours so the samples keep their
order, in a tree of ``merge_tables`` tasks; the client finalizes and computes the metrics as a
single process would. Ranges start on whole blocks, so every block is the single-process run's
and the results equal it to float64 rounding of the merged sums (about 1e-13 relative; tested
to 1e-10). A task is pure (its range in, its states out), so a worker that dies has its tasks
rerun by dask on another, with the same result. The sample-level metrics (mutual kNN, kNN and
probe accuracy, uniformity, InfoNCE) hold their rows: the merged rows come to the client, which
runs them, in the memory ``analyze --plan`` states. Nothing here is imported unless a client or
``--scheduler`` is given (``docs/scaling.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .._errors import InputError
from ..store import open_store
from .executor import feed_range, finalize_tables, merge_tables
from .options import AnalysisOptions
from .plan import Plan, build_plan

__all__ = ["run_distributed", "scheduler_client", "partitions", "TASKS_PER_WORKER"]

#: ranges per worker: a few, so a slow or lost worker's share is small
TASKS_PER_WORKER = 4


def scheduler_client(spec: str) -> contextlib.AbstractContextManager:
    """A ``dask.distributed.Client`` for ``--scheduler``: ``local:N`` starts a ``LocalCluster``
    of ``N`` single-threaded worker processes (stopped on exit), ``tcp://HOST:PORT`` connects
    to a running scheduler (``dask-scheduler``, or ``dask-jobqueue``'s on a cluster)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler needs dask.distributed; install it with: pip install "
                         "-e '.[distributed]'") from None
    if spec.startswith("local:"):
        count = spec.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--scheduler local:N takes a number of worker processes >= 1; "
                             f"got {spec!r}")
        return _local(Client, LocalCluster, int(count))
    if spec.startswith("tcp://"):
        return Client(spec, timeout="30s")
    raise InputError(f"--scheduler must be local:N or tcp://HOST:PORT; got {spec!r}")


@contextlib.contextmanager
def _local(client_type, cluster_type, workers: int) -> Iterator:
    with cluster_type(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, client_type(cluster) as client:
        yield client


def partitions(plan: Plan, workers: int) -> list[tuple[int, int]]:
    """Ranges of samples, each a whole number of the plan's blocks, about
    ``TASKS_PER_WORKER`` per worker (fewer when there are fewer blocks)."""
    n, rows = plan.store.n_samples, plan.rows
    blocks = -(-n // rows)
    count = max(1, min(blocks, TASKS_PER_WORKER * max(1, workers)))
    bounds = [min(n, (i * blocks // count) * rows) for i in range(count)] + [n]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if lo < hi]


def _range_task(path: str, options: AnalysisOptions, start: int, stop: int) -> list:
    """A worker's task: the store opened there, the plans built again, one range fed."""
    with open_store(path, allow_incomplete=options.allow_incomplete,
                    allow_external=options.allow_external) as store:
        plans = [build_plan(store, options.for_convention(c)) for c in options.conventions()]
        return feed_range(plans, start, stop)


def run_distributed(plans: list[Plan], client,
                    options: AnalysisOptions) -> list[dict[str, dict]]:
    """``executor.run_plans`` on ``client``'s workers: each plan's finalized statistics
    (``options``: those of ``analyze``, every convention of ``plans``)."""
    first = plans[0]
    path = str(Path(first.store.path).resolve())
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    states = [client.submit(_range_task, path, options, lo, hi, pure=False)
              for lo, hi in partitions(first, workers)]
    while len(states) > 1:  # neighbours with neighbours: the samples keep their order
        states = ([client.submit(merge_tables, a, b, pure=False)
                   for a, b in zip(states[::2], states[1::2])]
                  + ([states[-1]] if len(states) % 2 else []))
    return finalize_tables(plans, states[0].result())
