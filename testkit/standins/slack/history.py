"""A channel's history as Slack serves it (conversations.history, conversations.replies, users.conversations, all
paged by cursor), and people editing and deleting their messages (message_changed, message_deleted events,
delivered only where the app subscribed to its channels' messages and is a member, as Slack does)."""

from __future__ import annotations

import base64
from typing import Any

from testkit.standins.slack.common import TEAM_ID, SlackError, manifest_events
from testkit.standins.slack.state import SlackState

# Which subscription carries a channel's message events (docs.slack.dev/reference/events/message.channels …).
SUBSCRIPTIONS = {"channel": "message.channels", "group": "message.groups", "im": "message.im", "mpim": "message.mpim"}


class History(SlackState):
    """conversations.history / replies, users.conversations, and edits and deletions by people."""

    def channel_type(self, channel: str) -> str:
        """The `channel_type` of the channel's message events."""
        info = self.channels[channel]
        if info["is_im"]:
            return "im"
        if info["is_mpim"]:
            return "mpim"
        return "group" if info["is_private"] else "channel"

    def dm_with(self, user: str) -> str:
        """The id of `user`'s DM with the app (opened on first use)."""
        return str(self._resolve_channel(user)["id"])

    def delivers_messages(self, channel: str) -> bool:
        """Whether the app receives the channel's `message` events: it subscribed to their kind, and is in it."""
        subscribed = SUBSCRIPTIONS[self.channel_type(channel)] in manifest_events()
        return subscribed and self.bot_user_id in self.channels[channel]["members"]

    def _readable_channel(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        if self.bot_user_id not in channel["members"]:  # a bot reads only the conversations it is in
            raise SlackError("not_in_channel")
        return channel

    async def _history(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        """A channel's top-level messages (and replies broadcast to it), newest first, between `oldest` and `latest`
        (exclusive unless `inclusive`)."""
        channel = self._readable_channel(args)
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or "inf")
        inclusive = str(args.get("inclusive") or "").lower() in ("1", "true")

        def within(ts: str) -> bool:
            at = float(ts)
            return (oldest <= at <= latest) if inclusive else (oldest < at < latest)

        top = [
            m
            for (c, ts), m in self.messages.items()
            if c == channel["id"]
            and within(ts)
            and (m.get("thread_ts") in (None, ts) or m.get("subtype") == "thread_broadcast")
        ]
        top.sort(key=lambda m: float(m["ts"]), reverse=True)
        page, more, cursor = _page(top, args)
        extra = {key: args[key] for key in ("oldest", "latest") if args.get(key)}
        return {
            "messages": [self._wire(m) for m in page],
            "has_more": more,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": cursor},
            **extra,
        }

    async def _replies(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        """A thread: its root, then its replies oldest first (the root repeated on every page, as Slack does)."""
        channel = self._readable_channel(args)
        parent = self.messages.get((channel["id"], str(args.get("ts"))))
        if parent is None:
            raise SlackError("thread_not_found")
        root = self.messages[(channel["id"], parent.get("thread_ts") or parent["ts"])]
        page, more, cursor = _page(self.thread(channel["id"], root["ts"]), args)
        messages = [self._wire(m) for m in [root, *page]]
        return {"messages": messages, "has_more": more, "response_metadata": {"next_cursor": cursor}}

    async def _users_conversations(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        """The conversations a user (the app's own, by default) is a member of, of the `types` asked for."""
        user = str(args.get("user") or self.bot_user_id)
        if user not in self.users:
            raise SlackError("user_not_found")
        types = set(str(args.get("types") or "public_channel").split(","))
        kinds = {"public_channel": "channel", "private_channel": "group", "im": "im", "mpim": "mpim"}
        wanted = {kinds[t] for t in types if t in kinds}
        if len(wanted) != len(types):
            raise SlackError("invalid_types")
        exclude_archived = str(args.get("exclude_archived") or "").lower() in ("1", "true")
        found = [
            {k: v for k, v in c.items() if k != "members"}
            for c in self.channels.values()
            if user in c["members"]
            and self.channel_type(c["id"]) in wanted
            and not (exclude_archived and c["is_archived"])
        ]
        page, _, cursor = _page(found, args)
        return {"channels": page, "response_metadata": {"next_cursor": cursor}}

    # ------------------------------------------------------------------ people changing what they wrote

    def written_earlier(self, channel: str, user: str, text: str, days_ago: float) -> dict[str, Any]:
        """A message `user` wrote `days_ago` days ago: in the channel's history, long past any event."""
        message = self._store(channel, text=text, user=user, thread_ts=None)
        del self.messages[(channel, message["ts"])]
        message["ts"] = f"{float(message['ts']) - days_ago * 86400:.6f}"
        self.messages[(channel, message["ts"])] = message
        return message

    async def edit_user_message(self, channel: str, ts: str, text: str) -> dict[str, Any]:
        """Its author edits a message: stored, and a message_changed event where the app gets the channel's."""
        message = self._message(channel, ts)
        previous = self._wire(message)
        message["text"], message["blocks"] = text, [{"type": "rich_text", "block_id": "e", "elements": []}]
        message["edited"] = {"user": message["user"], "ts": self._next_ts()}
        event = {
            "type": "message",
            "subtype": "message_changed",
            "channel": channel,
            "hidden": True,
            "message": {**self._wire(message), "user_team": TEAM_ID, "source_team": TEAM_ID},
            "previous_message": previous,
            "event_ts": message["edited"]["ts"],
            "ts": message["edited"]["ts"],
            "channel_type": self.channel_type(channel),
        }
        await self._deliver_change(channel, event)
        return message

    async def delete_user_message(self, channel: str, ts: str) -> None:
        """Its author deletes a message: gone from history, and a message_deleted event where the app gets the
        channel's."""
        message = self.messages.pop((channel, ts))
        now = self._next_ts()
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "channel": channel,
            "hidden": True,
            "deleted_ts": ts,
            "previous_message": self._wire(message),
            "event_ts": now,
            "ts": now,
            "channel_type": self.channel_type(channel),
        }
        await self._deliver_change(channel, event)

    async def _deliver_change(self, channel: str, event: dict[str, Any]) -> None:
        if self.delivers_messages(channel):
            await self._send_envelope("events_api", self.event_callback(event), retry=(0, ""))


def _page(items: list[dict[str, Any]], args: dict[str, Any]) -> tuple[list[dict[str, Any]], bool, str]:
    """One page of `items` from the request's `cursor` (opaque, as Slack's are), at most `limit` long; whether more
    follow, and the cursor of the next page ("" on the last)."""
    limit = max(1, min(int(args.get("limit") or 100), 1000))
    cursor = str(args.get("cursor") or "")
    try:
        start = int(base64.b64decode(cursor).decode().split(":", 1)[1]) if cursor else 0
    except (ValueError, IndexError):
        raise SlackError("invalid_cursor") from None
    page = items[start : start + limit]
    more = start + limit < len(items)
    following = base64.b64encode(f"next:{start + limit}".encode()).decode() if more else ""
    return page, more, following
