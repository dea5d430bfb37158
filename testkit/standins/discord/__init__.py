"""A loopback Discord: REST under /api/v10 and a gateway websocket that the real discord.py client talks to.

Split by protocol surface: `gateway.py` (the websocket and the events it carries), `rest.py` (routes),
`interactions.py` (commands, modals, buttons), `messages.py` (the message model both serve).
"""

from __future__ import annotations

import asyncio
import re
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import yarl
from aiohttp import web

from testkit.standins.serving import listen, wait_for

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

from testkit.standins.discord.common import (
    API_PREFIX,
    DISCORD_EPOCH_MS,
    EVERYONE_PERMISSIONS,
    GUILD_MEMBERS,
    GUILD_PRESENCES,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    VIEW_CHANNEL,
    Call,
    Served,
    _Failure,
    _now,
    user_object,
)
from testkit.standins.discord.gateway import Gateway
from testkit.standins.discord.interactions import Interactions
from testkit.standins.discord.messages import Messages
from testkit.standins.discord.rest import RestApi

T = TypeVar("T")


class DiscordStandIn(Gateway, Messages, RestApi, Interactions):
    """Loopback Discord: REST under /api/v10 and a gateway websocket, recording every call."""

    host = "127.0.0.1"  # where it listens, and the host its URLs name (a compose network's gateway for containers)

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.bot_id, self.application_id, self.guild_id = 1100000000000000001, 1100000000000000002, 1100000000000000100
        self.channel_id, self.other_channel_id = 1100000000000000101, 1100000000000000102
        self.moderator_role_id, self.dm_channel_id = 1100000000000000201, 1100000000000000301
        self.admin_role_id = 1100000000000000202
        self.owner_id = 1100000000000000019  # guild owner who is not a member: owners bypass permission checks
        self.bot_user = user_object(self.bot_id, "KULLM", "구름", bot=True)
        self.alice = user_object(1100000000000000011, "alice", "앨리스")
        self.bob = user_object(1100000000000000012, "bob", "밥")
        self.mod = user_object(1100000000000000013, "mod", "운영자")
        self.admin = user_object(1100000000000000015, "admin", "관리자")
        self.other_bot = user_object(1100000000000000014, "otherbot", None, bot=True)
        self.users: dict[int, dict[str, Any]] = {
            int(u["id"]): u for u in (self.bot_user, self.alice, self.bob, self.mod, self.admin, self.other_bot)
        }
        self.roles: dict[int, dict[str, Any]] = {
            self.guild_id: self._role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0),
            self.moderator_role_id: self._role(self.moderator_role_id, "moderator", MANAGE_MESSAGES, 1),
            self.admin_role_id: self._role(self.admin_role_id, "admin", MANAGE_GUILD, 2),
        }
        self.member_roles: dict[int, list[int]] = {uid: [] for uid in self.users}
        self.member_roles[int(self.mod["id"])] = [self.moderator_role_id]
        self.member_roles[int(self.admin["id"])] = [self.admin_role_id]
        # Commands a server opened to everyone in its integration settings (past default_member_permissions).
        self.opened_commands: set[str] = set()
        self.locales: dict[int, str] = {}  # a member's Discord client language (en-US, ko, …); Korean unless set
        self.dms_closed: set[int] = set()  # users who turned off DMs from server members: the bot gets 403 50007
        self.layouts_refused = False  # an API (or proxy) without Components V2: a layout gets 400 50035
        self.expired_tokens: set[str] = set()  # interactions past Discord's 15 minutes (`expire_interactions`)
        self.channels: dict[int, dict[str, Any]] = {
            self.channel_id: self._text_channel(self.channel_id, "kullm", 0),
            self.other_channel_id: self._text_channel(self.other_channel_id, "general", 1),
            self.dm_channel_id: self._dm_channel(self.dm_channel_id, self.alice),
        }
        # A channel only Bob (and the bot) may see: @everyone is denied View Channel there.
        self.private_channel_id = 1100000000000000103
        self.channels[self.private_channel_id] = {
            **self._text_channel(self.private_channel_id, "secret", 2),
            "permission_overwrites": [
                {"id": str(self.guild_id), "type": 0, "allow": "0", "deny": str(VIEW_CHANNEL)},
                {"id": self.bob["id"], "type": 1, "allow": str(VIEW_CHANNEL | READ_MESSAGE_HISTORY), "deny": "0"},
                {"id": str(self.bot_id), "type": 1, "allow": str(VIEW_CHANNEL | READ_MESSAGE_HISTORY), "deny": "0"},
            ],
        }
        # Places the bot is not a member of, where people who added the app to their account use it: a channel of
        # another server and a group DM. The bot gets 403 Missing Access there and no events from them.
        self.foreign_guild_id, self.foreign_channel_id, self.group_dm_id = (
            1100000000000000400,
            1100000000000000401,
            1100000000000000402,
        )
        self.channels[self.foreign_channel_id] = {
            **self._text_channel(self.foreign_channel_id, "elsewhere", 0),
            "guild_id": str(self.foreign_guild_id),
        }
        self.channels[self.group_dm_id] = {
            **self._dm_channel(self.group_dm_id, self.alice),
            "type": 3,
            "recipients": [self.alice, self.bob],
            "name": None,
            "owner_id": self.alice["id"],
            "icon": None,
        }
        self.not_joined = {self.foreign_channel_id, self.group_dm_id}
        self.user_install = True  # the developer portal offers User Install (integration_types_config "1")
        self.close_on_identify_code: int | None = None
        # recordings
        self.calls: list[Call] = []
        self.served: list[Served] = []  # every REST response, for the conformance check
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted_messages: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, dict[str, Any]] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.interaction_responses: list[dict[str, Any]] = []
        self.modals: dict[str, dict[str, Any]] = {}  # custom_id -> last modal the bot opened (callback type 9)
        self.attachment_data: dict[int, bytes] = {}
        self.attachment_downloads = 0
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
        channels = [c for c in self.channels.values() if c["type"] == 0 and c["guild_id"] == str(self.guild_id)]
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

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    async def _attachment(self, request: web.Request) -> web.Response:
        """An attachment's bytes, as Discord's CDN serves them (no bot token needed: the URL is the key)."""
        self.attachment_downloads += 1
        data = self.attachment_data.get(int(request.match_info["attachment_id"]))
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    async def start(self, *, point_discord_py: bool = True, host: str = "127.0.0.1", url_host: str = "") -> None:
        """Bind `host` (loopback unless told) on a free port, naming `url_host` (else `host`) in its URLs; by default
        also aim discord.py's REST base and gateway URL here."""
        bind, self.host = host, url_host or host
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment)
        self._runner, self.port = await listen(app, bind)
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

    def dm_messages(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        """Live messages of the DM channel with `user` (none before the bot opened it)."""
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return self.messages_in(int(channel["id"]))
        return []

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """Live (not deleted) messages of a channel or thread, in creation order."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    def fail_next(self, method: str, path_regex: str, status: int = 429, retry_after: float = 0.3) -> None:
        """Answer the next REST call whose path (without /api/v10) fullmatches `path_regex` with an error."""
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, retry_after))

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll `predicate` every 0.02 s until it is truthy; return its value or raise AssertionError."""
        return await wait_for(predicate, timeout)
