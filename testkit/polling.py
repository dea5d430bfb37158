"""Waiting for a condition: the one polling helper of the tests and benchmarks, blocking or awaiting.

A predicate returns something truthy once the condition holds (that value is returned); an
awaiting predicate may return an awaitable. Past `timeout_s` the test fails with `what` in the
message — on a busy machine a generous timeout costs nothing when the condition comes early.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


class ConditionTimeout(AssertionError, TimeoutError):
    """The condition did not hold in time: a failed assertion in a test, a TimeoutError to a benchmark."""


def wait_until(predicate: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "") -> T:
    """Block until `predicate()` is truthy and return it; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout_s: float = ..., interval_s: float = ..., what: str = ...
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T], timeout_s: float = ..., interval_s: float = ..., what: str = ...
) -> T: ...


async def eventually(
    predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.02, what: str = ""
) -> Any:
    """Await until `predicate()` (awaited if it returns an awaitable) is truthy and return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)
