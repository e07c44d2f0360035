"""What the processor does on a Dask scheduler it has just connected to.

For :mod:`processor.dask_link`, which calls :func:`prepare` on a call thread
after each connection: it warns when the scheduler may re-run a lost
worker's task (``allowed-failures`` is not 0), drops the event topics of
processors that are gone (each processor start's topic is :data:`TOPIC_PREFIX`
and a token of its own), and has the workers kill the idle job processes
those processors left (:func:`~processor.dask_task.retire`: a processor
killed, or whose stop could not tell the workers).  All best effort: a
failure changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from processor.dask_connect import RPC_TIMEOUT_S
from processor.dask_task import retire

log = logging.getLogger("spoolq.dask")

TOPIC_PREFIX = "spoolq-"
"""Every processor's event topic is named this and a token of its own."""


def prepare(client: Any, own_topic: str) -> None:
    """Warn when the scheduler may re-run a lost worker's task, drop the event topics
    of processors that are gone, and have the workers kill those processors' idle job
    processes."""
    with contextlib.suppress(Exception):
        allowed = client.run_on_scheduler(lambda dask_scheduler:
                                          dask_scheduler.allowed_failures)
        if allowed:
            log.warning("the Dask scheduler may re-run a lost worker's task "
                        "(distributed.scheduler.allowed-failures is not 0); spoolq "
                        "cancels and kills such re-runs, 0 rules them out",
                        extra={"fields": {"allowed_failures": allowed}})
    with contextlib.suppress(Exception):
        forgotten, live = client.run_on_scheduler(
            _forget_gone_topics(TOPIC_PREFIX, own_topic), callback_timeout=RPC_TIMEOUT_S)
        if forgotten:
            log.info("dropped the Dask event topics of processors that are gone",
                     extra={"fields": {"topics": forgotten}})
        if live is not None:  # None: the scheduler cannot say who is live; kill nothing
            client.run(retire, live=[*live, own_topic], callback_timeout=RPC_TIMEOUT_S)


def _forget_gone_topics(prefix: str, own: str
                        ) -> Callable[[Any], tuple[int, list[str] | None]]:
    """A function for ``Client.run_on_scheduler`` that deletes the topics named
    ``prefix...`` (but ``own``) none of whose subscribers is still connected; how many,
    and the topics named so that are left (None when it cannot tell).

    The scheduler keeps the last 1,000 events of every topic for good
    (``distributed.admin.low-level-log-length``) and has no public call to drop one,
    so a long-lived scheduler grew by up to 1 MB at every processor start.  Made here
    as a closure so that it travels by value: the scheduler need not import spoolq.
    Only the broker's private table can be cleared; on a distributed without one
    this does nothing.
    """

    def forget(dask_scheduler: Any) -> tuple[int, list[str] | None]:
        topics = getattr(getattr(dask_scheduler, "_broker", None), "_topics", None)
        if not isinstance(topics, dict):
            return 0, None
        live = set(dask_scheduler.clients)
        gone = [name for name, topic in topics.items()
                if isinstance(name, str) and name.startswith(prefix) and name != own
                and not set(getattr(topic, "subscribers", ())) & live]
        for name in gone:
            del topics[name]
        return len(gone), [name for name in topics
                           if isinstance(name, str) and name.startswith(prefix)]

    return forget
