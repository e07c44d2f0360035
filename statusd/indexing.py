"""What statusd answers while it loads its index at start (it listens from the start).

The load of a large spool takes seconds (7 to 10 s at 20,000 to 124,000 records); statusd
bound its port only after it, so a restart was that long of refused connections for
monitoring and the dashboard.  It now listens at once, and until the index is whole
(:class:`statusd.loading.Loading`) it answers as follows, never from a half-built index:

* ``/healthz``: 503 ``{"status": "indexing", "indexed": 0, "indexing": {phase, found,
  loaded, elapsed_s}}`` at once (:func:`health_while_loading`);
* ``/api/v1/stats`` and ``/metrics``: the spool's figures as the start's scan found
  them (:class:`statusd.loading.ScanFigures`: counts, ages, the last minute's records;
  the stats say so in ``statusd.indexing``, with ``counts_at``); while the scan itself
  runs (the first second or so at 100,000 records) the stats answer 503 ``indexing``
  and the metrics statusd's own gauges only (a 503 reads as ``up`` 0 to Prometheus);
* every route that answers from the index (the list, one task, the WebSockets) and the
  writes, which show what they did through it: :func:`after_index` holds the request
  until the index is in, up to :data:`INDEX_WAIT_S`, then answers 503 ``indexing``
  with ``Retry-After`` and how far the load is.  A write is held before it does
  anything, so a 503 never follows a write that was made (a client would repeat it);
* the dashboard page, its files and the OpenAPI document: at once.

Why wait first, and how long: a client that asks while statusd restarts (a script
polling a task, the dashboard opening its streams) gets its answer late rather than an
error to handle, and the load usually ends within the wait.  The wait stays under the
5 s read timeout of common HTTP clients (httpx's default), so such a client gets the 503
and its Retry-After rather than its own timeout; a stop ends every wait at once
(:func:`stop_waiting`: 503 ``unavailable``, "statusd is stopping").

Why /healthz says 503: it already answers 503 whenever statusd's answers would not show
the spool as it is (``spool_missing``, ``spool_unreadable``), so it means "statusd serves
a true view of the spool", which an indexing statusd does not yet (no list, no task
stream).  A load balancer then sends users to a statusd that can serve them, and a
deploy script (``spoolq demo``, an ops check) waits for the 200.  It answers at once all
the same, saying ``indexing`` and how far: a monitor tells a start from a statusd down
(refused) or hung (no answer).  A probe that takes any 503 for a failure (Kubernetes'
liveness probe) must allow for the load's time, as it had to for the refused connections
before.  Its 200 body is as it always was.
"""

from __future__ import annotations

import functools

import orjson
from aiohttp import web

from statusd.errors import ApiError, Handler
from statusd.loading import Loading, Phase
from statusd.services import SERVICES, Services

INDEX_WAIT_S = 4.0
"""How long a request that needs the index waits for it before its 503."""
RETRY_AFTER_S = 1
"""The Retry-After of an ``indexing`` 503."""


def after_index(handler: Handler) -> Handler:
    """``handler``, answered once the index is loaded (see the module's docstring)."""

    @functools.wraps(handler)
    async def once_indexed(request: web.Request) -> web.StreamResponse:
        loading = request.app[SERVICES].tracker.loading
        if not loading.ready and not await loading.wait(INDEX_WAIT_S):
            raise not_indexed(loading)
        return await handler(request)

    return once_indexed


def not_indexed(loading: Loading) -> ApiError:
    """The 503 of a request that needs the index, while it is not loaded."""
    if loading.phase is Phase.STOPPED:
        return ApiError(503, "unavailable", "statusd is stopping")
    if loading.phase is Phase.FAILED:
        return ApiError(503, "unavailable", f"statusd could not index the spool "
                        f"({loading.error}); it stops")
    return ApiError(503, "indexing", f"statusd is indexing the spool ({loading.describe()}); "
                    "try again", {"Retry-After": str(RETRY_AFTER_S)})


def require_figures(services: Services) -> None:
    """503 ``indexing`` while nothing is known of the spool yet (the start's scan runs):
    the stats and the metrics are answered from the index, or from that scan."""
    loading = services.tracker.loading
    if not loading.knows_spool:
        raise not_indexed(loading)


def health_while_loading(loading: Loading) -> web.Response:
    """``/healthz`` until the index is loaded: 503 ``indexing`` and how far (see the
    module's docstring for why a 503)."""
    body = {"status": "indexing", "indexed": 0, "indexing": loading.as_json()}
    return web.Response(body=orjson.dumps(body), status=503, content_type="application/json",
                        headers={"Retry-After": str(RETRY_AFTER_S)})


async def stop_waiting(app: web.Application) -> None:
    """on_shutdown: the requests waiting for the index answer at once (statusd stops),
    and a load still running gives up at its next file."""
    app[SERVICES].tracker.loading.stop()
