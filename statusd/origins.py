"""Who may reach statusd from a browser: its own pages, and origins named for it.

Reads need no token, and "keep statusd on loopback" is the advice; but a browser on the
same host reaches loopback for any page it shows.  Two ways such a page read the spool
(QA): a WebSocket from another origin (``ws://127.0.0.1:8000/api/v1/ws/tasks/...`` opened
by a page on another site or port: browsers apply no same-origin policy to WebSockets,
they only send ``Origin``), and DNS rebinding (a site's name pointed at 127.0.0.1, so its
page reads the REST API as its own origin: its requests carry ``Host: that-site``).

So, with :class:`Reach` built from the settings:

* a WebSocket handshake that carries an ``Origin`` must come from statusd's own origin
  (the ``Origin``'s host and port are the request's ``Host``) or from one named in
  ``STATUSD_ALLOWED_ORIGINS`` (``*``: any); clients other than browsers send none and
  are let in;
* bound to a loopback address, statusd answers only requests whose ``Host`` names a
  loopback address (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or the host of
  an origin named in ``STATUSD_ALLOWED_ORIGINS`` (a reverse proxy that passes its own
  host name on); a request with no ``Host`` (HTTP/1.0) comes from no browser.

Each refusal is a 403 ``forbidden`` that says what to set.  Writes need the bearer
token, which no cross-origin page can send without a preflight that statusd does not
answer.

Framing is the third way (:func:`browser_headers`): the dashboard's task view cancels and
retries, and a page of another site could show it in a frame of its own, under a
decoy that takes the user's clicks.  Every answer says the dashboard may be framed only
by its own origin and those named in ``STATUSD_ALLOWED_ORIGINS``, and that the page runs
its own files only (a Content-Security-Policy: a record's strings the page shows can
never run as script, whatever a later change of the page did with them).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from spool.settings import Settings, allowed_origins, origin_of
from statusd.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(authority: str) -> str | None:
    """The host of ``authority`` (``host[:port]``, an IPv6 address in brackets), lower
    case, without a trailing dot; None when it is no such thing."""
    try:
        parts = urlsplit("//" + authority)
        parts.port  # noqa: B018 - a port that is no number raises here
    except ValueError:
        return None
    if parts.username is not None:
        return None  # user info: no browser sends it in a Host
    return (parts.hostname or "").rstrip(".") or None


def is_loopback(host: str) -> bool:
    """``localhost`` and its subdomains (browsers send them to loopback themselves), and
    loopback addresses (127.0.0.0/8, ::1, an IPv4-mapped 127.x)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def bound_to_loopback(host: str) -> bool:
    """Every address ``host`` (STATUSD_HOST) stands for is a loopback one: a name too
    (the machine's own, in /etc/hosts), which its spelling alone did not tell."""
    if is_loopback(host):
        return True
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(is_loopback(str(info[4][0])) for info in found)


def same_authority(origin: str, host_header: str) -> bool:
    """``origin`` (as :func:`spool.settings.origin_of` gives it) names the host and port
    of ``host_header``, a default port written out or not."""
    scheme = origin.partition("://")[0]
    return origin_of(f"{scheme}://{host_header.strip()}") == origin


@dataclass(frozen=True, slots=True)
class Reach:
    """What :func:`reach_middleware` and the WebSocket handshake let in."""

    guard_host: bool  # bound to loopback: the Host must name it
    origins: frozenset[str]
    any_origin: bool
    hosts: frozenset[str]
    """Names let in as a Host besides loopback ones: the origins' hosts, STATUSD_HOST,
    this machine's name."""
    page_headers: Mapping[str, str]
    """What every answer carries for browsers (:func:`browser_headers`)."""

    @classmethod
    def of(cls, settings: Settings) -> Reach:
        origins = allowed_origins(settings.statusd_allowed_origins)
        named = frozenset(o for o in origins if o != "*")
        hosts = {h for o in named if (h := host_name(o.split("://")[1]))}
        hosts.update(h for h in (host_name(settings.statusd_host),
                                 host_name(socket.gethostname())) if h)
        any_origin = "*" in origins
        return cls(guard_host=bound_to_loopback(settings.statusd_host), origins=named,
                   any_origin=any_origin, hosts=frozenset(hosts),
                   page_headers=_page_headers(named, any_origin=any_origin))

    def host_refused(self, request: web.Request) -> str | None:
        """Why ``request``'s Host is refused; None when it is let in."""
        if not self.guard_host or self.any_origin:
            return None
        given = request.headers.get(hdrs.HOST)
        if given is None:
            return None
        host = host_name(given)
        if host is not None and (is_loopback(host) or host in self.hosts):
            return None
        return (f"Host {given!r} is not this statusd's: bound to loopback, it answers "
                "requests for localhost, loopback addresses and this machine's name (a "
                "page on another name resolved to this host reads nothing); name the "
                "origin a proxy serves it at in STATUSD_ALLOWED_ORIGINS")

    def origin_refused(self, request: web.Request) -> str | None:
        """Why a WebSocket handshake's Origin is refused; None when it is let in."""
        given = request.headers.get(hdrs.ORIGIN)
        if given is None or self.any_origin:
            return None
        origin = origin_of(given)
        if origin is not None and (origin in self.origins or same_authority(
                origin, request.headers.get(hdrs.HOST, ""))):
            return None
        return (f"a WebSocket from Origin {given!r} is refused: pages of other origins "
                "read nothing here; name it in STATUSD_ALLOWED_ORIGINS to let it in")

    def check_origin(self, request: web.Request) -> None:
        if (why := self.origin_refused(request)) is not None:
            raise ApiError(403, "forbidden", why)


def _page_headers(origins: frozenset[str], *, any_origin: bool) -> Mapping[str, str]:
    """:attr:`Reach.page_headers` for the origins named in ``STATUSD_ALLOWED_ORIGINS``."""
    framers = "*" if any_origin else " ".join(["'self'", *sorted(origins)])
    headers = {
        # The page's own scripts, style and API (WebSockets to its own host and port
        # included: 'self' covers ws: and wss: there); its icon is a data: URL.
        "Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data:; object-src 'none'; "
            f"base-uri 'none'; form-action 'self'; frame-ancestors {framers}"),
        "X-Content-Type-Options": "nosniff",  # a record's text is never taken for a page
        "Referrer-Policy": "no-referrer",  # a task's address stays here
    }
    if not origins and not any_origin:
        headers["X-Frame-Options"] = "SAMEORIGIN"  # frame-ancestors, for older browsers
    return MappingProxyType(headers)


REACH = web.AppKey("reach", Reach)


async def browser_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: :attr:`Reach.page_headers` on every answer (an error's, a
    record's, a static file's as well as the page's: any of them can be opened as a
    page), where the handler did not set its own."""
    for name, value in request.app[REACH].page_headers.items():
        response.headers.setdefault(name, value)


@web.middleware
async def reach_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (why := request.app[REACH].host_refused(request)) is not None:
        raise ApiError(403, "forbidden", why)
    return await handler(request)
