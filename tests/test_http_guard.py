"""The connection guard every listener sits behind: accept errors logged at a bounded rate, a cap sized to the
process's descriptors, and a newcomer past the cap shedding a slow connection, never a quick one."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from runtime.http_guard import (
    ACCEPT_BURSTS,
    RESERVED_DESCRIPTORS,
    ConnectionGuard,
    backlog_for,
    descriptor_cap,
    quiet_accept_errors,
)


async def test_accept_errors_are_logged_once_a_while_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    try:
        quiet_accept_errors(loop)
        quiet_accept_errors(loop)  # installed twice: still one handler
        with caplog.at_level(logging.ERROR, logger="runtime.http_guard"):
            for _ in range(1000):  # what "Too many open files" gave each time the loop retried accepting
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many")}
                )
        assert len(caplog.records) == 1 and "cannot accept connections" in caplog.records[0].getMessage()
    finally:
        loop.set_exception_handler(previous)


def test_a_cap_never_outgrows_the_descriptors() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = descriptor_cap(10**9)
    room = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_DESCRIPTORS - ACCEPT_BURSTS * backlog_for(cap)
    assert cap <= max(16, room)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft, "the soft limit is only ever raised"
    assert descriptor_cap(64) == 64


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


async def test_past_the_cap_the_oldest_silent_connection_goes_never_one_that_sent_its_request() -> None:
    guard = ConnectionGuard(max_connections=2)
    made = [guard.wrap(asyncio.Protocol)() for _ in range(4)]
    transports = [_Transport() for _ in made]
    made[0].connection_made(transports[0])
    made[0].data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a real request: never shed for the cap
    made[1].connection_made(transports[1])  # silent
    made[2].connection_made(transports[2])  # over the cap: the oldest silent one goes, not the newcomer
    assert [t.aborted for t in transports[:3]] == [False, True, False]
    made[3].connection_made(transports[3])
    assert [t.aborted for t in transports] == [False, True, True, False]
