"""Fixtures for scale-out: spools, processor daemons, and real Dask clusters on 127.0.0.1.

The daemon kit of ``tests/processor`` runs ``python -m processor`` as a real
subprocess; here it loads ``dask_tools`` (this folder is put on its
``PYTHONPATH``).  Every daemon and cluster started here is stopped by the
fixture that started it, by pid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scalekit import HERE, Daemon, make_spool, run_daemons


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    make_spool(root)
    return root


@pytest.fixture
def daemon(spool_root: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start processors on ``spool_root`` (dask_tools loaded); all are killed at teardown."""
    yield from run_daemons(spool_root, tmp_path,
                           functools.partial(Daemon, tools="dask_tools", tools_dir=HERE))


NANNY_ONLY = {"distributed.deploy.lost-worker-timeout": "24h"}
"""Held while a module's cluster runs: its nannies alone bring killed workers back.

``SpecCluster`` (``LocalCluster``) sets a timer, ``lost-worker-timeout`` (15 s) long,
at each worker's removal; when it fires and no worker of that name is registered,
the cluster closes that name's nanny for good.  It does not check that the worker
came back meanwhile: a worker killed by one test and killed again by a later one
while restarting when that timer fired (a restart takes ~0.5 s idle, ~5 s at load
7) never came back: "Only 1/2 workers arrived after 30 s" in test_dask_executor.py,
where two tests ~15 s apart kill a worker.
"""


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[object]:
    """A real ``LocalCluster``: 2 worker processes, 1 thread each, no silent re-runs."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set(NANNY_ONLY):  # read at each removal: for the cluster's whole life
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(n_workers=2, processes=True,
                                               threads_per_worker=1, host="127.0.0.1",
                                               scheduler_port=0,
                                               dashboard_address="127.0.0.1:0")
        try:
            yield cluster
        finally:
            cluster.close(timeout=30)


@pytest.fixture(scope="module")
def dask_client(dask_cluster: object) -> Iterator[object]:
    """A test-side client, to find and kill the workers that run a job."""
    distributed = pytest.importorskip("distributed")
    client = distributed.Client(dask_cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close(timeout=30)
