"""The gateway websocket: identify, resume, heartbeats, and the events people cause (messages, reactions)."""

from __future__ import annotations

import contextlib
import json
import uuid
import warnings
from typing import Any

from aiohttp import WSMsgType, web

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)

from testkit.standins.discord.common import GUILDS, _now
from testkit.standins.discord.state import DiscordState

# What a forward's snapshot keeps of the original (Discord's message snapshot object: no author, no id).
SNAPSHOT_KEYS = (
    "type",
    "content",
    "embeds",
    "attachments",
    "timestamp",
    "edited_timestamp",
    "flags",
    "mentions",
    "mention_roles",
    "components",
)


class Gateway(DiscordState):
    """The gateway websocket: identify, resume, heartbeats, and the events people cause (messages, reactions)."""

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
        files: list[tuple[str, str, bytes]] | None = None,
    ) -> dict[str, Any]:
        """A user posts `content` (with `files`: name, content type, bytes, served from Discord's CDN); the client
        receives MESSAGE_CREATE. Returns the stored message."""
        await self._wait_session()
        payload: dict[str, Any] = {"content": content}
        if reference_message_id is not None:
            payload["message_reference"] = {"message_id": str(reference_message_id)}
        msg = self._new_message(channel_id, author, payload, files)
        if mention_bot and all(m["id"] != self.bot_user["id"] for m in msg["mentions"]):
            msg["mentions"].append(self.bot_user)
        await self._announce("MESSAGE_CREATE", msg)
        return msg

    async def forward_message(self, channel_id: int, author: dict[str, Any], message_id: int) -> dict[str, Any]:
        """`author` forwards the stored message `message_id` into `channel_id`: a message with no content of its own,
        a FORWARD reference to the original and the original as it is now in `message_snapshots` (its files
        included); the client receives MESSAGE_CREATE. Returns the stored forward."""
        await self._wait_session()
        original = self._message(message_id)
        msg = self._new_message(channel_id, author, {"content": ""})
        guild_id = self._guild_of(int(original["channel_id"]))
        msg["message_reference"] = {
            "type": 1,  # FORWARD
            "message_id": original["id"],
            "channel_id": original["channel_id"],
            **({"guild_id": str(guild_id)} if guild_id else {}),
        }
        msg["message_snapshots"] = [{"message": {key: original[key] for key in SNAPSHOT_KEYS if key in original}}]
        await self._announce("MESSAGE_CREATE", msg)
        return msg

    async def edit_user_message(self, message_id: int, content: str) -> dict[str, Any]:
        """Its author edits a stored message; the client receives MESSAGE_UPDATE."""
        await self._wait_session()
        msg = self._message(message_id)
        self._edit(msg, {"content": content}, [])
        await self._announce("MESSAGE_UPDATE", msg)
        return msg

    async def open_thread(self, channel_id: int, author: dict[str, Any], name: str) -> int:
        """`author` starts a public thread in the channel (THREAD_CREATE); returns its id."""
        await self._wait_session()
        thread_id = self._snowflake()
        await self._create_thread(channel_id, thread_id, {"name": name, "type": 11}, owner=str(author["id"]))
        return thread_id

    async def archive_thread(self, thread_id: int) -> None:
        """The thread is archived (THREAD_UPDATE): no longer among the server's active threads."""
        thread = self.threads[thread_id]
        thread["thread_metadata"] |= {"archived": True, "archive_timestamp": _now()}
        await self._dispatch("THREAD_UPDATE", thread, GUILDS)

    async def redeliver_message(self, message_id: int) -> None:
        """Send MESSAGE_CREATE again for a stored message, as Discord may after a resume."""
        await self._announce("MESSAGE_CREATE", self.messages[message_id])

    async def add_reaction(self, channel_id: int, message_id: int, user: dict[str, Any], emoji: str) -> None:
        """`user` reacts with `emoji` (unicode, or "name:id" for a custom emoji); dispatches MESSAGE_REACTION_ADD."""
        await self._wait_session()
        await self._react(channel_id, message_id, int(user["id"]), emoji, add=True)
