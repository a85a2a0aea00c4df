"""Connections a flood cannot exhaust.

Every socket is a file descriptor. Clients that open connections and send nothing, stall in their
headers or idle between requests are closed after the idle timeout (aiohttp's keep-alive timer runs
from the moment a connection opens). And the server holds at most `limit` connections, fewer than
its descriptor limit allows: a new one beyond that closes the oldest connections that have no
request in progress, so a probe or a real request always gets in.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

log = logging.getLogger("recops.serve")

RESERVED_FDS = 128  # model files, libraries, the event log, the process's own pipes
MAX_CONNECTIONS = 10_000


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (as Go does at start); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_limit(fd_limit: int) -> int:
    return max(16, min(MAX_CONNECTIONS, fd_limit - RESERVED_FDS))


class ConnectionGuard:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy: set[Any] = set()  # request handlers with a request in progress (the middleware keeps it)
        self.shed = 0
        self._last_report = 0.0

    def attach(self, server: Any) -> None:
        """Bound the connections of an aiohttp web.Server (runner.server)."""
        made = server.connection_made

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self._shed(server.connections, handler)

        server.connection_made = connection_made

    def _shed(self, connections: list[Any], newest: Any) -> None:
        excess = len(connections) - self.limit
        for handler in connections:  # oldest first
            if excess <= 0:
                break
            if handler is not newest and handler not in self.busy:
                handler.force_close()
                excess -= 1
                self.shed += 1
        if self.shed and time.monotonic() - self._last_report > 60:
            self._last_report = time.monotonic()
            log.warning("at %d connections: closed %d idle ones so far to let new ones in", self.limit, self.shed)
