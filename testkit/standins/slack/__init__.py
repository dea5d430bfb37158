"""A loopback Slack: the Web API, Socket Mode and HTTP mode that the real slack-bolt app talks to.

Split by protocol surface: `socket_mode.py` (the websocket and the events it carries), `web_api.py`
(methods), `interactions.py` (commands, shortcuts, modals, buttons, response_url), `messages.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from testkit.standins.serving import listen, wait_for
from testkit.standins.slack.agents import AgentSessions
from testkit.standins.slack.common import TEAM_DOMAIN, TEAM_ID, Call, Handler, SlackError, _Failure, manifest_scopes
from testkit.standins.slack.history import History
from testkit.standins.slack.interactions import Interactions
from testkit.standins.slack.messages import Messages
from testkit.standins.slack.socket_mode import SocketMode
from testkit.standins.slack.web_api import WebApi

T = TypeVar("T")


class SlackStandIn(SocketMode, Messages, WebApi, History, Interactions, AgentSessions):
    """Loopback Slack: Web API under /api/ and a Socket Mode websocket, recording every call."""

    host = "127.0.0.1"  # where it listens, and the host its URLs name (a compose network's gateway for containers)
    bot_token = "xoxb-test"
    app_token = "xapp-test"
    signing_secret = "test-signing-secret"
    verification_token = "legacy-verification-token"

    def __init__(self) -> None:
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = TEAM_ID, "U0BOT", "B0BOT", "A0APP"
        self.channel_id, self.other_channel_id, self.dm_channel_id = "C0001", "C0002", "D0001"
        self.private_channel_id = "C0003"  # a private channel: Alice and the bot are members, Bob is not
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
            self.private_channel_id: self._channel(
                self.private_channel_id, "secret", [self.alice, self.bot_user_id], private=True
            ),
        }
        self.not_in_channel: set[str] = {self.other_channel_id}
        # What installing the project's app grants (its manifest); a call needing another scope gets missing_scope.
        self.granted: set[str] = manifest_scopes()
        # The assistant pane: threads opened in it, and what the app set there (by (channel, thread_ts)).
        self.assistant_threads: set[tuple[str, str]] = set()
        self.statuses: dict[tuple[str, str], str] = {}
        self.status_history: list[tuple[tuple[str, str], str]] = []
        self.suggested_prompts: dict[tuple[str, str], dict[str, Any]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        # Agent sessions (agents.sessions.setStatus) by (channel, thread_ts), and every status set, in order.
        self.agent_sessions = True  # False: the app is not an agent here (the method answers not_allowed)
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.session_history: list[tuple[tuple[str, str], str]] = []
        self.native_streaming = True  # False: chat.startStream is refused, as in a workspace without the feature
        self.feedback_buttons = True  # False: context_actions blocks are invalid_blocks, as where Slack lacks them
        self.loading_messages: dict[tuple[str, str], list[str]] = {}  # the status's rotating lines, by thread
        self.stream_idle_timeout_s = 300.0  # a stream nobody appends to for this long is ended by Slack
        self.echo_own_messages = False  # True: like real Slack, the bot's own posts come back as message events

        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}  # shared files: object, bytes
        self.file_downloads = 0
        self.views: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.envelopes: list[dict[str, Any]] = []  # every envelope sent over Socket Mode, in order
        self.connections = 0
        self.port = 0
        self._hellos = 0

        self._failures: dict[str, list[_Failure]] = {}
        self.failures_served = 0  # injected errors actually answered
        self._micros = time.time_ns() // 1000  # message ts, as integer microseconds: from now, as a live workspace's
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
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
            "agents.sessions.setStatus": self._session_status,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "chat.getPermalink": self._permalink,
            "conversations.info": self._conversation_info,
            "conversations.replies": self._replies,
            "conversations.history": self._history,
            "users.conversations": self._users_conversations,
            "users.info": self._user_info,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }

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
    def _channel(channel_id: str, name: str, members: list[str], *, private: bool = False) -> dict[str, Any]:
        return {
            "id": channel_id,
            "name": name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": private,
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

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.http_base}/api/"  # slack_sdk joins method names onto it, so the trailing slash matters

    async def start(self, host: str = "127.0.0.1", url_host: str = "") -> None:
        """Bind `host` (loopback unless told) on a free port, naming `url_host` (else `host`) in its URLs."""
        bind, self.host = host, url_host or host
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_get("/files-pri/{team_file}/{name}", self._file_download)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._file_download)
        self._runner, self.port = await listen(app, bind)

    def upload(self, user: str, name: str, mimetype: str, data: bytes) -> dict[str, Any]:
        """A file a person shares: its object as events carry it; its bytes behind `url_private`."""
        file_id = f"F{len(self.files) + 1:08d}"
        base = f"{self.http_base}/files-pri/{TEAM_ID}-{file_id}"
        shared = {
            "id": file_id,
            "created": 1_700_000_000,
            "timestamp": 1_700_000_000,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "pretty_type": name.rsplit(".", 1)[-1].upper() if "." in name else "Binary",
            "user": user,
            "user_team": TEAM_ID,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "username": "",
            "size": len(data),
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{user}/{file_id}/{quote(name)}",
        }
        self.files[file_id] = (shared, data)
        return shared

    async def _file_download(self, request: web.Request) -> web.Response:
        """A private file: only with the bot token and files:read; else Slack's sign-in page (an HTML 200)."""
        self.file_downloads += 1
        file_id = request.match_info["team_file"].rsplit("-", 1)[-1]
        authorized = request.headers.get("Authorization") == f"Bearer {self.bot_token}" and "files:read" in self.granted
        if file_id not in self.files or not authorized:
            return web.Response(text="<!DOCTYPE html><title>Slack</title>Sign in", content_type="text/html")
        return web.Response(body=self.files[file_id][1], content_type=self.files[file_id][0]["mimetype"])

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

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Replies in a thread (bot's and people's), oldest first, without the parent."""
        return [m for (c, ts), m in self.messages.items() if c == channel and m.get("thread_ts") == thread_ts != ts]

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of one Web API method, in order."""
        return [c for c in self.calls if c.method == method]

    def fail_next(self, method: str, status: int = 429, retry_after: int = 1, *, error: str | None = None) -> None:
        """Fail the next call of `method`: 429 + Retry-After + ratelimited, another HTTP status, or ok:false `error`."""
        self._failures.setdefault(method, []).append(_Failure(status, retry_after, error))

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll `predicate` every 0.02 s until it is truthy; return its value or raise AssertionError."""
        return await wait_for(predicate, timeout)

    def ack_for(self, envelope_id: str) -> dict[str, Any] | None:
        """The app's ack of one envelope, or None if it has not acked (yet)."""
        return next((a for a in self.acks if a["envelope_id"] == envelope_id), None)
