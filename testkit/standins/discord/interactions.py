"""Interactions: slash commands, context menus, modals and buttons, their callbacks and webhook follow-ups."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from typing import Any

from aiohttp import web

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)

from testkit.standins.discord.common import (
    ADMINISTRATOR,
    MESSAGE_EPHEMERAL,
    MESSAGE_LOADING,
    _error,
    _json,
    _no_content,
    _Request,
    _truthy,
    _walk_components,
)
from testkit.standins.discord.state import DiscordState


class Interactions(DiscordState):
    """Interactions: slash commands, context menus, modals and buttons, their callbacks and webhook follow-ups."""

    async def slash_command(
        self, name: str, options: dict[str, str], user: dict[str, Any], channel_id: int
    ) -> dict[str, Any]:
        """`user` runs /`name` with `options`; dispatches INTERACTION_CREATE. Returns {"id": int, "token": str}.

        `name` may go on to a subcommand ("kullm-설정 persona set"): its options nest under the group and the
        subcommand, as Discord sends them. A command whose `default_member_permissions` the member lacks is not
        offered to them (PermissionError), unless the server opened it to everyone (`opened_commands`).
        """
        locale = self.locale_of(user)
        command_name, *path = name.split()
        scope, command = self._find_command(command_name, 1, locale, channel_id)
        self._check_offered(command, user, channel_id)
        nodes, declared_options = [], command.get("options", [])
        for part in path:  # SUB_COMMAND_GROUP (2), then SUB_COMMAND (1)
            node = next(
                (o for o in declared_options if _shown_as(o, locale) == part and o["type"] in (1, 2)),
                None,
            )
            if node is None:
                raise KeyError(f"stand-in: /{command_name} has no subcommand {part!r} there")
            nodes.append(node)
            declared_options = node.get("options", [])
        # An option typed by the name the member's client shows is sent under its registered name.
        declared = {_shown_as(o, locale): (o["name"], o.get("type", 3)) for o in declared_options}
        convert: dict[int, Callable[[str], Any]] = {4: int, 5: lambda v: str(v).lower() == "true", 10: float}
        opts = []
        for k, v in options.items():
            registered, kind = declared.get(k, (k, 3))
            opts.append({"name": registered, "type": kind, "value": convert.get(kind, str)(v)})
        for node in reversed(nodes):
            opts = [{"name": node["name"], "type": node["type"], "options": opts}]
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": 1, "options": opts}
        if scope != "global":
            data["guild_id"] = scope
        return await self._interact(2, data, user, channel_id)

    async def message_command(
        self, name: str, target_message_id: int, user: dict[str, Any], channel_id: int
    ) -> dict[str, Any]:
        """`user` picks message context-menu command `name` on a message; dispatches INTERACTION_CREATE."""
        scope, command = self._find_command(name, 3, self.locale_of(user), channel_id)
        self._check_offered(command, user, channel_id)
        target = self._wire(self._message(target_message_id))
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
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
        if row["type"] == 10:  # a text display shown in the modal comes back as its type and id only
            return {"type": 10, "id": row.get("id")}
        return {"type": row["type"], "components": [answer(c) for c in row.get("components", [])]}

    async def click_button(self, message_id: int, custom_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """`user` clicks the button `custom_id` on a stored message; dispatches INTERACTION_CREATE (component)."""
        msg = self._message(message_id)
        if not any(c.get("custom_id") == custom_id for c in _walk_components(msg.get("components", []))):
            raise ValueError(f"stand-in: message {message_id} has no component {custom_id!r}")
        data = {"component_type": 2, "custom_id": custom_id}
        return await self._interact(3, data, user, int(msg["channel_id"]), message=msg)

    def _check_offered(self, command: dict[str, Any], user: dict[str, Any], channel_id: int) -> None:
        """Discord's client offers a command only to members holding its default permissions (administrators
        hold all), a guild-only one only in a server, and where the bot is not a member only a global command
        that user installs and that context allow."""
        if channel_id in self.not_joined:
            context = self._context_of(channel_id)
            if 1 not in (command.get("integration_types") or [0]) or context not in (command.get("contexts") or []):
                raise PermissionError(f"stand-in: /{command['name']} is not offered to user installs there")
            return
        guild_only = command.get("contexts") == [0] or command.get("dm_permission") is False
        if guild_only and self._guild_of(channel_id) is None:
            raise PermissionError(f"stand-in: /{command['name']} is offered only in servers")
        required = int(command.get("default_member_permissions") or 0)
        if command.get("default_member_permissions") is None or command["name"] in self.opened_commands:
            return
        held = self.permissions_of(int(user["id"]))
        if not held & ADMINISTRATOR and held & required != required:
            raise PermissionError(f"stand-in: /{command['name']} is not offered to {user['username']}")

    def locale_of(self, user: dict[str, Any]) -> str:
        """The language `user`'s Discord client is set to (`locales`; Korean unless set)."""
        return self.locales.get(int(user["id"]), "ko")

    def _context_of(self, channel_id: int) -> int:
        """The interaction context a channel gives: GUILD (0), BOT_DM (1), PRIVATE_CHANNEL (2: a group DM, or a DM
        between people)."""
        if self._guild_of(channel_id) is not None:
            return 0
        return 1 if channel_id not in self.not_joined else 2

    def _find_command(
        self, name: str, kind: int, locale: str = "", channel_id: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The synced command a member picks by `name`: as registered, or as their client's `locale` shows it.
        Where the bot is not a member, only global commands are there."""
        scopes = ("global",) if channel_id in self.not_joined else (str(self.guild_id), "global")
        for scope in scopes:  # a guild command shadows a global one, as in the client UI
            for command in self.commands.get(scope, []):
                if _shown_as(command, locale) == name and command.get("type", 1) == kind:
                    return scope, command
        raise KeyError(f"stand-in: no command {name!r} of type {kind} was synced (locale {locale or 'default'})")

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
            "locale": self.locale_of(user),  # the member's client language
            "app_permissions": str(self.permissions_of(self.bot_id)),
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "context": self._context_of(channel_id),
            # The bot's server installed it; elsewhere it is the user's own install that authorises the command.
            "authorizing_integration_owners": (
                {"0": str(guild_id)} if guild_id and channel_id not in self.not_joined else {"1": user["id"]}
            ),
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
        response: dict[str, Any] = {"interaction": info}
        if message is not None:
            info["response_message_id"] = message["id"]
            if kind in (4, 7):  # Discord describes the message as a resource for these two callback types only
                response["resource"] = {"type": kind, "message": self._wire(message)}
        return _json(response)

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

    def expire_interactions(self) -> None:
        """Every interaction so far outlives its token (Discord's 15 minutes): its webhook answers 401 50027."""
        self.expired_tokens.update(self._interactions)

    async def _followup(self, req: _Request, app_id: str, token: str) -> web.Response:
        if token in self.expired_tokens:
            return _error(401, "Invalid Webhook Token", 50027)
        it = self._interaction_for(app_id, token)
        if it is None:
            return _error(404, "Unknown Webhook", 10015)
        body = req.body or {}
        refused = self._layout_refusal(body)
        if refused:
            return _error(400, f"Invalid Form Body: {refused}", 50035)
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
        if token in self.expired_tokens:
            return _error(401, "Invalid Webhook Token", 50027)
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
        refused = self._layout_refusal(req.body or {}, msg)
        if refused:
            return _error(400, f"Invalid Form Body: {refused}", 50035)
        self._edit(msg, req.body or {}, req.files)
        if message_id == it["original_id"]:
            it["loading"] = False
        self.interaction_responses.append({**entry, "type": f"edit_{label}"})
        await self._announce("MESSAGE_UPDATE", msg)
        return _json(self._wire(msg))


def _shown_as(item: dict[str, Any], locale: str) -> str:
    """A command's or option's name as a client in `locale` shows it: its localisation, else its name."""
    return str((item.get("name_localizations") or {}).get(locale) or item["name"])
