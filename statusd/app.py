"""The aiohttp application factory: routes, middleware, and the tracker's life cycle.

``create_app(settings)`` builds everything from the settings object it is
given (nothing here reads the environment).  Start-up (in ``cleanup_ctx``)
starts the change feed, and the load of the whole spool into the index begins in
the background: the app serves meanwhile, as :mod:`statusd.indexing` says (the routes
that need the index wait for it; ``services.tracker.loading`` tells how far it is).
Shutdown ends the requests waiting for the index and closes every WebSocket (1001),
then stops the load (at its next file) or the tracker loop, the feed and the worker
threads.  Serve it with
:class:`statusd.protocol.AppRunner`, so that requests aiohttp cannot parse are
answered in the JSON error shape too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from spool.settings import Settings
from statusd import routes, writes, ws
from statusd.errors import CLIENT_FAULTS, DROPPED_CLIENTS, ClientFaults, error_middleware
from statusd.indexing import after_index, stop_waiting
from statusd.openapi import build_openapi
from statusd.origins import REACH, Reach, browser_headers, reach_middleware
from statusd.protocol import close_declined_upgrades, json_error_bodies, over_cap_middleware
from statusd.services import SERVICES, Services


def create_app(settings: Settings, *, heartbeat_s: float = 20.0,
               queue_max: int | None = None, body_timeout_s: float = 15.0
               ) -> web.Application:
    """The statusd app for one spool; raises SpoolIOError when the spool is not initialised.

    ``body_timeout_s``: how long a write's body may take to arrive (then 408)."""
    app = web.Application(middlewares=[over_cap_middleware, error_middleware,
                                       reach_middleware],
                          client_max_size=settings.statusd_max_body_bytes)
    app[REACH] = Reach.of(settings)
    app[CLIENT_FAULTS] = ClientFaults()
    app[DROPPED_CLIENTS] = ClientFaults(held_back="more clients dropped")
    app[writes.BODY_TIMEOUT] = body_timeout_s
    app[SERVICES] = Services(settings, heartbeat_s=heartbeat_s, queue_max=queue_max)
    app[routes.OPENAPI] = orjson.dumps(build_openapi())
    app[ws.SOCKETS] = ws.Sockets()
    _add_routes(app)
    app.cleanup_ctx.append(_tracking)
    app.on_shutdown.append(stop_waiting)
    app.on_shutdown.append(ws.close_all)
    app.on_response_prepare.append(json_error_bodies)
    app.on_response_prepare.append(close_declined_upgrades)
    app.on_response_prepare.append(routes.revalidate_static)
    app.on_response_prepare.append(browser_headers)
    return app


def _add_routes(app: web.Application) -> None:
    """The routes; those answered from the index (and the writes) wait for its load."""
    app.router.add_get("/", routes.dashboard)
    app.router.add_get(routes.STATIC_PREFIX + "{name}", routes.static_file)
    app.router.add_get("/healthz", routes.health)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/api/v1/openapi.json", routes.openapi)
    app.router.add_get("/api/v1/stats", routes.stats)
    app.router.add_get("/api/v1/tools", routes.tools)
    app.router.add_get("/api/v1/tasks", after_index(routes.list_tasks))
    app.router.add_post("/api/v1/tasks", after_index(writes.submit),
                        expect_handler=writes.expect_submit)
    app.router.add_get("/api/v1/tasks/{id}", after_index(routes.get_task))
    app.router.add_get("/api/v1/backtest/tasks/{id}", after_index(routes.get_task))
    app.router.add_post("/api/v1/tasks/{id}/cancel", after_index(writes.cancel),
                        expect_handler=writes.expect_act)
    app.router.add_post("/api/v1/tasks/{id}/retry", after_index(writes.retry),
                        expect_handler=writes.expect_act)
    app.router.add_get("/api/v1/ws/events", after_index(ws.events_stream))
    app.router.add_get("/api/v1/ws/tasks/{id}", after_index(ws.task_stream))
    app.router.add_get("/api/v1/ws/backtest/{id}", after_index(ws.task_stream))


async def _tracking(app: web.Application) -> AsyncIterator[None]:
    """Start the feed (before the load's scan: nothing that happens meanwhile is missed),
    then serve while the index loads and is kept current; stop everything on the way
    out.  A load that fails is told by ``tracker.loading`` (``statusd.__main__`` exits
    on it)."""
    services = app[SERVICES]
    try:
        services.tracker.start_feed()
    except BaseException:
        services.tracker.stop()
        services.close()
        raise
    try:
        async with services.tracker.running():
            yield
    finally:
        services.close()
