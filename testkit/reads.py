"""Typed reads of what the contract wrote, for tests that look at Redis itself (a dead letter, the votes stream)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from chatbus.connection import as_text


async def stream_entries(redis: Redis, key: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of a stream, oldest first, as (id, fields) in text."""
    raw: Any = await redis.xrange(key)
    return [(as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}) for entry_id, fields in raw or []]


def entry_fields(fields: Mapping[str, str | bytes]) -> dict[Any, Any]:
    """A message's fields as redis-py's XADD takes them (its annotations want its own key and value types)."""
    return dict(fields)


async def add_entry(redis: Redis, key: str, fields: Mapping[str, str | bytes]) -> None:
    """Append an entry to a stream, as a worker (or a hostile writer) would."""
    await redis.xadd(key, entry_fields(fields))
