"""Interactions: slash commands, shortcuts, modals, buttons, trigger ids and response_url."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from testkit.standins.slack.common import TEAM_DOMAIN, TEAM_ID, Call, _truthy
from testkit.standins.slack.state import SlackState


class Interactions(SlackState):
    """Interactions: slash commands, shortcuts, modals, buttons, trigger ids and response_url."""

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
            "is_cleared": False,
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
        message = self._clicked_message(channel, message_ts)
        block_id, button_text = "standin-block", value
        for block in message.get("blocks") or []:
            for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    block_id = block.get("block_id", block_id)
                    button_text = (element.get("text") or {}).get("text", value)
        action = {
            "action_id": action_id,
            "block_id": block_id,
            "text": {"type": "plain_text", "text": button_text, "emoji": True},
            "value": value,
            "type": "button",
        }
        return await self._block_action(message, user, action, expect_ack=expect_ack)

    async def click_feedback(self, channel: str, message_ts: str, positive: bool, user: str) -> dict[str, Any]:
        """A person clicks 👍 (`positive`) or 👎 of the feedback_buttons element under a message."""
        message = self._clicked_message(channel, message_ts)
        found = [
            (block, element)
            for block in message.get("blocks") or []
            if block.get("type") == "context_actions"
            for element in block.get("elements") or []
            if element.get("type") == "feedback_buttons"
        ]
        if not found:
            raise ValueError(f"stand-in: message {channel}/{message_ts} has no feedback_buttons")
        block, element = found[0]
        button = element["positive_button" if positive else "negative_button"]
        action = {
            "action_id": element.get("action_id"),
            "block_id": block.get("block_id", "standin-block"),
            "type": "feedback_buttons",
            "value": button["value"],
        }
        return await self._block_action(message, user, action)

    def _clicked_message(self, channel: str, message_ts: str) -> dict[str, Any]:
        message = self.messages.get((channel, message_ts))
        if message is None:
            raise KeyError(f"stand-in: no message {channel}/{message_ts}")
        return message

    async def _block_action(
        self, message: dict[str, Any], user: str, action: dict[str, Any], *, expect_ack: bool = True
    ) -> dict[str, Any]:
        """Send the block_actions payload of one `action` on `message` by `user`; returns envelope_id, trigger_id,
        response_url."""
        channel, message_ts = message["channel"], message["ts"]
        rid, trigger_id = self._response_target(channel, user, message_ts), self._trigger()
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
            "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
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
