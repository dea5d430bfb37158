"""A loopback Slack: Web API under /api/ and a Socket Mode websocket that real slack-bolt / slack-sdk talk to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from tests.servers import poll

TEAM_ID, TEAM_DOMAIN, TEAM_NAME = "T0001", "kullm-test", "KULLM Test"
ACK_TIMEOUT = 5.0  # Slack itself gives up on an envelope after 3 s; 5 s leaves room for a slow CI machine
TRIGGER_TTL = 3.0  # a trigger_id expires 3 s after the interaction that issued it
# Scopes echoed in X-OAuth-Scopes: bolt copies them from the auth.test response into context.authorize_result.
SCOPES = "app_mentions:read,channels:history,chat:write,commands,im:history,reactions:write,users:read"

# Block Kit limits the stand-in enforces (docs.slack.dev/reference/block-kit): the ones a chatbot streaming long
# LLM answers runs into first.
MAX_BLOCKS, MAX_TEXT, MAX_SECTION_TEXT, MAX_HEADER_TEXT, MAX_MARKDOWN_TOTAL = 50, 40_000, 3_000, 150, 12_000
BLOCK_TYPES = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}

Handler = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]


@dataclass
class Call:
    """One Web API (or response_url) request as the stand-in received it; `at` is time.monotonic()."""

    method: str
    args: dict[str, Any]  # query, form and JSON body merged; JSON-encoded form fields (blocks, ...) decoded
    token: str | None
    at: float
    status: int = 200
    content_type: str = ""


@dataclass
class _Failure:
    status: int
    retry_after: int
    error: str | None


class SlackError(Exception):
    """A Web API error: answered as {"ok": false, "error": ...} (plus `extra`) with HTTP 200, as Slack does."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.extra = error, extra


def sign(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers that make `body` a correctly signed Slack HTTP request (v0 HMAC-SHA256 of "v0:{ts}:{body}")."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))


def _text_object_errors(
    obj: Any, where: str, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds or not isinstance(obj.get("text"), str):
        return [f"{where} must be a text object of type {'/'.join(kinds)}"]
    if not obj["text"]:
        return [f"{where}.text must not be empty"]
    if len(obj["text"]) > limit:
        return [f"{where}.text must be at most {limit} characters"]
    return []


def _one_block_errors(block: dict[str, Any], where: str) -> list[str]:
    kind, errors = block["type"], []
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"{where}: section needs text or fields")
        if "text" in block:
            errors += _text_object_errors(block["text"], f"{where}/text", MAX_SECTION_TEXT)
        for j, fld in enumerate(block.get("fields") or []):
            errors += _text_object_errors(fld, f"{where}/fields/{j}", 2000)
    elif kind == "header":
        errors += _text_object_errors(block.get("text"), f"{where}/text", MAX_HEADER_TEXT, ("plain_text",))
    elif kind == "markdown":
        if not isinstance(block.get("text"), str) or not block["text"]:
            errors.append(f"{where}: markdown block needs a non-empty string text")
    elif kind in ("context", "actions"):
        elements, most = block.get("elements"), 10 if kind == "context" else 25
        if not isinstance(elements, list) or not 1 <= len(elements) <= most:
            errors.append(f"{where}: {kind} needs 1..{most} elements")
    elif kind == "rich_text" and not isinstance(block.get("elements"), list):
        errors.append(f"{where}: rich_text needs elements")
    return errors


def block_errors(blocks: Any) -> list[str]:
    """Why Slack would answer invalid_blocks for these message blocks (empty when they are fine)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} blocks allowed")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append(f"/{i}: unsupported block type {block.get('type') if isinstance(block, dict) else block!r}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_ids:
                errors.append(f"/{i}: duplicate block_id {block_id!r}")
            seen_ids.add(block_id)
        errors += _one_block_errors(block, f"/{i}")
    return errors


def _markdown_total(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "markdown")


def _rich_text(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack attaches to a message a person typed; <@U…> mentions become user elements."""
    elements: list[dict[str, Any]] = []
    for part in re.split(r"(<@[UW][A-Z0-9]+>)", text):
        if not part:
            continue
        mention = re.fullmatch(r"<@([UW][A-Z0-9]+)>", part)
        elements.append({"type": "user", "user_id": mention.group(1)} if mention else {"type": "text", "text": part})
    section = {"type": "rich_text_section", "elements": elements}
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [section]}]


