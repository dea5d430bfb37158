"""A guard for the HTTP listeners both sides open (the worker's /healthz and /metrics, Slack's HTTP mode).

It lives here, beside the contract, because `bot/` and `inference/` must not import each other
and it needs nothing but asyncio. It wraps any asyncio protocol factory (aiohttp's included):

- a connection must finish its request headers within `header_timeout_s`, or it is closed;
- at most `max_connections` are open at once: a newcomer past the cap closes the oldest one still
  waiting for its headers (a slow or half-open client: a real one sends them within milliseconds),
  so a flood of idle sockets cannot hold file descriptors the process needs for Redis, nor lock out
  a real health check;
- `descriptor_cap` sizes a cap to the process's file descriptors (raising the soft limit to the hard
  one), so the cap is reached before the descriptors run out;
- errors accepting connections (out of descriptors, of memory) are logged at most once every
  ACCEPT_ERROR_LOG_S, with a count of the ones left out, instead of once per attempt.

Idle keep-alive connections after a request are the wrapped server's (aiohttp's keepalive_timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
ACCEPT_ERROR_LOG_S = 10.0
# Descriptors kept free of a listener's cap: the Redis pool, log files, child processes' pipes.
RESERVED_DESCRIPTORS = 128
# The deepest listen backlog (at most the cap), which is also how many connections asyncio accepts in one go before
# the guard sees any: deeper than asyncio's 100, so a burst does not leave a real client waiting for a SYN retry.
LISTEN_BACKLOG = 512
# Accept bursts that can land before the guard sees the first of them (asyncio makes each connection's protocol a
# few loop passes after accepting it): the descriptors a cap leaves free for them.
ACCEPT_BURSTS = 3
_HEADERS_END = b"\r\n\r\n"


class ConnectionGuard:
    """Counts a listener's connections and closes the slow ones; see the module docstring."""

    def __init__(self, *, header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open: dict[_Guarded, None] = {}  # insertion order: oldest first
        self.closed_slow = 0

    def wrap(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` around the server's own factory."""
        return lambda: _Guarded(factory(), self)

    async def serve(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, **kwargs: Any
    ) -> asyncio.Server:
        """Listen on host:port with the guard in front of `factory`, with a backlog of LISTEN_BACKLOG (at most the
        cap): a burst of connections (a flood arriving at once) fills asyncio's default of 100, and a real client's
        connection arriving then waits for the kernel's SYN retry, a second or more."""
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        kwargs.setdefault("backlog", backlog_for(self.max_connections))
        return await loop.create_server(self.wrap(factory), host, port, **kwargs)

    def _opened(self, connection: _Guarded) -> None:
        self.open[connection] = None
        if len(self.open) > self.max_connections:
            oldest = next((c for c in self.open if c.waiting and c is not connection), None)
            if oldest is not None:
                self._close_slow(oldest, "over the connection cap")

    def _close_slow(self, connection: _Guarded, why: str) -> None:
        self.open.pop(connection, None)  # counted as gone now: its socket closes on the next loop pass
        self.closed_slow += 1
        if self.closed_slow in (1, 10, 100, 1000) or self.closed_slow % 10000 == 0:
            log.warning("closed %d connections that sent no request in time (latest: %s)", self.closed_slow, why)
        connection.abort()


class _Guarded(asyncio.Protocol):
    """Passes everything to the wrapped protocol; watches only for the end of the first request's headers."""

    def __init__(self, inner: asyncio.BaseProtocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.waiting = True
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout_s, self._timed_out)
        self.guard._opened(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.waiting:
            seen = self._tail + data
            if _HEADERS_END in seen:
                self._headers_done()
            else:
                self._tail = seen[-(len(_HEADERS_END) - 1) :]
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined,no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        self.guard.open.pop(self, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()  # type: ignore[attr-defined]

    def _headers_done(self) -> None:
        self.waiting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        if self.waiting:
            self.guard._close_slow(self, f"no request headers within {self.guard.header_timeout_s:.0f}s")


def backlog_for(cap: int) -> int:
    """A guarded listener's backlog: LISTEN_BACKLOG, or its cap when that is smaller (never under asyncio's 100)."""
    return max(100, min(LISTEN_BACKLOG, cap))


def descriptor_cap(wanted: int) -> int:
    """`wanted` connections, or fewer when the process's descriptors cannot hold them beside
    RESERVED_DESCRIPTORS and ACCEPT_BURSTS of the listener's backlog; the soft limit is raised to the hard one
    first."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = wanted + RESERVED_DESCRIPTORS + ACCEPT_BURSTS * backlog_for(wanted)
        target = target if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = max(soft, target)
        except (ValueError, OSError):
            pass
    room = soft - RESERVED_DESCRIPTORS
    # The largest cap whose own backlog's bursts still fit: at a full backlog, or at one as deep as the cap.
    fits = [cap for cap in (room - ACCEPT_BURSTS * LISTEN_BACKLOG, room // (ACCEPT_BURSTS + 1)) if cap >= 100]
    cap = max(16, min(wanted, max(fits, default=room - ACCEPT_BURSTS * 100)))
    if cap < wanted:
        log.warning("%d file descriptors allow %d connections, not %d: raise `ulimit -n`", soft, cap, wanted)
    return cap


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's accept errors at most once every ACCEPT_ERROR_LOG_S (with a count); pass on the rest."""
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_accept_errors", False):
        return
    state = {"logged_at": float("-inf"), "left_out": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - state["logged_at"] < ACCEPT_ERROR_LOG_S:
            state["left_out"] += 1
            return
        log.error(
            "cannot accept connections: %s (%d more such errors in the last %.0fs not logged)",
            context.get("exception") or context.get("message"),
            state["left_out"],
            ACCEPT_ERROR_LOG_S,
        )
        state["logged_at"], state["left_out"] = now, 0

    handler.quiets_accept_errors = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
