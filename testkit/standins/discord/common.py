"""What every part of the loopback Discord shares: constants of the API, payload builders, the recorded calls."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADD_REACTIONS, VIEW_CHANNEL, SEND_MESSAGES = 1 << 6, 1 << 10, 1 << 11
MANAGE_MESSAGES, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY = 1 << 13, 1 << 14, 1 << 15, 1 << 16
ADMINISTRATOR, MANAGE_GUILD = 1 << 3, 1 << 5
USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS = 1 << 31, 1 << 35, 1 << 38
EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | READ_MESSAGE_HISTORY
    | SEND_MESSAGES_IN_THREADS
    | CREATE_PUBLIC_THREADS
    | ADD_REACTIONS
    | EMBED_LINKS
    | ATTACH_FILES
    | USE_APPLICATION_COMMANDS
)

# Gateway intent bits that decide which events the client is sent at all.
GUILDS, GUILD_MEMBERS, GUILD_PRESENCES, GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS = 1, 1 << 1, 1 << 8, 1 << 9, 1 << 10
DIRECT_MESSAGES, DIRECT_MESSAGE_REACTIONS, MESSAGE_CONTENT = 1 << 12, 1 << 13, 1 << 15

MESSAGE_EPHEMERAL, MESSAGE_LOADING, MESSAGE_COMPONENTS_V2 = 1 << 6, 1 << 7, 1 << 15
MAX_LAYOUT_COMPONENTS, MAX_LAYOUT_TEXT = 40, 4000  # a Components V2 message's limits
_PRIVATE_KEYS = ("allowed_mentions", "edits")  # kept in `messages` for assertions, never sent to the client

Handler = Callable[..., Awaitable[web.Response]]


@dataclass
class Served:
    """One REST response: the route's path template as Discord's OpenAPI description writes it (None when the
    stand-in has no such route), the concrete path, the status and the body."""

    method: str
    template: str | None
    path: str
    status: int
    body: bytes
    request: Any = None  # the JSON body the client sent (a multipart request's payload_json), None without one


@dataclass
class Call:
    """One REST request as the stand-in received it; `at` is time.monotonic()."""

    method: str
    path: str
    query: dict[str, str]
    json: Any  # the body as JSON (None when it had none)
    at: float


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float


@dataclass
class _Request:
    method: str
    body: Any
    query: Mapping[str, str]
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, content type, data)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def user_object(user_id: int, username: str, global_name: str | None, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": username,
        "global_name": global_name,
        "discriminator": "0",
        "bot": bot,
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
    }


def numbered(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as Discord stores them: each one numbered (`id`, in order) where the sender gave no id, and an
    emoji's null keys dropped."""
    count = 0

    def number(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal count
        out = []
        for item in items:
            count += 1
            item = {**item, "id": item.get("id") or count}
            if isinstance(item.get("emoji"), dict):  # a Unicode emoji is stored by name alone: no null id
                item["emoji"] = {k: v for k, v in item["emoji"].items() if v is not None}
            if "components" in item:
                item["components"] = number(item["components"])
            out.append(item)
        return out

    return number(components)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py only decodes JSON when Content-Type is exactly "application/json" (no charset suffix).
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json", **(headers or {})})


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return _json({"message": message, "code": code}, status)


def _no_content() -> web.Response:
    return web.Response(status=204)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _walk_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component in a (possibly nested: rows, containers, sections, labels) component tree."""
    out: list[dict[str, Any]] = []
    for component in components:
        out.append(component)
        out += _walk_components(component.get("components", []))
        out += _walk_components([c for c in (component.get("component"), component.get("accessory")) if c])
    return out