class SlackStandIn:
    """Loopback Slack: Web API under /api/ and a Socket Mode websocket, recording every call."""

    bot_token = "xoxb-test"
    app_token = "xapp-test"
    signing_secret = "test-signing-secret"
    verification_token = "legacy-verification-token"

    def __init__(self) -> None:
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = TEAM_ID, "U0BOT", "B0BOT", "A0APP"
        self.channel_id, self.other_channel_id, self.dm_channel_id = "C0001", "C0002", "D0001"
        self.alice, self.bob = "U0ALICE", "U0BOB"
        self.users: dict[str, dict[str, Any]] = {
            self.alice: self._user(self.alice, "alice", "Alice Kim", "앨리스"),
            self.bob: self._user(self.bob, "bob", "Bob Lee", "밥"),
            self.bot_user_id: self._user(self.bot_user_id, "kullm", "KULLM", "구름", bot_id=self.bot_id),
        }
        self.channels: dict[str, dict[str, Any]] = {
            self.channel_id: self._channel(self.channel_id, "kullm", [self.alice, self.bob, self.bot_user_id]),
            self.other_channel_id: self._channel(self.other_channel_id, "random", [self.alice, self.bob]),
            self.dm_channel_id: self._im(self.dm_channel_id, self.alice),
        }
        self.not_in_channel: set[str] = {self.other_channel_id}
        self.echo_own_messages = False  # True: like real Slack, the bot's own posts come back as message events

        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.envelopes: list[dict[str, Any]] = []  # every envelope sent over Socket Mode, in order
        self.connections = 0
        self.port = 0
        self._hellos = 0

        self._failures: dict[str, list[_Failure]] = {}
        self.failures_served = 0  # injected errors actually answered
        self._micros = 1_700_000_000_000_000  # message ts, as integer microseconds
        self._sockets: list[web.WebSocketResponse] = []
        self._tickets: set[str] = set()
        self._ack_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # event_id -> (body, message)
        self._triggers: dict[str, tuple[float, bool]] = {}  # trigger_id -> (issued at, used)
        self._response_urls: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "conversations.info": self._conversation_info,
            "conversations.replies": self._replies,
            "users.info": self._user_info,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }

    # ---- fixtures of the workspace -----------------------------------------------------------------------------

    def add_member(self, user_id: str, name: str) -> None:
        """A person in the workspace and in the bot's channel."""
        self.users[user_id] = self._user(user_id, name, f"{name.title()} Kim", name)
        self.channels[self.channel_id]["members"].append(user_id)

    def _user(
        self, user_id: str, name: str, real_name: str, display: str, *, bot_id: str | None = None
    ) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": display,
            "display_name_normalized": display,
            "first_name": real_name.split()[0],
            "image_72": f"https://avatars.slack-edge.com/{user_id}_72.png",
            "team": TEAM_ID,
        }
        if bot_id:
            profile |= {"bot_id": bot_id, "api_app_id": "A0APP", "always_active": True}
        return {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "Asia/Seoul",
            "tz_label": "Korea Standard Time",
            "tz_offset": 32400,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": bot_id is not None,
            "is_app_user": False,
            "updated": 1_700_000_000,
        }

    @staticmethod
    def _channel(channel_id: str, name: str, members: list[str]) -> dict[str, Any]:
        return {
            "id": channel_id,
            "name": name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": False,
            "is_archived": False,
            "is_general": False,
            "created": 1_690_000_000,
            "creator": "U0ALICE",
            "context_team_id": TEAM_ID,
            "members": members,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }

    def _im(self, channel_id: str, user: str) -> dict[str, Any]:
        return {
            "id": channel_id,
            "name": "directmessage",  # what slash commands report as channel_name in a DM
            "is_channel": False,
            "is_group": False,
            "is_im": True,
            "is_mpim": False,
            "is_private": True,
            "is_archived": False,
            "created": 1_690_000_000,
            "user": user,
            "is_user_deleted": False,
            "context_team_id": TEAM_ID,
            "members": [user, self.bot_user_id],
        }

    def _resolve_channel(self, value: Any) -> dict[str, Any]:
        """A channel by id, by name (with or without #), or a user id meaning the DM with that user."""
        name = str(value or "")
        if name in self.channels:
            return self.channels[name]
        for channel in self.channels.values():
            if not channel["is_im"] and channel["name"] == name.lstrip("#"):
                return channel
        if name in self.users and name != self.bot_user_id:
            for channel in self.channels.values():
                if channel["is_im"] and channel["user"] == name:
                    return channel
            im = self._im(f"D{len(self.channels) + 1:04d}", name)  # Slack opens the DM on first post
            self.channels[im["id"]] = im
            return im
        raise SlackError("channel_not_found")

    def _next_ts(self) -> str:
        # Slack ts: "<unix seconds>.<6 digits>", unique per channel and increasing; one counter keeps it global.
        self._micros += 100
        return f"{self._micros // 1_000_000}.{self._micros % 1_000_000:06d}"

    def _user_ref(self, user: str) -> dict[str, Any]:
        name = self.users[user]["name"] if user in self.users else user.lower()
        return {"id": user, "username": name, "name": name, "team_id": TEAM_ID}

    def _channel_ref(self, channel: str) -> dict[str, Any]:
        return {"id": channel, "name": self.channels[channel]["name"] if channel in self.channels else channel}

    def _team_ref(self) -> dict[str, Any]:
        return {"id": TEAM_ID, "domain": TEAM_DOMAIN}

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.http_base}/api/"  # slack_sdk joins method names onto it, so the trailing slash matters

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{rid}", self._response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every socket, finish background sends and stop the server."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"stand-in stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- helpers for tests -------------------------------------------------------------------------------------

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Replies in a thread (bot's and people's), oldest first, without the parent."""
        return [m for (c, ts), m in self.messages.items() if c == channel and m.get("thread_ts") == thread_ts != ts]

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of one Web API method, in order."""
        return [c for c in self.calls if c.method == method]

    def fail_next(self, method: str, status: int = 429, retry_after: int = 1, *, error: str | None = None) -> None:
        """Fail the next call of `method`: 429 + Retry-After + ratelimited, another HTTP status, or ok:false `error`."""
        self._failures.setdefault(method, []).append(_Failure(status, retry_after, error))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll `predicate` every 0.02 s until it is truthy; return its value or raise AssertionError."""
        return await poll(predicate, timeout, "stand-in condition")

    def ack_for(self, envelope_id: str) -> dict[str, Any] | None:
        """The app's ack of one envelope, or None if it has not acked (yet)."""
        return next((a for a in self.acks if a["envelope_id"] == envelope_id), None)

    # ---- Socket Mode -------------------------------------------------------------------------------------------

    def _new_socket_url(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}&app_id={self.app_id}"

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        # autoping answers the SDK's "sdk-ping-pong:<t>" pings with the same payload, which is how it tells liveness.
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        hello = {
            "type": "hello",
            "num_connections": len(self._sockets),
            "debug_info": {"host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        try:
            await ws.send_str(json.dumps(hello))
            self._hellos += 1
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_ack(json.loads(msg.data))
        finally:
            self._sockets.remove(ws)
        return ws

    def _on_ack(self, data: dict[str, Any]) -> None:
        envelope_id = data.get("envelope_id")
        if not envelope_id:
            return
        ack = {"envelope_id": envelope_id, "payload": data.get("payload")}
        self.acks.append(ack)
        envelope = next((e for e in self.envelopes if e["envelope_id"] == envelope_id), None)
        if envelope is not None:
            self._apply_ack_payload(envelope, ack["payload"])
        waiter = self._ack_waiters.pop(envelope_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)

    def _apply_ack_payload(self, envelope: dict[str, Any], payload: dict[str, Any] | None) -> None:
        # A slash command's ack body is shown to the user like a response_url post; a modal's response_action
        # "update" replaces the open view.
        if not payload:
            return
        body = envelope["payload"]
        if envelope["type"] == "slash_commands" and ("text" in payload or "blocks" in payload):
            self._deliver_response(payload, {"channel": body["channel_id"], "user": body["user_id"]}, via="ack")
        elif envelope["type"] == "interactive" and payload.get("response_action") == "update":
            for entry in self.views:
                if entry["view"]["id"] == body["view"]["id"]:
                    entry["view"].update(payload.get("view") or {})

    async def _send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        retry: tuple[int, str] | None = None,
        expect_ack: bool = True,
    ) -> str:
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry is not None:
            envelope["retry_attempt"], envelope["retry_reason"] = retry
        # An envelope sent while the app is between connections waits for the next one, as Slack queues it.
        await self.wait_for(lambda: any(not ws.closed for ws in self._sockets), timeout=ACK_TIMEOUT)
        ws = next(ws for ws in reversed(self._sockets) if not ws.closed)  # the newest connection, deterministically
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ack_waiters[envelope_id] = waiter
        self.envelopes.append(envelope)
        await ws.send_str(json.dumps(envelope, ensure_ascii=False))
        if not expect_ack:
            self._ack_waiters.pop(envelope_id, None)
            return envelope_id
        try:
            await asyncio.wait_for(waiter, ACK_TIMEOUT)
        except TimeoutError:
            self._ack_waiters.pop(envelope_id, None)
            raise AssertionError(f"stand-in: no ack for {kind} envelope {envelope_id} within {ACK_TIMEOUT}s") from None
        return envelope_id

    async def disconnect(self) -> None:
        """Ask the app to reconnect ("refresh_requested"); return once its new connection got its hello."""
        before = self._hellos
        ws = next((ws for ws in reversed(self._sockets) if not ws.closed), None)
        if ws is None:
            raise RuntimeError("stand-in: no live Socket Mode connection")
        message = {"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "applink-standin"}}
        await ws.send_str(json.dumps(message))
        await self.wait_for(lambda: self._hellos > before, timeout=10.0)
        await self.wait_for(lambda: ws.closed, timeout=10.0)  # the SDK closes the old one before dialling anew

    async def drop(self) -> None:
        """Close the Socket Mode connection without a disconnect message; return once the app is back."""
        before = self._hellos
        ws = next((ws for ws in reversed(self._sockets) if not ws.closed), None)
        if ws is None:
            raise RuntimeError("stand-in: no live Socket Mode connection")
        await ws.close(code=1011, message=b"applink going away")
        await self.wait_for(lambda: self._hellos > before, timeout=30.0)

    # ---- driving events ----------------------------------------------------------------------------------------

    def event_callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The Events API body around `event` (what Socket Mode carries as payload and HTTP mode POSTs)."""
        return {
            "token": self.verification_token,
            "team_id": TEAM_ID,
            "context_team_id": TEAM_ID,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    def _message_event(self, message: dict[str, Any], kind: str) -> dict[str, Any]:
        event = {k: v for k, v in self._wire(message).items() if k not in ("reactions", "reply_count", "reply_users")}
        event |= {"type": kind, "channel": message["channel"], "event_ts": message["ts"]}
        if kind == "message":
            event["channel_type"] = "im" if message["channel"].startswith("D") else "channel"
        parent = self.messages.get((message["channel"], message.get("thread_ts") or ""))
        if parent is not None and parent["ts"] != message["ts"]:
            event["parent_user_id"] = parent.get("user")
        return event

    async def post_user_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        mention: bool = False,
        retry_attempt: int = 0,
        event_id: str | None = None,
        retry_reason: str | None = None,
        expect_ack: bool = True,
    ) -> dict[str, Any]:
        """A person posts `text`; the app gets a message / app_mention event. Reusing an event_id re-sends it."""
        if event_id is not None and event_id in self._events:
            # A retry carries the very same event (same ts, same event_id); only the envelope is new.
            body, message = self._events[event_id]
        else:
            if mention and f"<@{self.bot_user_id}>" not in text:
                raise ValueError("stand-in: an app_mention's text contains <@bot_user_id>; pass it in `text`")
            if channel not in self.channels:
                raise KeyError(f"stand-in: unknown channel {channel}")
            message = self._store(channel, text=text, user=user, thread_ts=thread_ts, blocks=_rich_text(text))
            message["client_msg_id"] = str(uuid.uuid4())
            body = self.event_callback(self._message_event(message, "app_mention" if mention else "message"), event_id)
            self._events[body["event_id"]] = (body, message)
        reason = retry_reason if retry_reason is not None else ("timeout" if retry_attempt else "")
        await self._send_envelope("events_api", body, retry=(retry_attempt, reason), expect_ack=expect_ack)
        return message

    def slash_command_payload(self, command: str, text: str, user: str, channel: str) -> dict[str, Any]:
        """The fields Slack sends for a slash command (a JSON object in Socket Mode, a form in HTTP mode)."""
        rid, trigger_id = self._response_target(channel, user), self._trigger()
        return {
            "token": self.verification_token,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel,
            "channel_name": self.channels[channel]["name"] if channel in self.channels else "privategroup",
            "user_id": user,
            "user_name": self.users[user]["name"] if user in self.users else user.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": f"{self.http_base}/response/{rid}",
            "trigger_id": trigger_id,
        }

    async def slash_command(
        self, command: str, text: str, user: str, channel: str, *, expect_ack: bool = True
    ) -> dict[str, Any]:
        """A person runs `command text`; returns {"envelope_id", "response_url", "trigger_id"}."""
        payload = self.slash_command_payload(command, text, user, channel)
        envelope_id = await self._send_envelope(
            "slash_commands", payload, accepts_response_payload=True, expect_ack=expect_ack
        )
        return {
            "envelope_id": envelope_id,
            "response_url": payload["response_url"],
            "trigger_id": payload["trigger_id"],
        }

    async def message_shortcut(
        self, callback_id: str, message: dict[str, Any], user: str, channel: str, *, expect_ack: bool = True
    ) -> dict[str, Any]:
        """A person runs message shortcut `callback_id` on `message`; returns envelope_id, trigger_id, response_url."""
        rid, trigger_id = self._response_target(channel, user, message["ts"]), self._trigger()
        payload = {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": f"{time.time():.6f}",
            "team": self._team_ref(),
            "user": self._user_ref(user),
            "channel": self._channel_ref(channel),
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": trigger_id,
            "response_url": f"{self.http_base}/response/{rid}",
            "message_ts": message["ts"],
            "message": self._wire(message),
        }
        envelope_id = await self._send_envelope("interactive", payload, expect_ack=expect_ack)
        return {"envelope_id": envelope_id, "trigger_id": trigger_id, "response_url": payload["response_url"]}

    async def submit_view(
        self, view: dict[str, Any], values: dict[str, dict[str, str]], user: str, *, expect_ack: bool = True
    ) -> dict[str, Any]:
        """A person submits a modal with `values` ({block_id: {action_id: text}}); returns envelope_id, trigger_id."""
        state = {
            block_id: {action_id: {"type": "plain_text_input", "value": value} for action_id, value in actions.items()}
            for block_id, actions in values.items()
        }
        trigger_id = self._trigger()
        payload = {
            "type": "view_submission",
            "team": self._team_ref(),
            "user": self._user_ref(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "trigger_id": trigger_id,
            "view": {**view, "state": {"values": state}},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        # view_submission is the interactive payload whose ack may carry a body (response_action).
        envelope_id = await self._send_envelope(
            "interactive", payload, accepts_response_payload=True, expect_ack=expect_ack
        )
        return {"envelope_id": envelope_id, "trigger_id": trigger_id}

    async def click_button(
        self, channel: str, message_ts: str, action_id: str, value: str, user: str, *, expect_ack: bool = True
    ) -> dict[str, Any]:
        """A person clicks the button `action_id` of a message; returns envelope_id, trigger_id, response_url."""
        message = self.messages.get((channel, message_ts))
        if message is None:
            raise KeyError(f"stand-in: no message {channel}/{message_ts}")
        block_id, button_text = "standin-block", value
        for block in message.get("blocks") or []:
            for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    block_id = block.get("block_id", block_id)
                    button_text = (element.get("text") or {}).get("text", value)
        rid, trigger_id = self._response_target(channel, user, message_ts), self._trigger()
        action_ts = f"{time.time():.6f}"
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user_ref(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
            "trigger_id": trigger_id,
            "team": self._team_ref(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": self._channel_ref(channel),
            "message": self._wire(message),
            "state": {"values": {}},
            "response_url": f"{self.http_base}/response/{rid}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": button_text, "emoji": True},
                    "value": value,
                    "type": "button",
                    "action_ts": action_ts,
                }
            ],
        }
        envelope_id = await self._send_envelope("interactive", payload, expect_ack=expect_ack)
        return {"envelope_id": envelope_id, "trigger_id": trigger_id, "response_url": payload["response_url"]}

    def _trigger(self) -> str:
        trigger_id = f"{int(time.time())}.{TEAM_ID[1:]}.{uuid.uuid4().hex}"
        self._triggers[trigger_id] = (time.monotonic(), False)
        return trigger_id

    def _response_target(self, channel: str, user: str, message_ts: str | None = None) -> str:
        rid = uuid.uuid4().hex
        self._response_urls[rid] = {"channel": channel, "user": user, "message_ts": message_ts}
        return rid

    # ---- messages ----------------------------------------------------------------------------------------------

    def _store(self, channel: str, *, text: str, user: str, thread_ts: str | None, **extra: Any) -> dict[str, Any]:
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "channel": channel,
            "text": text,
            "blocks": extra.pop("blocks", None),
            "thread_ts": thread_ts,
            "user": user,
            "team": TEAM_ID,
            "edits": 0,
            "metadata": extra.pop("metadata", None),
            **extra,
        }
        self.messages[(channel, ts)] = message
        parent = self.messages.get((channel, thread_ts)) if thread_ts else None
        if parent is not None:
            # Slack marks the parent as a thread root and keeps its reply summary current.
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["reply_users"] = sorted({*parent.get("reply_users", []), user})
            parent["latest_reply"] = ts
        return message

    @staticmethod
    def _wire(message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as Slack serialises it: no bookkeeping keys, no nulls, no channel."""
        return {k: v for k, v in message.items() if v is not None and k not in ("edits", "channel")}

    def _content(self, args: dict[str, Any], *, for_update: bool = False) -> dict[str, Any]:
        """Validated text/blocks/metadata of chat.postMessage, chat.update and chat.postEphemeral."""
        text, blocks, markdown_text = args.get("text"), args.get("blocks"), args.get("markdown_text")
        if markdown_text and (text or blocks):
            raise SlackError("markdown_text_conflict")
        if markdown_text:
            if len(markdown_text) > MAX_MARKDOWN_TOTAL:
                raise SlackError("msg_too_long")
            text, blocks = markdown_text, [{"type": "markdown", "text": markdown_text}]
        if not for_update and not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                raise SlackError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
            if _markdown_total(blocks) > MAX_MARKDOWN_TOTAL:
                raise SlackError("msg_blocks_too_long")
        metadata = args.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackError("invalid_metadata_format")
        out: dict[str, Any] = {"text": text if text is not None else ("" if not for_update else None)}
        if blocks is not None:
            out["blocks"] = blocks
        if metadata is not None:
            out["metadata"] = metadata
        if args.get("attachments") is not None:
            out["attachments"] = args["attachments"]
        return out

    def _bot_fields(self) -> dict[str, Any]:
        return {
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "bot_profile": {"id": self.bot_id, "app_id": self.app_id, "name": "kullm", "team_id": TEAM_ID},
        }

    def _message(self, channel: Any, ts: Any) -> dict[str, Any]:
        message = self.messages.get((str(channel), str(ts)))
        if message is None:
            raise SlackError("message_not_found")
        return message

    # ---- Web API -----------------------------------------------------------------------------------------------

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            raw = await request.read()
            if raw:
                args.update(json.loads(raw))
        elif request.can_read_body:
            raw = await request.read()
            args.update(parse_qsl(raw.decode(), keep_blank_values=True))
        for key in ("blocks", "attachments", "metadata", "view"):
            # Form-encoded calls carry structured arguments as JSON strings.
            if isinstance(args.get(key), str) and args[key][:1] in ("[", "{"):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._read_args(request)
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else args.pop("token", None)
        call = Call(method, args, token, time.monotonic(), 200, request.content_type)
        self.calls.append(call)
        failures = self._failures.get(method)
        if failures:
            failure = failures.pop(0)
            self.failures_served += 1
            call.status = failure.status if failure.error is None else 200
            return self._failure_response(failure)
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise SlackError("unknown_method")
            if not token:
                raise SlackError("not_authed")
            if token not in (self.bot_token, self.app_token):
                raise SlackError("invalid_auth")
            # App-level tokens only open Socket Mode connections; bot tokens cannot.
            if (token == self.app_token) != (method == "apps.connections.open"):
                raise SlackError("not_allowed_token_type")
            body = {"ok": True, **await handler(args, token)}
        except SlackError as e:
            body = {"ok": False, "error": e.error, **e.extra}
        return self._json(body)

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            body,
            status=status,
            headers={"X-OAuth-Scopes": SCOPES, "X-Accepted-OAuth-Scopes": "", **(headers or {})},
            dumps=lambda o: json.dumps(o, ensure_ascii=False),
        )

    def _failure_response(self, failure: _Failure) -> web.Response:
        if failure.error is not None:
            return self._json({"ok": False, "error": failure.error})
        if failure.status == 429:
            return self._json({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(failure.retry_after)})
        return self._json({"ok": False, "error": "internal_error"}, failure.status)

    async def _auth_test(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": "kullm",
            "team_id": TEAM_ID,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _connections_open(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        return {"url": self._new_socket_url()}

    async def _post_message(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        if channel["id"] in self.not_in_channel:
            raise SlackError("not_in_channel")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        content = self._content(args)
        thread_ts = args.get("thread_ts") or None
        extra: dict[str, Any] = {
            k: _truthy(args[k]) for k in ("unfurl_links", "unfurl_media", "reply_broadcast") if k in args
        }
        message = self._store(
            channel["id"], user=self.bot_user_id, thread_ts=thread_ts, **content, **extra, **self._bot_fields()
        )
        if self.echo_own_messages:
            body = self.event_callback(self._message_event(message, "message"))
            self._spawn(self._send_envelope("events_api", body, retry=(0, ""), expect_ack=False))
        return {"channel": channel["id"], "ts": message["ts"], "message": self._wire(message)}

    async def _update(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._message(channel["id"], args.get("ts"))
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_update_message")
        content = self._content(args, for_update=True)
        if content["text"] is None and "blocks" not in content and "attachments" not in content:
            raise SlackError("no_text")
        message.update({k: v for k, v in content.items() if v is not None})
        message["edits"] += 1
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel["id"], "ts": message["ts"], "text": message["text"], "message": self._wire(message)}

    async def _delete(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._message(channel["id"], args.get("ts"))
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_delete_message")
        del self.messages[(channel["id"], message["ts"])]
        return {"channel": channel["id"], "ts": message["ts"]}

    async def _post_ephemeral(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        if channel["id"] in self.not_in_channel:
            raise SlackError("not_in_channel")
        user = args.get("user")
        if user not in self.users:
            raise SlackError("user_not_found")
        if user not in channel["members"]:
            raise SlackError("user_not_in_channel")
        content = self._content(args)
        entry = {"channel": channel["id"], "user": user, "text": content["text"], "blocks": content.get("blocks")}
        entry |= {"thread_ts": args.get("thread_ts"), "via": "chat.postEphemeral"}
        self.ephemerals.append(entry)
        return {"message_ts": self._next_ts()}

    async def _permalink(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._message(channel["id"], args.get("message_ts"))
        link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel['id']}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            link += f"?thread_ts={message['thread_ts']}&cid={channel['id']}"
        return {"channel": channel["id"], "permalink": link}

    async def _conversation_info(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        info = {k: v for k, v in channel.items() if k != "members"}
        info["is_member"] = self.bot_user_id in channel["members"]
        return {"channel": info}

    async def _replies(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        parent = self.messages.get((channel["id"], str(args.get("ts"))))
        if parent is None:
            raise SlackError("thread_not_found")
        root = parent.get("thread_ts") or parent["ts"]
        replies = [self._wire(m) for m in [self.messages[(channel["id"], root)], *self.thread(channel["id"], root)]]
        limit = int(args.get("limit") or 1000)
        return {"messages": replies[:limit], "has_more": len(replies) > limit, "response_metadata": {"next_cursor": ""}}

    async def _user_info(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _check_view(self, view: Any) -> dict[str, Any]:
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] view.type must be modal"]})
        problems = []
        if view["type"] == "modal":
            problems += _text_object_errors(view.get("title"), "/view/title", 24, ("plain_text",))
        if len(view.get("blocks") or []) > 100:
            problems.append("/view/blocks: no more than 100 items allowed")
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        return view

    async def _views_open(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        trigger_id = str(args.get("trigger_id") or "")
        if trigger_id not in self._triggers:
            raise SlackError("invalid_trigger_id")
        issued, used = self._triggers[trigger_id]
        if used:
            raise SlackError("trigger_exchanged")
        if time.monotonic() - issued > TRIGGER_TTL:
            raise SlackError("expired_trigger_id")
        self._triggers[trigger_id] = (issued, True)
        view_id = f"V{len(self.views) + 1:04d}"
        view = {
            "id": view_id,
            "team_id": TEAM_ID,
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            "hash": uuid.uuid4().hex[:16],
            "clear_on_close": False,
            "notify_on_close": False,
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "app_installed_team_id": TEAM_ID,
            "bot_id": self.bot_id,
            **self._check_view(args.get("view")),
        }
        self.views.append({"trigger_id": trigger_id, "view": view})
        return {"view": view}

    async def _views_update(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        entry = next(
            (
                e
                for e in self.views
                if (args.get("view_id") and e["view"]["id"] == args["view_id"])
                or (args.get("external_id") and e["view"]["external_id"] == args["external_id"])
            ),
            None,
        )
        if entry is None:
            raise SlackError("not_found")
        if args.get("hash") and args["hash"] != entry["view"]["hash"]:
            raise SlackError("hash_conflict")
        entry["view"].update(self._check_view(args.get("view")))
        entry["view"]["hash"] = uuid.uuid4().hex[:16]
        return {"view": entry["view"]}

    async def _reactions_add(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._message(channel["id"], args.get("timestamp"))
        name = str(args.get("name") or "").strip(":")
        if not name:
            raise SlackError("invalid_name")
        reactions = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise SlackError("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        return {}

    async def _reactions_remove(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._message(channel["id"], args.get("timestamp"))
        name = str(args.get("name") or "").strip(":")
        reaction = next((r for r in message.get("reactions", []) if r["name"] == name), None)
        if reaction is None or self.bot_user_id not in reaction["users"]:
            raise SlackError("no_reaction")
        reaction["users"].remove(self.bot_user_id)
        reaction["count"] -= 1
        if not reaction["count"]:
            message["reactions"].remove(reaction)
        return {}

    # ---- response_url ------------------------------------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.Response:
        target = self._response_urls.get(request.match_info["rid"])
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        call = Call("response_url", body, None, time.monotonic(), 200, request.content_type)
        self.calls.append(call)
        if target is None:
            call.status = 404
            return web.Response(status=404, text="expired_url")
        if not (body.get("text") or body.get("blocks") or body.get("attachments") or body.get("delete_original")):
            call.status = 500  # response_url has no markdown_text: Slack answers no_text to anything without text
            return web.Response(status=500, text="no_text")
        self._deliver_response(body, target, via="response_url", url=str(request.url))
        return web.Response(text="ok")

    def _deliver_response(
        self, body: dict[str, Any], target: dict[str, Any], *, via: str, url: str | None = None
    ) -> None:
        message_ts = target.get("message_ts")
        original = self.messages.get((target["channel"], message_ts)) if message_ts else None
        if original is not None and _truthy(body.get("delete_original")):
            del self.messages[(target["channel"], original["ts"])]
        elif original is not None and _truthy(body.get("replace_original")):
            original.update({k: body[k] for k in ("text", "blocks") if k in body})
            original["edits"] += 1
        elif body.get("response_type") == "in_channel":
            content = {k: body[k] for k in ("text", "blocks", "metadata") if k in body}
            content.setdefault("text", "")
            self._store(
                target["channel"],
                user=self.bot_user_id,
                thread_ts=body.get("thread_ts"),
                **content,
                **self._bot_fields(),
            )
        else:
            entry = {"channel": target["channel"], "user": target["user"], "text": body.get("text")}
            entry |= {"blocks": body.get("blocks"), "via": via, "response_url": url, "body": body}
            self.ephemerals.append(entry)
