"""Kills sent straight to Dask workers, not through the scheduler.

For :mod:`processor.dask_link`: when the scheduler does not answer (frozen,
or cut off from this host only), the kills that go through it would leave
the runs going until it answers again or their timeouts, beside the retries
of their jobs.  :class:`DirectKills` sends :func:`~processor.dask_task.kill_on_worker`
to each worker's own ``run`` handler (what ``Client.run`` has the scheduler
call) on the link's IO loop, at most :data:`~processor.dask_connect.RPC_TIMEOUT_S`
a send, and lets a stop wait for the sends still on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future
from typing import Any, cast

from processor.dask_connect import RPC_TIMEOUT_S
from processor.dask_task import kill_on_worker


class DirectKills:
    """Kills sent straight to workers on ``loop``, in the background."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sent: list[Future[set[str]]] = []
        self._lock = threading.Lock()

    def send(self, keys_by_worker: dict[str | None, list[str]], reason: str
             ) -> Future[set[str]] | None:
        """Kill the children running these keys on their workers; the workers that
        answered, once known (None: none to tell).  Keys under ``None`` (not started on
        any worker yet) have no worker to tell."""
        started = {worker: keys for worker, keys in keys_by_worker.items() if worker is not None}
        if not started:
            return None
        sent = asyncio.run_coroutine_threadsafe(_kill_direct(started, reason), self._loop)
        with self._lock:
            self._sent = [f for f in self._sent if not f.done()] + [sent]
        return sent

    def wait(self, timeout: float) -> None:
        """Wait for the kills sent so far, at most ``timeout`` in all (each is bounded:
        the IO loop must run until they end)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sent = list(self._sent)
        for one in sent:
            with contextlib.suppress(Exception):
                one.result(timeout=max(0.0, deadline - time.monotonic()))


async def _kill_direct(keys_by_worker: dict[str, list[str]], reason: str) -> set[str]:
    """:func:`kill_on_worker` on each worker through its own ``run`` handler (what
    ``Client.run`` has the scheduler call), not through the scheduler; at most
    :data:`RPC_TIMEOUT_S` in all; the workers that ran it.  A worker this host cannot
    reach is left to the scheduler's route."""
    from distributed.core import rpc as untyped_rpc  # noqa: PLC0415 - optional extra
    from distributed.protocol.pickle import dumps as untyped_dumps  # noqa: PLC0415

    rpc, dumps = cast(Any, untyped_rpc), cast(Any, untyped_dumps)

    async def one(address: str, keys: list[str]) -> Any:
        async with rpc(address, timeout=RPC_TIMEOUT_S) as worker:
            return await worker.run(function=dumps(kill_on_worker),
                                    args=dumps((keys, reason)), kwargs=dumps({}), wait=True)

    addresses = list(keys_by_worker)
    answers = await asyncio.gather(*(asyncio.wait_for(one(address, keys_by_worker[address]),
                                                      RPC_TIMEOUT_S)
                                     for address in addresses), return_exceptions=True)
    return {address for address, answer in zip(addresses, answers, strict=True)
            if isinstance(answer, dict) and answer.get("status") == "OK"}
