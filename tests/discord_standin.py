"""A loopback Discord: REST under /api/v10 and a gateway websocket that the real discord.py client talks to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yarl
from aiohttp import WSMsgType, web

from tests.servers import poll

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADD_REACTIONS, VIEW_CHANNEL, SEND_MESSAGES = 1 << 6, 1 << 10, 1 << 11
MANAGE_MESSAGES, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY = 1 << 13, 1 << 14, 1 << 15, 1 << 16
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

MESSAGE_EPHEMERAL, MESSAGE_LOADING = 1 << 6, 1 << 7
_PRIVATE_KEYS = ("allowed_mentions", "edits")  # kept in `messages` for assertions, never sent to the client

Handler = Callable[..., Awaitable[web.Response]]


@dataclass
class Call:
    """One REST request as the stand-in received it; `at` is time.monotonic()."""

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
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


def _user(user_id: int, username: str, global_name: str | None, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": username,
        "global_name": global_name,
        "discriminator": "0",
        "bot": bot,
        "avatar": None,
        "public_flags": 0,
    }


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


class DiscordStandIn:
    """Loopback Discord: REST under /api/v10 and a gateway websocket, recording every call."""

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.bot_id, self.application_id, self.guild_id = 1100000000000000001, 1100000000000000002, 1100000000000000100
        self.channel_id, self.other_channel_id = 1100000000000000101, 1100000000000000102
        self.moderator_role_id, self.dm_channel_id = 1100000000000000201, 1100000000000000301
        self.owner_id = 1100000000000000019  # guild owner who is not a member: owners bypass permission checks
        self.bot_user = _user(self.bot_id, "KULLM", "구름", bot=True)
        self.alice = _user(1100000000000000011, "alice", "앨리스")
        self.bob = _user(1100000000000000012, "bob", "밥")
        self.mod = _user(1100000000000000013, "mod", "운영자")
        self.other_bot = _user(1100000000000000014, "otherbot", None, bot=True)
        self.users: dict[int, dict[str, Any]] = {
            int(u["id"]): u for u in (self.bot_user, self.alice, self.bob, self.mod, self.other_bot)
        }
        self.roles: dict[int, dict[str, Any]] = {
            self.guild_id: self._role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0),
            self.moderator_role_id: self._role(self.moderator_role_id, "moderator", MANAGE_MESSAGES, 1),
        }
        self.member_roles: dict[int, list[int]] = {uid: [] for uid in self.users}
        self.member_roles[int(self.mod["id"])] = [self.moderator_role_id]
        self.channels: dict[int, dict[str, Any]] = {
            self.channel_id: self._text_channel(self.channel_id, "kullm", 0),
            self.other_channel_id: self._text_channel(self.other_channel_id, "general", 1),
            self.dm_channel_id: self._dm_channel(self.dm_channel_id, self.alice),
        }
        self.close_on_identify_code: int | None = None
        # recordings
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted_messages: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, dict[str, Any]] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.interaction_responses: list[dict[str, Any]] = []
        self.modals: dict[str, dict[str, Any]] = {}  # custom_id -> last modal the bot opened (callback type 9)
        self.attachment_data: dict[int, bytes] = {}
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_received: list[dict[str, Any]] = []  # every client frame but heartbeats
        self.dispatched: list[dict[str, Any]] = []  # every dispatch frame sent (or queued for a resume)
        self.identifies = 0
        self.resumes = 0
        self.intents: int | None = None
        self.session_id: str | None = None
        # internals
        self._reactions: dict[int, dict[str, list[int]]] = {}
        self._interactions: dict[str, dict[str, Any]] = {}
        self._command_ids: dict[tuple[str, str, int], int] = {}
        self._failures: list[_Failure] = []
        self.failures_served = 0  # injected errors actually answered
        self._seq = 0
        self._resumed_ok = 0
        self._backlog: list[tuple[int, str]] = []
        self._live_ws: web.WebSocketResponse | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._send_lock = asyncio.Lock()
        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._saved_urls: tuple[str, yarl.URL] | None = None
        self.port = 0
        self._routes = self._route_table()

    # ---- world -------------------------------------------------------------------------------------------------

    def _role(self, role_id: int, name: str, permissions: int, position: int) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _text_channel(self, channel_id: int, name: str, position: int) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }

    def _dm_channel(self, channel_id: int, user: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(channel_id), "type": 1, "recipients": [user], "last_message_id": None, "flags": 0}

    def _member(self, user: dict[str, Any], *, with_user: bool = True) -> dict[str, Any]:
        member = {
            "roles": [str(r) for r in self.member_roles.get(int(user["id"]), [])],
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        return {**member, "user": user} if with_user else member

    def permissions_of(self, user_id: int) -> int:
        """The guild-wide permission integer of a member (no channel overwrites exist in this world)."""
        roles = [self.guild_id, *self.member_roles.get(user_id, [])]
        value = 0
        for role_id in roles:
            value |= int(self.roles[role_id]["permissions"])
        return value

    def _guild_payload(self) -> dict[str, Any]:
        # Without the members or presences intent Discord lists only the bot itself (member_count is still right).
        everyone = self.intents is None or self.intents & (GUILD_MEMBERS | GUILD_PRESENCES)
        members = [self._member(u) for u in self.users.values() if everyone or u is self.bot_user]
        channels = [c for c in self.channels.values() if c["type"] == 0]
        active = [t for t in self.threads.values() if not t["thread_metadata"]["archived"]]
        return {
            "id": str(self.guild_id),
            "name": "KULLM 테스트 서버",
            "icon": None,
            "owner_id": str(self.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(self.users),
            "members": members,
            "channels": channels,
            "threads": active,
            "roles": list(self.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": _now(),
            "preferred_locale": "ko",
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_id": None,
            "afk_timeout": 300,
            "application_id": None,
        }

    def _snowflake(self) -> int:
        # Real snowflakes: creation time in the high bits, so ids sort like Discord's and decode to "now".
        value = max((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self, *, point_discord_py: bool = True) -> None:
        """Bind 127.0.0.1 on a free port; by default also aim discord.py's REST base and gateway URL here."""
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if point_discord_py:
            # A plain discord.Client never asks GET /gateway/bot: it dials DEFAULT_GATEWAY, so both need aiming.
            self._saved_urls = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
            Route.BASE = self.api_base
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    async def stop(self) -> None:
        """Close every gateway socket, stop the server and restore discord.py's URLs."""
        for ws in list(self._sockets):
            await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._saved_urls is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_urls
            self._saved_urls = None

    # ---- helpers for tests -------------------------------------------------------------------------------------

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """Live (not deleted) messages of a channel or thread, in creation order."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    def fail_next(self, method: str, path_regex: str, status: int = 429, retry_after: float = 0.3) -> None:
        """Answer the next REST call whose path (without /api/v10) fullmatches `path_regex` with an error."""
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, retry_after))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll `predicate` every 0.02 s until it is truthy; return its value or raise AssertionError."""
        return await poll(predicate, timeout, "stand-in condition")

    # ---- gateway -----------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._gateway_op(ws, json.loads(msg.data))
        finally:
            self._sockets.discard(ws)
            if self._live_ws is ws:
                self._live_ws = None
        return ws

    async def _gateway_op(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:
            await ws.send_str(json.dumps({"op": 11}))
            return
        self.gateway_received.append(frame)
        if op == 2:
            await self._identify(ws, data)
        elif op == 6:
            await self._resume(ws, data)
        elif op == 8:
            await self._request_members(data)

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies += 1
        self.identify_payloads.append(data)
        if self.close_on_identify_code is not None:
            await ws.close(code=self.close_on_identify_code, message=b"Disallowed intent(s).")
            return
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        async with self._send_lock:
            self.session_id, self._seq, self._backlog = uuid.uuid4().hex, 0, []
            self.intents = data.get("intents")
            self._live_ws = ws
            ready = {
                "v": 10,
                "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": self.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "user_settings": {},
                "geo_ordered_rtc_regions": ["seoul"],
                "shard": [0, 1],
                "application": {"id": str(self.application_id), "flags": 1 << 19},
            }
            await self._emit("READY", ready)
            await self._emit("GUILD_CREATE", self._guild_payload(), GUILDS)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.resumes += 1
        async with self._send_lock:
            if data.get("session_id") != self.session_id or data.get("token") != self.token:
                await ws.send_str(json.dumps({"op": 9, "d": False}))  # INVALID_SESSION, not resumable
                return
            # Replay what the client missed (sent to a dying socket or while it was away), then RESUMED.
            missed = [text for seq, text in self._backlog if seq > (data.get("seq") or 0)]
            for text in missed:
                await ws.send_str(text)
            self._live_ws = ws
            await self._emit("RESUMED", {})
            self._resumed_ok += 1

    async def _request_members(self, data: dict[str, Any]) -> None:
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            self._member(u)
            for uid, u in self.users.items()
            if (not wanted or uid in wanted) and u["username"].startswith(query)
        ]
        chunk = {
            "guild_id": str(self.guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "nonce": data.get("nonce"),
        }
        await self._dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _emit(self, event: str, data: dict[str, Any], intent: int = 0) -> bool:
        # Caller holds _send_lock, so sequence numbers and wire order always agree.
        if intent and self.intents is not None and not self.intents & intent:
            return False  # Discord never sends events the client did not ask for
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        text = json.dumps(frame, ensure_ascii=False)
        self._backlog.append((self._seq, text))
        self.dispatched.append(frame)
        if self._live_ws is not None and not self._live_ws.closed:
            # A socket that is going away may refuse it; the event stays in the backlog for the RESUME replay.
            with contextlib.suppress(ConnectionError):
                await self._live_ws.send_str(text)
        return True

    async def _dispatch(self, event: str, data: dict[str, Any], intent: int = 0) -> bool:
        async with self._send_lock:
            return await self._emit(event, data, intent)

    async def _wait_session(self) -> None:
        await self.wait_for(lambda: self.session_id is not None, timeout=10.0)

    async def reconnect(self) -> None:
        """Send op 7 RECONNECT and return once the client has RESUMEd and got RESUMED."""
        before = self._resumed_ok
        async with self._send_lock:
            ws, self._live_ws = self._live_ws, None  # later events wait in the backlog for the replay
            if ws is None:
                raise RuntimeError("no live gateway connection to reconnect")
            await ws.send_str(json.dumps({"op": 7, "d": None}))
        await self.wait_for(lambda: self._resumed_ok > before, timeout=15.0)

    async def drop(self) -> None:
        """Close the gateway socket without warning (close code 4000, resumable); return once RESUMED."""
        before = self._resumed_ok
        async with self._send_lock:
            ws, self._live_ws = self._live_ws, None
            if ws is None:
                raise RuntimeError("no live gateway connection to drop")
        await ws.close(code=4000, message=b"Unknown error.")
        await self.wait_for(lambda: self._resumed_ok > before, timeout=30.0)

    # ---- driving events ----------------------------------------------------------------------------------------

    def _guild_of(self, channel_id: int) -> int | None:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"stand-in: unknown channel {channel_id}")
        return int(channel["guild_id"]) if channel.get("guild_id") else None

    async def send_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        content: str,
        *,
        mention_bot: bool = False,
        reference_message_id: int | None = None,
    ) -> dict[str, Any]:
        """A user posts `content`; the client receives MESSAGE_CREATE. Returns the stored message."""
        await self._wait_session()
        payload: dict[str, Any] = {"content": content}
        if reference_message_id is not None:
            payload["message_reference"] = {"message_id": str(reference_message_id)}
        msg = self._new_message(channel_id, author, payload)
        if mention_bot and all(m["id"] != self.bot_user["id"] for m in msg["mentions"]):
            msg["mentions"].append(self.bot_user)
        await self._announce("MESSAGE_CREATE", msg)
        return msg

    async def redeliver_message(self, message_id: int) -> None:
        """Send MESSAGE_CREATE again for a stored message, as Discord may after a resume."""
        await self._announce("MESSAGE_CREATE", self.messages[message_id])

    async def add_reaction(self, channel_id: int, message_id: int, user: dict[str, Any], emoji: str) -> None:
        """`user` reacts with `emoji` (unicode, or "name:id" for a custom emoji); dispatches MESSAGE_REACTION_ADD."""
        await self._wait_session()
        await self._react(channel_id, message_id, int(user["id"]), emoji, add=True)

    async def slash_command(
        self, name: str, options: dict[str, str], user: dict[str, Any], channel_id: int
    ) -> dict[str, Any]:
        """`user` runs /`name` with `options`; dispatches INTERACTION_CREATE. Returns {"id": int, "token": str}."""
        scope, command = self._find_command(name, 1)
        declared = {o["name"]: o.get("type", 3) for o in command.get("options", [])}
        convert: dict[int, Callable[[str], Any]] = {4: int, 5: lambda v: str(v).lower() == "true", 10: float}
        opts = [
            {"name": k, "type": declared.get(k, 3), "value": convert.get(declared.get(k, 3), str)(v)}
            for k, v in options.items()
        ]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": opts}
        if scope != "global":
            data["guild_id"] = scope
        return await self._interact(2, data, user, channel_id)

    async def message_command(
        self, name: str, target_message_id: int, user: dict[str, Any], channel_id: int
    ) -> dict[str, Any]:
        """`user` picks message context-menu command `name` on a message; dispatches INTERACTION_CREATE."""
        scope, command = self._find_command(name, 3)
        target = self._wire(self._message(target_message_id))
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(target_message_id),
            "resolved": {"messages": {str(target_message_id): target}},
        }
        if scope != "global":
            data["guild_id"] = scope
        return await self._interact(2, data, user, channel_id)

    async def submit_modal(
        self, custom_id: str, values: dict[str, str], user: dict[str, Any], channel_id: int
    ) -> dict[str, Any]:
        """`user` submits modal `custom_id` with text-input values; dispatches INTERACTION_CREATE (MODAL_SUBMIT)."""
        modal = self.modals.get(custom_id)
        rows = (
            modal["components"] if modal else [{"type": 1, "components": [{"type": 4, "custom_id": k}]} for k in values]
        )
        components = [self._submitted(row, values) for row in rows]
        return await self._interact(5, {"custom_id": custom_id, "components": components}, user, channel_id)

    @staticmethod
    def _submitted(row: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
        # Mirror the modal's own layout: action rows (type 1) of inputs, or labels (type 18) around one input.
        def answer(item: dict[str, Any]) -> dict[str, Any]:
            value = values.get(item.get("custom_id", ""), "")
            answered = {"value": value} if item["type"] == 4 else {"values": [value] if value else []}
            return {"type": item["type"], "id": item.get("id"), "custom_id": item.get("custom_id"), **answered}

        if row["type"] == 18:
            return {"type": 18, "id": row.get("id"), "component": answer(row["component"])}
        return {"type": row["type"], "components": [answer(c) for c in row.get("components", [])]}

    async def click_button(self, message_id: int, custom_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """`user` clicks the button `custom_id` on a stored message; dispatches INTERACTION_CREATE (component)."""
        msg = self._message(message_id)
        if not any(c.get("custom_id") == custom_id for c in _walk_components(msg.get("components", []))):
            raise ValueError(f"stand-in: message {message_id} has no component {custom_id!r}")
        data = {"component_type": 2, "custom_id": custom_id}
        return await self._interact(3, data, user, int(msg["channel_id"]), message=msg)

    def _find_command(self, name: str, kind: int) -> tuple[str, dict[str, Any]]:
        for scope in (str(self.guild_id), "global"):  # a guild command shadows a global one, as in the client UI
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == kind:
                    return scope, command
        raise KeyError(f"stand-in: no command {name!r} of type {kind} was synced")

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        user: dict[str, Any],
        channel_id: int,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        await self._wait_session()
        guild_id = self._guild_of(channel_id)
        iid = self._snowflake()
        token = f"itok-{iid}-{uuid.uuid4().hex}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": self.channels[channel_id],
            "locale": "ko",
            "app_permissions": str(self.permissions_of(self.bot_id)),
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "context": 0 if guild_id else 1,
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": user["id"]},
        }
        if guild_id:
            member = {**self._member(user), "permissions": str(self.permissions_of(int(user["id"])))}
            payload.update(
                guild_id=str(guild_id),
                guild_locale="ko",
                member=member,
                guild={"id": str(guild_id), "locale": "ko", "features": []},
            )
        else:
            payload["user"] = user
        if message is not None:
            payload["message"] = self._wire(message)
        self._interactions[token] = {
            "id": iid,
            "type": kind,
            "data": data,
            "channel_id": channel_id,
            "message_id": int(message["id"]) if message else None,
            "original_id": None,
            "loading": False,
            "acked": False,
        }
        await self._dispatch("INTERACTION_CREATE", payload)
        return {"id": iid, "token": token}

    # ---- messages ----------------------------------------------------------------------------------------------

    def _message(self, message_id: int) -> dict[str, Any]:
        if message_id not in self.messages:
            raise KeyError(f"stand-in: unknown message {message_id}")
        return self.messages[message_id]

    def _wire(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in msg.items() if k not in _PRIVATE_KEYS}

    def _mentions(self, content: str, allowed: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str], bool]:
        # Who gets pinged follows allowed_mentions; no allowed_mentions means Discord's default (parse everything).
        parse = ["users", "roles", "everyone"] if allowed is None else allowed.get("parse", [])
        users = [] if allowed is None else [str(u) for u in allowed.get("users", [])]
        roles = [] if allowed is None else [str(r) for r in allowed.get("roles", [])]
        mentioned = dict.fromkeys(re.findall(r"<@!?(\d+)>", content))
        people = [self.users[int(u)] for u in mentioned if int(u) in self.users and ("users" in parse or u in users)]
        role_ids = [r for r in dict.fromkeys(re.findall(r"<@&(\d+)>", content)) if "roles" in parse or r in roles]
        everyone = "everyone" in parse and ("@everyone" in content or "@here" in content)
        return people, role_ids, everyone

    def _new_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        payload: dict[str, Any],
        files: list[tuple[str, str, bytes]] | None = None,
        msg_type: int = 0,
    ) -> dict[str, Any]:
        mid = self._snowflake()
        allowed = payload.get("allowed_mentions")
        content = payload.get("content") or ""
        people, roles, everyone = self._mentions(content, allowed)
        msg: dict[str, Any] = {
            "id": str(mid),
            "type": msg_type,
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts")),
            "pinned": False,
            "mention_everyone": everyone,
            "mentions": people,
            "mention_roles": roles,
            "attachments": self._attachments(channel_id, files or []),
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "flags": int(payload.get("flags") or 0),
            "allowed_mentions": allowed,
            "edits": 0,
        }
        for key in ("nonce", "webhook_id", "application_id", "poll"):
            if payload.get(key) is not None:
                msg[key] = payload[key]
        if payload.get("message_reference"):
            self._attach_reference(msg, payload["message_reference"], allowed)
        self.messages[mid] = msg
        channel = self.channels[channel_id]
        channel["last_message_id"] = str(mid)
        if channel["type"] == 11:
            channel["message_count"] += 1
            channel["total_message_sent"] += 1
        return msg

    def _attach_reference(self, msg: dict[str, Any], ref: dict[str, Any], allowed: dict[str, Any] | None) -> None:
        target = self.messages[int(ref["message_id"])]  # caller validated it exists
        guild_id = self._guild_of(int(target["channel_id"]))
        msg["type"] = 19  # REPLY
        msg["message_reference"] = {
            "type": 0,
            "message_id": target["id"],
            "channel_id": target["channel_id"],
            **({"guild_id": str(guild_id)} if guild_id else {}),
        }
        msg["referenced_message"] = {k: v for k, v in self._wire(target).items() if k != "referenced_message"}
        replied = target["author"]
        if (allowed is None or allowed.get("replied_user")) and replied not in msg["mentions"]:
            msg["mentions"].append(replied)

    def _attachments(self, channel_id: int, files: list[tuple[str, str, bytes]]) -> list[dict[str, Any]]:
        out = []
        for filename, content_type, data in files:
            att_id = self._snowflake()
            self.attachment_data[att_id] = data
            url = f"http://127.0.0.1:{self.port}/attachments/{channel_id}/{att_id}/{filename}"
            out.append(
                {
                    "id": str(att_id),
                    "filename": filename,
                    "size": len(data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": content_type,
                }
            )
        return out

    def _edit(self, msg: dict[str, Any], payload: dict[str, Any], files: list[tuple[str, str, bytes]]) -> None:
        for key in ("content", "embeds", "components"):
            if key in payload:
                msg[key] = payload[key] if payload[key] is not None else ("" if key == "content" else [])
        if payload.get("flags") is not None:  # the ephemeral bit cannot be changed by an edit
            msg["flags"] = (int(payload["flags"]) & ~MESSAGE_EPHEMERAL) | (msg["flags"] & MESSAGE_EPHEMERAL)
        msg["flags"] &= ~MESSAGE_LOADING  # any edit resolves a deferred "thinking..." message
        if "allowed_mentions" in payload:
            msg["allowed_mentions"] = payload["allowed_mentions"]
        if "content" in payload:
            msg["mentions"], msg["mention_roles"], msg["mention_everyone"] = self._mentions(
                msg["content"], msg["allowed_mentions"]
            )
        if "attachments" in payload or files:
            keep = {str(a.get("id")) for a in payload.get("attachments") or []}
            kept = [a for a in msg["attachments"] if a["id"] in keep]
            msg["attachments"] = kept + self._attachments(int(msg["channel_id"]), files)
        msg["edited_timestamp"] = _now()
        msg["edits"] += 1

    async def _announce(self, event: str, msg: dict[str, Any]) -> None:
        """Dispatch MESSAGE_CREATE/UPDATE for a stored message the way Discord shapes it for this client."""
        if msg["flags"] & MESSAGE_EPHEMERAL:
            return  # ephemeral messages never reach the gateway
        guild_id = self._guild_of(int(msg["channel_id"]))
        data = self._wire(msg)
        if guild_id:
            data["guild_id"] = str(guild_id)
            if int(msg["author"]["id"]) in self.member_roles:
                data["member"] = self._member(msg["author"], with_user=False)
        blind = self.intents is not None and not self.intents & MESSAGE_CONTENT
        addressed = msg["author"]["id"] == self.bot_user["id"] or self.bot_user in msg["mentions"]
        if blind and guild_id and not addressed:
            # Without the privileged intent Discord blanks what a guild message says unless it concerns the bot.
            data.update(content="", embeds=[], attachments=[], components=[])
        await self._dispatch(event, data, GUILD_MESSAGES if guild_id else DIRECT_MESSAGES)

    async def _react(self, channel_id: int, message_id: int, user_id: int, emoji: str, *, add: bool) -> None:
        msg = self._message(message_id)
        users = self._reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if add == (user_id in users):
            return  # nothing changes, and Discord dispatches nothing
        users.append(user_id) if add else users.remove(user_id)
        msg["reactions"] = [
            {
                "emoji": self._emoji(e),
                "count": len(u),
                "me": self.bot_id in u,
                "me_burst": False,
                "burst_colors": [],
                "count_details": {"burst": 0, "normal": len(u)},
            }
            for e, u in self._reactions[message_id].items()
            if u
        ]
        guild_id = self._guild_of(channel_id)
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": self._emoji(emoji),
            "burst": False,
            "type": 0,
        }
        if add:
            data["message_author_id"] = msg["author"]["id"]
        if guild_id:
            data["guild_id"] = str(guild_id)
            if add:
                data["member"] = self._member(self.users[user_id])
        event = "MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE"
        await self._dispatch(event, data, GUILD_MESSAGE_REACTIONS if guild_id else DIRECT_MESSAGE_REACTIONS)

    @staticmethod
    def _emoji(emoji: str) -> dict[str, Any]:
        name, _, emoji_id = emoji.partition(":")
        return {"id": emoji_id or None, "name": name}

    # ---- REST --------------------------------------------------------------------------------------------------

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler, bool]]:
        ch, msg = r"/channels/(\d+)", r"/channels/(\d+)/messages/(\d+)"
        hook = r"/webhooks/(\d+)/([^/]+)"
        table: list[tuple[str, str, Handler, bool]] = [  # (method, path, handler, needs bot auth)
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway, True),
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/users/(\d+)", self._get_user, True),
            ("POST", r"/users/@me/channels", self._create_dm, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("PUT|GET", r"/applications/(\d+)(?:/guilds/(\d+))?/commands", self._bulk_commands, True),
            ("GET", ch, self._get_channel, True),
            ("POST", ch + "/typing", self._typing, True),
            ("POST|GET", ch + "/messages", self._channel_messages, True),
            ("GET|PATCH|DELETE", msg, self._one_message, True),
            ("POST", msg + "/threads", self._thread_from_message, True),
            ("POST", ch + "/threads", self._thread_without_message, True),
            ("PUT|DELETE", msg + r"/reactions(?:/([^/]+))?(?:/(@me|\d+))?", self._reaction_route, True),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback, False),
            ("POST", hook, self._followup, False),
            ("GET|PATCH|DELETE", hook + r"/messages/(@original|\d+)", self._webhook_message, False),
        ]
        return [(method, re.compile(path), handler, auth) for method, path, handler, auth in table]

    async def _read(self, request: web.Request) -> _Request:
        body: Any = None
        files: list[tuple[str, str, bytes]] = []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            for name, value in form.items():
                if name == "payload_json":
                    body = json.loads(str(value))
                elif isinstance(value, web.FileField):
                    files.append((value.filename, value.content_type, value.file.read()))
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        return _Request(request.method, body, dict(request.query), files)

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.path[len(API_PREFIX) :]
        req = await self._read(request)
        self.calls.append(Call(request.method, path, dict(request.query), req.body, time.monotonic()))
        failure = next((f for f in self._failures if f.method == request.method and f.pattern.fullmatch(path)), None)
        if failure is not None:
            self._failures.remove(failure)
            self.failures_served += 1
            return self._failure_response(failure)
        for methods, pattern, handler, needs_auth in self._routes:
            match = pattern.fullmatch(path)
            if match is None or request.method not in methods.split("|"):
                continue
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                return _error(401, "401: Unauthorized")
            return await handler(req, *match.groups())
        return _error(404, "Unknown")

    @staticmethod
    def _failure_response(failure: _Failure) -> web.Response:
        if failure.status != 429:
            return _error(failure.status, f"stand-in injected {failure.status}")
        # discord.py only waits out a 429 that carries a Via header (else it assumes a Cloudflare ban).
        headers = {
            "Retry-After": str(max(1, round(failure.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(failure.retry_after),
            "X-RateLimit-Reset": str(time.time() + failure.retry_after),
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Bucket": "standin",
            "Via": "1.1 google",
        }
        body = {"message": "You are being rate limited.", "retry_after": failure.retry_after, "global": False}
        return _json(body, 429, headers)

    async def _get_gateway(self, req: _Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, req: _Request) -> web.Response:
        return _json({**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_user(self, req: _Request, user_id: str) -> web.Response:
        user = self.users.get(int(user_id))
        return _json(user) if user else _error(404, "Unknown User", 10013)

    async def _create_dm(self, req: _Request) -> web.Response:
        user = self.users.get(int(req.body["recipient_id"]))
        if user is None:
            return _error(404, "Unknown User", 10013)
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return _json(channel)
        channel = self._dm_channel(self._snowflake(), user)
        self.channels[int(channel["id"])] = channel
        return _json(channel)

    async def _get_application(self, req: _Request) -> web.Response:
        owner = _user(self.owner_id, "owner", "주인")
        return _json(
            {
                "id": str(self.application_id),
                "name": "KULLM",
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "team": None,
                "verify_key": "0" * 64,
                "flags": 1 << 19,
                "bot": self.bot_user,
            }
        )

    async def _bulk_commands(self, req: _Request, app_id: str, guild_id: str | None) -> web.Response:
        if int(app_id) != self.application_id:
            return _error(403, "Missing Access", 50001)
        scope = guild_id or "global"
        if req.method == "GET":
            return _json(self.commands.get(scope, []))
        registered = []
        for command in req.body or []:
            kind = command.get("type", 1)
            # Discord keeps a command's id across overwrites as long as its name and type stay the same.
            cid = self._command_ids.setdefault((scope, command["name"], kind), self._snowflake())
            entry = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": str(cid),
                "application_id": app_id,
                "type": kind,
                "version": str(self._snowflake()),
            }
            if guild_id:
                entry["guild_id"] = guild_id
            registered.append(entry)
        self.commands[scope] = registered
        return _json(registered)

    async def _get_channel(self, req: _Request, channel_id: str) -> web.Response:
        channel = self.channels.get(int(channel_id))
        return _json(channel) if channel else _error(404, "Unknown Channel", 10003)

    async def _typing(self, req: _Request, channel_id: str) -> web.Response:
        return _no_content() if int(channel_id) in self.channels else _error(404, "Unknown Channel", 10003)

    async def _channel_messages(self, req: _Request, channel_id: str) -> web.Response:
        cid = int(channel_id)
        if cid not in self.channels:
            return _error(404, "Unknown Channel", 10003)
        if req.method == "GET":
            return self._history(cid, req.query)
        body = req.body or {}
        ref = body.get("message_reference")
        if ref and int(ref["message_id"]) not in self.messages:
            if ref.get("fail_if_not_exists", True):
                return _error(400, "Invalid Form Body: Unknown message", 50035)
            body = {k: v for k, v in body.items() if k != "message_reference"}
        msg = self._new_message(cid, self.bot_user, body, req.files)
        await self._announce("MESSAGE_CREATE", msg)
        return _json(self._wire(msg))

    def _history(self, channel_id: int, query: Mapping[str, str]) -> web.Response:
        limit = int(query.get("limit", 50))
        before, after = int(query.get("before", 1 << 63)), int(query.get("after", 0))
        found = [m for m in self.messages_in(channel_id) if after < int(m["id"]) < before]
        # Newest first, like Discord; with only `after`, the page starts right after that message.
        page = found[:limit] if "after" in query and "before" not in query else found[-limit:]
        return _json([self._wire(m) for m in reversed(page)])

    async def _one_message(self, req: _Request, channel_id: str, message_id: str) -> web.Response:
        msg = self.messages.get(int(message_id))
        if msg is None or msg["channel_id"] != channel_id:
            return _error(404, "Unknown Message", 10008)
        if req.method == "GET":
            return _json(self._wire(msg))
        is_own = msg["author"]["id"] == self.bot_user["id"]
        if req.method == "PATCH":
            if not is_own:
                return _error(403, "Cannot edit a message authored by another user", 50005)
            self._edit(msg, req.body or {}, req.files)
            await self._announce("MESSAGE_UPDATE", msg)
            return _json(self._wire(msg))
        if not is_own and not self.permissions_of(self.bot_id) & MANAGE_MESSAGES:
            return _error(403, "Missing Permissions", 50013)
        await self._delete(msg)
        return _no_content()

    async def delete_message(self, message_id: int) -> None:
        """A moderator deletes a message: it is gone for the bot too (404 Unknown Message on edit)."""
        await self._delete(self.messages[message_id])

    async def _delete(self, msg: dict[str, Any]) -> None:
        self.deleted_messages[int(msg["id"])] = self.messages.pop(int(msg["id"]))
        guild_id = self._guild_of(int(msg["channel_id"]))
        data = {"id": msg["id"], "channel_id": msg["channel_id"], **({"guild_id": str(guild_id)} if guild_id else {})}
        if not msg["flags"] & MESSAGE_EPHEMERAL:
            await self._dispatch("MESSAGE_DELETE", data, GUILD_MESSAGES if guild_id else DIRECT_MESSAGES)

    async def _create_thread(self, parent_id: int, thread_id: int, body: dict[str, Any]) -> web.Response:
        now = _now()
        thread = {
            "id": str(thread_id),
            "type": body.get("type", 11),
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": self.bot_user["id"],
            "name": body["name"],
            "last_message_id": None,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "rate_limit_per_user": body.get("rate_limit_per_user", 0),
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
            "member": {"id": str(thread_id), "user_id": self.bot_user["id"], "join_timestamp": now, "flags": 0},
        }
        self.threads[thread_id] = self.channels[thread_id] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True}, GUILDS)
        return _json(thread, 201)

    async def _thread_from_message(self, req: _Request, channel_id: str, message_id: str) -> web.Response:
        msg = self.messages.get(int(message_id))
        if msg is None or msg["channel_id"] != channel_id:
            return _error(404, "Unknown Message", 10008)
        if int(message_id) in self.threads:
            return _error(400, "A thread has already been created for this message", 160004)
        # Discord gives a thread started from a message the id of that message.
        response = await self._create_thread(int(channel_id), int(message_id), req.body or {})
        msg["thread"] = self.threads[int(message_id)]
        return response

    async def _thread_without_message(self, req: _Request, channel_id: str) -> web.Response:
        if int(channel_id) not in self.channels:
            return _error(404, "Unknown Channel", 10003)
        return await self._create_thread(int(channel_id), self._snowflake(), req.body or {})

    async def _reaction_route(
        self, req: _Request, channel_id: str, message_id: str, emoji: str | None, who: str | None
    ) -> web.Response:
        if int(message_id) not in self.messages:
            return _error(404, "Unknown Message", 10008)
        if req.method == "PUT" and (emoji is None or who != "@me"):
            return _error(405, "405: Method Not Allowed")
        if who is not None:
            user_id = self.bot_id if who == "@me" else int(who)
            await self._react(int(channel_id), int(message_id), user_id, emoji or "", add=req.method == "PUT")
            return _no_content()
        for name, users in list(self._reactions.get(int(message_id), {}).items()):  # remove all (of one emoji)
            for user_id in list(users) if emoji in (None, name) else []:
                await self._react(int(channel_id), int(message_id), user_id, name, add=False)
        return _no_content()

    # ---- interactions ------------------------------------------------------------------------------------------

    def _response_message_type(self, it: dict[str, Any]) -> int:
        if it["type"] == 2:
            return 20 if it["data"].get("type", 1) == 1 else 23  # CHAT_INPUT_COMMAND / CONTEXT_MENU_COMMAND
        return 0

    def _webhook_author_payload(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "webhook_id": str(self.application_id), "application_id": str(self.application_id)}

    async def _callback(self, req: _Request, interaction_id: str, token: str) -> web.Response:
        it = self._interactions.get(token)
        if it is None or it["id"] != int(interaction_id):
            return _error(404, "Unknown interaction", 10062)
        if it["acked"]:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        body = req.body or {}
        kind, data = int(body.get("type", 0)), body.get("data") or {}
        it["acked"] = True
        self.interaction_responses.append({"interaction_id": it["id"], "token": token, "type": kind, "data": data})
        message = await self._apply_callback(it, kind, data, req.files)
        if not _truthy(req.query.get("with_response")):
            return _no_content()
        info: dict[str, Any] = {
            "id": str(it["id"]),
            "type": it["type"],
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(message and message["flags"] & MESSAGE_EPHEMERAL),
        }
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            info["response_message_id"] = message["id"]
            resource["message"] = self._wire(message)
        return _json({"interaction": info, "resource": resource})

    async def _apply_callback(
        self, it: dict[str, Any], kind: int, data: dict[str, Any], files: list[tuple[str, str, bytes]]
    ) -> dict[str, Any] | None:
        if kind in (4, 5):  # CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE ("thinking...")
            payload = self._webhook_author_payload(data if kind == 4 else {"flags": data.get("flags", 0)})
            if kind == 5:
                payload["flags"] = (int(payload.get("flags") or 0) & MESSAGE_EPHEMERAL) | MESSAGE_LOADING
            msg = self._new_message(it["channel_id"], self.bot_user, payload, files, self._response_message_type(it))
            it["original_id"], it["loading"] = int(msg["id"]), kind == 5
            await self._announce("MESSAGE_CREATE", msg)
            return msg
        if kind in (6, 7) and it["message_id"] is not None:  # DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE
            it["original_id"] = it["message_id"]
            msg = self._message(it["message_id"])
            if kind == 7:
                self._edit(msg, data, files)
                await self._announce("MESSAGE_UPDATE", msg)
            return msg if kind == 7 else None
        if kind == 9:  # MODAL
            self.modals[data["custom_id"]] = data
        return None

    def _interaction_for(self, app_id: str, token: str) -> dict[str, Any] | None:
        it = self._interactions.get(token)
        return it if it is not None and int(app_id) == self.application_id and it["acked"] else None

    async def _followup(self, req: _Request, app_id: str, token: str) -> web.Response:
        it = self._interaction_for(app_id, token)
        if it is None:
            return _error(404, "Unknown Webhook", 10015)
        body = req.body or {}
        if it["loading"]:
            # The first followup after a "thinking" defer becomes that message (keeping its ephemerality).
            msg = self._message(it["original_id"])
            self._edit(msg, {"content": "", **body}, req.files)
            it["loading"] = False
            await self._announce("MESSAGE_UPDATE", msg)
        else:
            msg = self._new_message(
                it["channel_id"],
                self.bot_user,
                self._webhook_author_payload(body),
                req.files,
                self._response_message_type(it),
            )
            await self._announce("MESSAGE_CREATE", msg)
        self.interaction_responses.append(
            {"interaction_id": it["id"], "token": token, "type": "followup", "data": body, "message_id": int(msg["id"])}
        )
        return _json(self._wire(msg)) if _truthy(req.query.get("wait")) else _no_content()

    async def _webhook_message(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        it = self._interaction_for(app_id, token)
        if it is None:
            return _error(404, "Unknown Webhook", 10015)
        message_id = it["original_id"] if which == "@original" else int(which)
        msg = self.messages.get(message_id) if message_id is not None else None
        if msg is None:
            return _error(404, "Unknown Message", 10008)
        if req.method == "GET":
            return _json(self._wire(msg))
        label = "original" if which == "@original" else "followup"
        entry = {"interaction_id": it["id"], "token": token, "message_id": message_id, "data": req.body}
        if req.method == "DELETE":
            self.interaction_responses.append({**entry, "type": f"delete_{label}"})
            await self._delete(msg)
            return _no_content()
        self._edit(msg, req.body or {}, req.files)
        if message_id == it["original_id"]:
            it["loading"] = False
        self.interaction_responses.append({**entry, "type": f"edit_{label}"})
        await self._announce("MESSAGE_UPDATE", msg)
        return _json(self._wire(msg))
