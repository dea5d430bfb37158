"""The REST routes under /api/v10 that discord.py calls, answered as Discord's OpenAPI description says."""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from testkit.conformance import route_pattern

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)

from testkit.standins.discord.common import (
    API_PREFIX,
    DIRECT_MESSAGES,
    GUILD_MESSAGES,
    GUILDS,
    MANAGE_MESSAGES,
    MESSAGE_EPHEMERAL,
    Call,
    Handler,
    Served,
    _error,
    _Failure,
    _json,
    _no_content,
    _now,
    _Request,
    user_object,
)
from testkit.standins.discord.state import DiscordState


class RestApi(DiscordState):
    """The REST routes under /api/v10 that discord.py calls, answered as Discord's OpenAPI description says."""

    def _route_table(self) -> list[tuple[str, str, re.Pattern[str], Handler, bool]]:
        """(methods, Discord's path template, its pattern, handler, needs bot auth): paths as Discord's
        OpenAPI description writes them, so the conformance test looks each one up there."""
        ch, msg = "/channels/{channel_id}", "/channels/{channel_id}/messages/{message_id}"
        hook = "/webhooks/{webhook_id}/{webhook_token}"

        def reaction(who: str | None, emoji: bool = True) -> Handler:
            async def handle(req: _Request, channel_id: str, message_id: str, *rest: str) -> web.Response:
                name = rest[0] if emoji else None
                user = who if who != "{user_id}" else rest[1]
                return await self._reaction_route(req, channel_id, message_id, name, user)

            return handle

        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway, True),
            ("GET", "/users/@me", self._get_me, True),
            ("GET", "/users/{user_id}", self._get_user, True),
            ("POST", "/users/@me/channels", self._create_dm, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("PUT|GET", "/applications/{application_id}/commands", self._bulk_commands, True),
            ("PUT|GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._bulk_commands, True),
            ("GET", ch, self._get_channel, True),
            ("POST", ch + "/typing", self._typing, True),
            ("POST|GET", ch + "/messages", self._channel_messages, True),
            ("GET|PATCH|DELETE", msg, self._one_message, True),
            ("POST", msg + "/threads", self._thread_from_message, True),
            ("POST", ch + "/threads", self._thread_without_message, True),
            ("GET", ch + "/threads/archived/public", self._archived_threads, True),
            ("PUT|DELETE", msg + "/reactions/{emoji_name}/@me", reaction("@me"), True),
            ("DELETE", msg + "/reactions/{emoji_name}/{user_id}", reaction("{user_id}"), True),
            ("DELETE", msg + "/reactions/{emoji_name}", reaction(None), True),
            ("DELETE", msg + "/reactions", reaction(None, emoji=False), True),
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._callback, False),
            ("POST", hook, self._followup, False),
            ("GET|PATCH|DELETE", hook + "/messages/@original", self._original_message, False),
            ("GET|PATCH|DELETE", hook + "/messages/{message_id}", self._webhook_message, False),
        ]
        return [(methods, path, route_pattern(path), handler, auth) for methods, path, handler, auth in table]

    async def _original_message(self, req: _Request, app_id: str, token: str) -> web.Response:
        return await self._webhook_message(req, app_id, token, "@original")

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
        route = next((r for r in self._routes if r[2].fullmatch(path) and request.method in r[0].split("|")), None)
        response = await self._answer(request, path, req, route)
        body = response.body if isinstance(response.body, bytes) else b""
        self.served.append(Served(request.method, route[1] if route else None, path, response.status, body, req.body))
        return response

    async def _answer(self, request: web.Request, path: str, req: _Request, route: Any) -> web.Response:
        failure = next((f for f in self._failures if f.method == request.method and f.pattern.fullmatch(path)), None)
        if failure is not None:
            self._failures.remove(failure)
            self.failures_served += 1
            return self._failure_response(failure)
        if route is None:
            return _error(404, "404: Not Found")
        _, _, pattern, handler, needs_auth = route
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, "401: Unauthorized")
        match = pattern.fullmatch(path)
        assert match is not None
        if path.startswith("/channels/") and int(match.group(1)) in self.not_joined:
            return _error(403, "Missing Access", 50001)  # a server or group DM the bot is not a member of
        response: web.Response = await handler(req, *match.groups())
        return response

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
        body["code"] = 0  # Discord's description requires it in every error body
        return _json(body, 429, headers)

    async def _get_gateway(self, req: _Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, req: _Request) -> web.Response:
        return _json({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "ko"})

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
        owner = user_object(self.owner_id, "owner", "주인")
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
                "flags_new": str(1 << 19),
                "type": None,
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "approximate_guild_count": 1,
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "eligible_oauth2_scopes": ["applications.commands", "bot"],
                "bot": self.bot_user,
                "integration_types_config": {
                    "0": {"oauth2_install_params": {"scopes": ["applications.commands", "bot"], "permissions": "0"}},
                    **(
                        {"1": {"oauth2_install_params": {"scopes": ["applications.commands"], "permissions": "0"}}}
                        if self.user_install
                        else {}
                    ),
                },
            }
        )

    async def _bulk_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
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
                "integration_types": command.get("integration_types") or [0],  # guild install, Discord's default
                "id": str(cid),
                "application_id": app_id,
                "type": kind,
                "version": str(self._snowflake()),
            }
            if entry["default_member_permissions"] is not None:  # sent as a number or a string, kept as a string
                entry["default_member_permissions"] = str(entry["default_member_permissions"])
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
        channel = self.channels[cid]
        if channel["type"] == 1 and int(channel["recipients"][0]["id"]) in self.dms_closed:
            return _error(403, "Cannot send messages to this user", 50007)  # DMs from server members turned off
        body = req.body or {}
        ref = body.get("message_reference")
        if ref and int(ref["message_id"]) not in self.messages:
            if ref.get("fail_if_not_exists", True):
                return _error(400, "Invalid Form Body: Unknown message", 50035)
            body = {k: v for k, v in body.items() if k != "message_reference"}
        refused = self._layout_refusal(body)
        if refused:
            return _error(400, f"Invalid Form Body: {refused}", 50035)
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
            refused = self._layout_refusal(req.body or {}, msg)
            if refused:
                return _error(400, f"Invalid Form Body: {refused}", 50035)
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

    async def _create_thread(
        self, parent_id: int, thread_id: int, body: dict[str, Any], owner: str | None = None
    ) -> web.Response:
        now = _now()
        thread = {
            "id": str(thread_id),
            "type": body.get("type", 11),
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": owner or self.bot_user["id"],
            "name": body["name"],
            "last_message_id": None,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "rate_limit_per_user": body.get("rate_limit_per_user") or 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
            "member": {
                "id": str(thread_id),
                "user_id": owner or self.bot_user["id"],
                "join_timestamp": now,
                "flags": 0,
            },
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

    async def _archived_threads(self, req: _Request, channel_id: str) -> web.Response:
        """A channel's archived public threads, the most recently archived first (one page: the stand-in's are few)."""
        threads = [
            t
            for t in self.threads.values()
            if t["parent_id"] == channel_id and t["type"] == 11 and t["thread_metadata"]["archived"]
        ]
        threads.sort(key=lambda t: str(t["thread_metadata"]["archive_timestamp"]), reverse=True)
        return _json({"threads": threads, "members": [], "has_more": False})

    async def _reaction_route(
        self, req: _Request, channel_id: str, message_id: str, emoji: str | None, who: str | None
    ) -> web.Response:
        if int(message_id) not in self.messages:
            return _error(404, "Unknown Message", 10008)
        if who is not None:
            user_id = self.bot_id if who == "@me" else int(who)
            await self._react(int(channel_id), int(message_id), user_id, emoji or "", add=req.method == "PUT")
            return _no_content()
        for name, users in list(self._reactions.get(int(message_id), {}).items()):  # remove all (of one emoji)
            for user_id in list(users) if emoji in (None, name) else []:
                await self._react(int(channel_id), int(message_id), user_id, name, add=False)
        return _no_content()
