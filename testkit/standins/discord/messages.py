"""Messages as Discord stores and returns them: mentions, references, attachments, edits, reactions."""

from __future__ import annotations

import re
import warnings
from typing import Any

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)

from testkit.standins.discord.common import (
    _PRIVATE_KEYS,
    DIRECT_MESSAGE_REACTIONS,
    DIRECT_MESSAGES,
    GUILD_MESSAGE_REACTIONS,
    GUILD_MESSAGES,
    MAX_LAYOUT_COMPONENTS,
    MAX_LAYOUT_TEXT,
    MESSAGE_COMPONENTS_V2,
    MESSAGE_CONTENT,
    MESSAGE_EPHEMERAL,
    MESSAGE_LOADING,
    _now,
    _walk_components,
    numbered,
)
from testkit.standins.discord.state import DiscordState


class Messages(DiscordState):
    """Messages as Discord stores and returns them: mentions, references, attachments, edits, reactions."""

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
            "components": numbered(payload.get("components") or []),
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
            url = f"http://{self.host}:{self.port}/attachments/{channel_id}/{att_id}/{filename}"
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

    def _layout_refusal(self, payload: dict[str, Any], before: dict[str, Any] | None = None) -> str | None:
        """Why Discord would refuse this message body (or edit of `before`) for its Components V2 rules, or None:
        a layout (flag 32768) has no content or embeds, at most 40 components and 4,000 characters of text, and a
        message stays a layout once it is one."""
        flags = int(payload.get("flags") or 0) | (int(before["flags"]) if before else 0)
        if not flags & MESSAGE_COMPONENTS_V2:
            return None
        if self.layouts_refused:
            return "Components V2 are not available here"
        if payload.get("content") or payload.get("embeds") or payload.get("poll"):
            return "a Components V2 message cannot have content, embeds or a poll"
        components = _walk_components(payload.get("components") or (before or {}).get("components") or [])
        if len(components) > MAX_LAYOUT_COMPONENTS:
            return f"{len(components)} components: at most {MAX_LAYOUT_COMPONENTS}"
        shown = sum(len(c.get("content") or "") for c in components if c.get("type") == 10)
        if shown > MAX_LAYOUT_TEXT:
            return f"{shown} characters of text: at most {MAX_LAYOUT_TEXT}"
        return None

    def _edit(self, msg: dict[str, Any], payload: dict[str, Any], files: list[tuple[str, str, bytes]]) -> None:
        for key in ("content", "embeds", "components"):
            if key in payload:
                msg[key] = payload[key] if payload[key] is not None else ("" if key == "content" else [])
        msg["components"] = numbered(msg["components"])
        if payload.get("flags") is not None:  # the ephemeral and layout bits cannot be taken back by an edit
            fixed = MESSAGE_EPHEMERAL | MESSAGE_COMPONENTS_V2
            msg["flags"] = (int(payload["flags"]) & ~MESSAGE_EPHEMERAL) | (msg["flags"] & fixed)
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
        if msg["flags"] & MESSAGE_EPHEMERAL or int(msg["channel_id"]) in self.not_joined:
            return  # ephemeral messages, and messages where the bot is not a member, never reach it
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
