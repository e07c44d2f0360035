"""A Dask cluster in a process of its own, so a test can SIGKILL the scheduler.

    python cluster_proc.py PORT N_WORKERS

Prints the scheduler address once it listens, then runs until stdin closes.
The tests start it in a new session and end it with ``killpg``: scheduler,
nannies, workers and their forkservers all go at once.
"""

from __future__ import annotations

import sys

import dask
from distributed import LocalCluster


def main() -> None:
    port, n_workers = int(sys.argv[1]), int(sys.argv[2])
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                               host="127.0.0.1", scheduler_port=port,
                               dashboard_address="127.0.0.1:0")
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
