"""Socket Mode: apps.connections.open, the websocket, envelopes and acks, and the Events API bodies it carries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from testkit.standins.slack.common import ACK_TIMEOUT, TEAM_ID, _rich_text
from testkit.standins.slack.state import SlackState


class SocketMode(SlackState):
    """Socket Mode: apps.connections.open, the websocket, envelopes and acks, and the Events API bodies it carries."""

    def _new_socket_url(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://{self.host}:{self.port}/socket?ticket={ticket}&app_id={self.app_id}"

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
            event["channel_type"] = self.channel_type(message["channel"])
        parent = self.messages.get((message["channel"], message.get("thread_ts") or ""))
        if parent is not None and parent["ts"] != message["ts"]:
            event["parent_user_id"] = parent.get("user")
        return event

    async def open_assistant_thread(self, user: str, *, from_channel: str | None = None) -> str:
        """A person opens the app's assistant pane: Slack starts a thread in their DM with the app (its parent
        an `assistant_app_thread` message) and sends assistant_thread_started; returns the thread's ts."""
        channel = next(c["id"] for c in self.channels.values() if c.get("is_im") and c.get("user") == user)
        parent = self._store(channel, text="", user=self.bot_user_id, thread_ts=None, subtype="assistant_app_thread")
        self.assistant_threads.add((channel, parent["ts"]))
        context = {"channel_id": from_channel or self.channel_id, "team_id": TEAM_ID, "enterprise_id": None}
        thread = {"user_id": user, "context": context, "channel_id": channel, "thread_ts": parent["ts"]}
        event = {"type": "assistant_thread_started", "assistant_thread": thread, "event_ts": self._next_ts()}
        await self._send_envelope("events_api", self.event_callback(event), retry=(0, ""))
        return str(parent["ts"])

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
        files: list[tuple[str, str, bytes]] | None = None,
    ) -> dict[str, Any]:
        """A person posts `text` (sharing `files`: name, mimetype, bytes); the app gets a message / app_mention
        event. Reusing an event_id re-sends it."""
        if event_id is not None and event_id in self._events:
            # A retry carries the very same event (same ts, same event_id); only the envelope is new.
            body, message = self._events[event_id]
        else:
            if mention and f"<@{self.bot_user_id}>" not in text:
                raise ValueError("stand-in: an app_mention's text contains <@bot_user_id>; pass it in `text`")
            if channel not in self.channels:
                raise KeyError(f"stand-in: unknown channel {channel}")
            shared = {"files": [self.upload(user, *f) for f in files], "upload": False} if files else {}
            if files and not mention:
                shared["subtype"] = "file_share"  # what a message that shares files is, in message events
            message = self._store(channel, text=text, user=user, thread_ts=thread_ts, blocks=_rich_text(text), **shared)
            message["client_msg_id"] = str(uuid.uuid4())
            event = self._message_event(message, "app_mention" if mention else "message")
            # Events about what a person typed also say who they are (what real Slack adds beside the message).
            event |= {"user_team": TEAM_ID, "source_team": TEAM_ID, "user_profile": self._user_profile(user)}
            body = self.event_callback(event, event_id)
            self._events[body["event_id"]] = (body, message)
        if body["event"]["type"] == "message" and not self.delivers_messages(channel):
            return message  # a channel whose messages the app did not subscribe to, or is not in
        if mention and event_id is None and self.delivers_messages(channel):
            # Beside the app_mention, the channel's message event (what subscribing to the channel's messages adds;
            # Slack does not hold the mention back for its ack).
            event = self._message_event(message, "message")
            event |= {"user_team": TEAM_ID, "source_team": TEAM_ID, "user_profile": self._user_profile(user)}
            await self._send_envelope("events_api", self.event_callback(event), retry=(0, ""), expect_ack=False)
        reason = retry_reason if retry_reason is not None else ("timeout" if retry_attempt else "")
        await self._send_envelope("events_api", body, retry=(retry_attempt, reason), expect_ack=expect_ack)
        return message
