"""The Web API methods the app calls, answered with the keys of Slack's recorded responses."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from testkit.standins.slack.common import (
    MAX_MARKDOWN_TOTAL,
    METHOD_SCOPES,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
    TRIGGER_TTL,
    Call,
    SlackError,
    _Failure,
    _text_object_errors,
    _truthy,
    block_errors,
)
from testkit.standins.slack.state import SlackState


class WebApi(SlackState):
    """The Web API methods the app calls, answered with the keys of Slack's recorded responses."""

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            raw = await request.read()
            if raw:
                args.update(json.loads(raw))
        elif request.can_read_body:
            raw = await request.read()
            args.update(parse_qsl(raw.decode(), keep_blank_values=True))
        for key in ("blocks", "attachments", "metadata", "view", "chunks"):
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
            response = self._failure_response(failure)
            call.response = json.loads(response.body) if isinstance(response.body, bytes) else None
            return response
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
            needed = METHOD_SCOPES.get(method, ())
            if needed and not self.granted.intersection(needed):
                raise SlackError("missing_scope", needed=",".join(needed), provided=",".join(sorted(self.granted)))
            body = {"ok": True, **await handler(args, token)}
        except SlackError as e:
            body = {"ok": False, "error": e.error, **e.extra}
        call.response = body
        return self._json(body)

    def _json(self, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # bolt copies X-OAuth-Scopes from the auth.test response into context.authorize_result.
        scopes = ",".join(sorted(self.granted))
        return web.json_response(
            body,
            status=status,
            headers={"X-OAuth-Scopes": scopes, "X-Accepted-OAuth-Scopes": "", **(headers or {})},
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
            "app_id": self.app_id,
            "app_name": "KULLM",
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
        self.statuses.pop((channel["id"], thread_ts or ""), None)  # the app replied: Slack clears the status
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

    async def _start_stream(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        """chat.startStream: a reply that grows with chat.appendStream until chat.stopStream."""
        channel = self._resolve_channel(args.get("channel"))
        if channel["id"] in self.not_in_channel:
            raise SlackError("not_in_channel")
        if not self.native_streaming:  # a workspace without the feature
            raise SlackError("feature_not_enabled")
        thread_ts = args.get("thread_ts") or None
        if thread_ts is None and channel.get("is_im"):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] missing thread_ts"]})
        if not channel.get("is_im") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
            # Outside a DM, Slack needs to know whom the stream is for.
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] missing recipient"]})
        text = self._stream_text(args, required=False)
        message = self._store(
            channel["id"], text=text, user=self.bot_user_id, thread_ts=thread_ts, **self._bot_fields()
        )
        message |= {"streaming": True, "streamed": True, "stream_idle_since": time.monotonic(), "appends": 0}
        self._stream_chunks(message, args)
        self.statuses.pop((channel["id"], thread_ts or ""), None)
        return {"channel": channel["id"], "ts": message["ts"]}

    async def _append_stream(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._streaming_message(channel["id"], args.get("ts"))
        message["text"] += self._stream_text(args, required=not args.get("chunks"))
        self._stream_chunks(message, args)
        message["appends"] += 1
        message["stream_idle_since"] = time.monotonic()
        return {"channel": channel["id"], "ts": message["ts"]}

    async def _stop_stream(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._streaming_message(channel["id"], args.get("ts"))
        message["text"] += self._stream_text(args, required=False)
        self._stream_chunks(message, args)
        self._stream_session(channel["id"], message, args)
        if args.get("blocks") is not None:
            errors = block_errors(args["blocks"], feedback_buttons=self.feedback_buttons)
            if errors:
                raise SlackError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
            message["blocks"] = args["blocks"]  # shown under the streamed text
        message["streaming"] = False
        return {"channel": channel["id"], "ts": message["ts"]}

    def _streaming_message(self, channel: str, ts: Any) -> dict[str, Any]:
        message = self._message(channel, ts)
        if message.get("bot_id") != self.bot_id:
            raise SlackError("message_not_owned_by_app")
        idle = time.monotonic() - message.get("stream_idle_since", 0.0)
        if message.get("streaming") and idle > self.stream_idle_timeout_s:
            message["streaming"] = False  # Slack ends a stream nobody appended to for a while
        if not message.get("streaming"):
            raise SlackError("message_not_in_streaming_state")
        return message

    @staticmethod
    def _stream_text(args: dict[str, Any], *, required: bool) -> str:
        text = args.get("markdown_text")
        chunks = [c.get("text", "") for c in args.get("chunks") or [] if c.get("type") == "markdown_text"]
        if text is None and not chunks:
            if required:
                raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] no markdown_text"]})
            return ""
        joined = (text or "") + "".join(chunks)
        if len(joined) > MAX_MARKDOWN_TOTAL:
            raise SlackError("msg_too_long")
        return joined

    def _assistant_thread(self, args: dict[str, Any]) -> tuple[str, str]:
        """The (channel, thread_ts) of an assistant.threads.* call: an assistant thread the app was opened in."""
        key = (str(args.get("channel_id") or ""), str(args.get("thread_ts") or ""))
        if key[0] not in self.channels:
            raise SlackError("channel_not_found")
        if key not in self.assistant_threads:
            raise SlackError("invalid_thread_ts")  # not a thread of the assistant pane
        return key

    async def _set_status(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        key = self._assistant_thread(args)
        if "status" not in args:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] missing status"]})
        lines = args.get("loading_messages")
        if isinstance(lines, str):
            lines = json.loads(lines)
        if lines is not None:
            valid = isinstance(lines, list) and 1 <= len(lines) <= 10 and all(isinstance(x, str) and x for x in lines)
            if not valid:
                raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] loading_messages"]})
            self.loading_messages[key] = lines
        self.statuses[key] = str(args["status"])  # "" clears it; so does the app's next reply in the thread
        self.status_history.append((key, str(args["status"])))
        return {}

    async def _set_suggested_prompts(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        key = self._assistant_thread(args)
        prompts = args.get("prompts")
        if isinstance(prompts, str):
            prompts = json.loads(prompts)
        valid = isinstance(prompts, list) and 1 <= len(prompts) <= 4
        if (
            not isinstance(prompts, list)
            or not valid
            or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts)
        ):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] 1 to 4 prompts"]})
        self.suggested_prompts[key] = {"title": args.get("title"), "prompts": prompts}
        return {}

    async def _set_title(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        key = self._assistant_thread(args)
        if not args.get("title"):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] missing title"]})
        self.titles[key] = str(args["title"])
        return {}

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
