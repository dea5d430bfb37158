"""The one place the contract meets redis-py: connecting, and translating Redis' exceptions into the
contract's own (`chatbus.errors`) at every call, so nothing outside `chatbus` handles a Redis exception.

Each part of the contract (`chatbus.queue`, `chatbus.answers`, `chatbus.consumer`, …) holds a `Link` (the
client and the key names) and marks its calls `@translated`.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatbus.errors import BusError, ChatbusError, NotAnswering, PasswordRefused, Unreachable, WritesRefused
from chatbus.keys import Keys

CONNECT_TIMEOUT_S = 5.0  # a host that drops packets is "unreachable" after this, not after the OS's minutes
# A Redis that accepts connections but does not answer (paused, swapping, stuck on a slow script) is
# "not answering" after this: callers refuse clearly instead of hanging. Longer than any BLOCK the project uses.
SOCKET_TIMEOUT_S = 4.0
# Each process holds at most this many connections; a command that finds none free waits POOL_WAIT_S, then fails.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 4.0

# Redis answers these while it is up but will not take writes: `maxmemory` with `noeviction` (OOM),
# a replica after a failover (READONLY), a failed save with stop-writes-on-bgsave-error (MISCONF),
# too few replicas (NOREPLICAS), a replica cut off from its master (MASTERDOWN), a blocked read
# ended by a role change (UNBLOCKED, during a failover). Each can pass.
_REFUSALS = re.compile(r"\b(OOM|READONLY|MISCONF|NOREPLICAS|MASTERDOWN|UNBLOCKED)\b")
# A server that wants a password it was not given answers NOAUTH; a wrong one, WRONGPASS (redis-py's
# AuthenticationError, raised while connecting).
_NO_AUTH = re.compile(r"\b(NOAUTH|WRONGPASS)\b")

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


@dataclass(frozen=True)
class Link:
    """What every part of the contract works on: one client (bytes replies, RESP2) and the key names."""

    redis: Redis
    keys: Keys


def translate(exc: BaseException) -> ChatbusError:
    """The contract's exception for an exception redis-py (or the socket under it) raised."""
    if isinstance(exc, ChatbusError):
        return exc
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError) or _NO_AUTH.search(str(exc)):
        return PasswordRefused(f"Redis refused the password: {exc}")
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return NotAnswering(f"Redis is not answering: {exc}")
    if isinstance(exc, RedisConnectionError | OSError):
        return Unreachable(f"Redis is unreachable: {exc}")
    if (refusal := _write_refusal(exc)) is not None:
        return WritesRefused(refusal, str(exc))
    return BusError(f"Redis failed: {exc}")


def translated(
    call: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """A contract call that raises the contract's exceptions, never Redis'."""

    @functools.wraps(call)
    async def run(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await call(self, *args, **kwargs)
        except (RedisError, OSError) as exc:
            raise translate(exc) from exc

    return run


def _write_refusal(exc: BaseException) -> str | None:
    if not isinstance(exc, ResponseError):
        return None
    # redis-py strips the code of the errors it has a class for; the others keep it in the message.
    for kind, code in ((OutOfMemoryError, "OOM"), (ReadOnlyError, "READONLY"), (MasterDownError, "MASTERDOWN")):
        if isinstance(exc, kind):
            return code
    match = _REFUSALS.search(str(exc))
    return match.group(1) if match else None


def replied(exc: BaseException, code: str) -> bool:
    """True when Redis answered a command with this error code (NOGROUP, BUSYGROUP, ERR no such key…)."""
    return isinstance(exc, ResponseError) and code in str(exc)


def connect(url: str, password: SecretStr | str | None = None, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A Redis client for the contract: bytes replies (entries may hold invalid UTF-8), RESP2.

    `password` (REDIS_PASSWORD) is used when the URL carries none; one in the URL wins.

    Commands are retried a few times on a dropped connection (a restarted Redis leaves stale
    pooled connections); callers still see `Unreachable` when Redis stays down. A Redis that
    does not answer is not retried: a command fails with `NotAnswering` after SOCKET_TIMEOUT_S.
    The pool is bounded (MAX_CONNECTIONS): past it a command waits up to POOL_WAIT_S for a free
    connection, then fails like an unreachable Redis.
    """
    # Only a dropped connection is retried: a stalled Redis would otherwise cost four timeouts, not one.
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3, supported_errors=(RedisConnectionError,))
    pool = BlockingConnectionPool.from_url(
        url,
        retry=retry,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        decode_responses=False,
        protocol=2,
        health_check_interval=30,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        password=password.get_secret_value() if isinstance(password, SecretStr) else password,
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # what `Redis.from_url` sets: closing the client closes its pool
    return client


def redact_url(url: str) -> str:
    """A Redis URL fit for messages and logs: any password replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def cancel_requested() -> bool:
    """True once the running task was cancelled, even if the CancelledError was swallowed.

    redis-py can turn a cancellation that lands mid-command into a connection error (`Unreachable` here);
    a loop that catches errors and goes on must check this, or a cancelled task never ends and whoever
    awaits it (a shutdown) hangs.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def as_text(value: Any) -> str:
    """A Redis reply (bytes, as `connect` answers) as text; invalid UTF-8 replaced."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def usage_field(platform: str, user: str, channel: str, metric: str) -> str:
    """A usage hash field: tabs cannot occur in platform names, user ids, channel ids or key names."""
    return "\t".join((platform, user, channel, metric))
