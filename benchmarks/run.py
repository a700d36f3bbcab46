"""Run every benchmark: ``python benchmarks/run.py [--quick] [--no-memory]``.

Each benchmark prints times as ratios against a baseline measured in the same process on the
same data (absolute times on shared machines mean little) and peak memory per method.
"""

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

import bench_alignment  # noqa: E402
import bench_analyze  # noqa: E402
import bench_conventions  # noqa: E402
import bench_extract  # noqa: E402
import bench_frequency  # noqa: E402
import bench_main_job  # noqa: E402
import bench_neighbours  # noqa: E402
import bench_spectrum  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print("# spectrum: streaming from HDF5 vs in-memory")
    bench_spectrum.main(argv)
    print()
    print("# alignment: exact linear CKA and mutual kNN")
    bench_alignment.main(argv)
    print()
    print("# frequency: band energy of feature maps")
    bench_frequency.main(argv)
    print()
    print("# analyze: every default metric against its floor")
    bench_analyze.main(argv)
    print()
    print("# conventions: every named convention in one pass against one")
    bench_conventions.main(argv)
    print()
    print("# neighbours at large n: faiss, approximate indexes, uniformity on a subsample")
    bench_neighbours.main(argv)
    print()
    print("# extract: throughput against the forward passes alone")
    bench_extract.main(argv)
    print()
    print("# the README's main job, stage by stage")
    return bench_main_job.main(argv)


if __name__ == "__main__":
    sys.exit(main())
