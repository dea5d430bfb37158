"""Checks of the stand-ins against the platforms' own references (tests/reference/, see its README).

Discord: every route the stand-in serves must be in Discord's OpenAPI description with the same
method, every body it returns must validate against that route's response schema for the
status it answered (`4XX` and the like where the description groups statuses), and every JSON body
the client sent it (a message's components, a command's integration types and contexts) against the
route's request schema. Where Discord's documentation is ahead of its published description, the
description is amended as `DISCORD_AMENDMENTS` says (each with the page that documents it).

Slack's samples are unions of many recorded responses (error keys beside success keys, every kind
of block), so "the same keys and types" is checked as follows:
- a successful response has every top-level key of its method's sample except the keys Slack sends
  only with an error or a warning (`ERROR_KEYS`); a failed one has `ok` and `error`;
- a delivered payload (an Events API body and its `event`, an interaction, a slash command) has
  every top-level key of its sample except the ones real Slack sends only to some apps or
  workspaces (`OPTIONAL_IN_PAYLOADS`, each with its reason);
- at every depth, a key the stand-in sends that the sample also has holds a value of the same JSON
  type (a sample's null says nothing about the type). List items are compared with the sample's
  items of the same `type` where items have one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"
DISCORD_URI = "urn:discord-openapi"

# Sent by Slack only when a call fails or is warned about (or a list is paged).
ERROR_KEYS = frozenset({"error", "needed", "provided", "warning", "errors", "deprecated_argument", "response_metadata"})
OPTIONAL_IN_PAYLOADS = {
    "authed_users": "deprecated: sent only to apps created before 2020",
    "authed_teams": "deprecated: sent only to apps created before 2020",
    "enterprise_id": "Enterprise Grid workspaces only",
    "enterprise_name": "Enterprise Grid workspaces only",
    "enterprise": "Enterprise Grid workspaces only",
    "bot_access_token": "only for apps that use workflow steps' function tokens",
    "function_data": "only for interactions inside a workflow function",
    "interactivity": "only for interactions inside a workflow function",
    "app_unfurl": "only for clicks on an app's link unfurl",
    "view": "block_actions: only for clicks inside a modal or App Home, not on a message",
    "state": "block_actions: only when the message or view has input blocks",
    "client_msg_id": "only on messages typed by a person in a Slack client",
    "files": "only on messages with files",
    "upload": "only on messages with files",
    "attachments": "only on messages with legacy attachments",
    "edited": "only on edited messages",
    "subtype": "only on messages of a subtype (bot_message, file_share, …)",
    "bot_id": "only on messages from bots",
    "bot_profile": "only on messages from bots",
    "app_id": "only on messages from apps",
    "thread_ts": "only on messages in a thread",
    "parent_user_id": "only on replies in a thread",
    "channel_type": "message events: the app_mention event has no channel_type",
    "metadata": "only on messages posted with metadata",
    "username": "only on messages from bots",
    "display_as_bot": "only on messages from bots",
    "blocks": "only on messages with blocks: a bot's text-only post has none",
}
OPTIONAL_IN_RESPONSES = {
    "auth.test": {"expires_in": "only for tokens with rotation on", "enterprise_id": "Enterprise Grid only"},
    "conversations.history": {"oldest": "only when asked with oldest", "latest": "only when asked with latest"},
    "users.conversations": {"arg": "only beside an error about one argument"},
}
# Kinds of list item newer than the samples, whose keys clash with the merged item the samples hold.
UNSAMPLED_ITEMS = {
    "markdown": "the markdown block (2025): its `text` is a string, a section's is an object",
    "mrkdwn": "a text object as a context block's element: no recorded message has one, and its `text` is a string "
    "where the merged elements hold a button's text object",
}
# Null on real Slack outside Enterprise Grid, for a view opened first, or (channel_actions_ts) a channel with no
# channel actions; the samples hold a value.
NULLABLE = frozenset({"enterprise", "enterprise_id", "context_enterprise_id", "previous_view_id", "channel_actions_ts"})


# ---------------------------------------------------------------------------------------------- Discord


# Documented by Discord but missing from its published OpenAPI description (discord-api-spec 74fda0f, the newest):
# (JSON pointer of the schema, the schema put there, where Discord documents it).
DISCORD_AMENDMENTS = (
    (
        "/components/schemas/MessageReferenceType",
        {
            "type": "integer",
            "oneOf": [
                {"title": "DEFAULT", "description": "Reference to a message", "const": 0},
                {"title": "FORWARD", "description": "A message forwarded as it was then", "const": 1},
            ],
            "format": "int32",
        },
        "https://discord.com/developers/docs/resources/message#message-reference-types",
    ),
)


# In what clients send, a snowflake may also be a JSON integer (discord.py sends ids so, and Discord takes them:
# https://discord.com/developers/docs/reference#snowflakes); Discord itself always returns them as strings.
SNOWFLAKE_SENT = {
    "anyOf": [
        {"type": "string", "pattern": "^(0|[1-9][0-9]*)$", "format": "snowflake"},
        {"type": "integer", "minimum": 0},
    ]
}


@cache
def discord_spec(sent: bool = False) -> dict[str, Any]:
    """Discord's description as amended (`DISCORD_AMENDMENTS`); `sent`: as it judges what a client sends."""
    spec = dict(json.loads((REFERENCE / "discord" / "openapi.json").read_text()))
    amendments = [(pointer, schema) for pointer, schema, _ in DISCORD_AMENDMENTS]
    for pointer, schema in amendments + ([("/components/schemas/SnowflakeType", SNOWFLAKE_SENT)] if sent else []):
        *parents, name = pointer.strip("/").split("/")
        node = spec
        for part in parents:
            node = node[part]
        node[name] = schema
    return spec


@cache
def _discord_registry(sent: bool = False) -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(discord_spec(sent), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DISCORD_URI, resource)
    return registry


def discord_has(method: str, template: str) -> bool:
    """True when Discord's description has `method` on the path `template` (written as it writes paths)."""
    return method.lower() in discord_spec()["paths"].get(template, {})


def discord_problems(method: str, template: str | None, status: int, body: bytes) -> list[str]:
    """What is wrong with one response of the stand-in, judged by Discord's description (empty: nothing)."""
    where = f"{method} {template} → {status}"
    if template is None or not discord_has(method, template):
        return [f"{method}: not a route of Discord's API"]
    responses = discord_spec()["paths"][template][method.lower()]["responses"]
    key = next((k for k in (str(status), f"{status // 100}XX", "default") if k in responses), None)
    if key is None:
        return [f"{where}: Discord does not answer this route with {status}"]
    pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{key}"
    response = responses[key]
    if "$ref" in response:
        pointer = response["$ref"].removeprefix("#")
        response = _resolve(pointer)
    content = (response.get("content") or {}).get("application/json")
    if content is None:
        return [] if not body else [f"{where}: Discord sends no body here, the stand-in sent {body[:80]!r}"]
    try:
        document = json.loads(body)
    except ValueError:
        return [f"{where}: the body is not JSON: {body[:80]!r}"]
    schema = {"$ref": f"{DISCORD_URI}#{pointer}/content/application~1json/schema"}
    validator = Draft202012Validator(schema, registry=_discord_registry())
    return [f"{where}: {problem}" for problem in _schema_problems(validator, document)]


def discord_request_problems(method: str, template: str | None, body: Any) -> list[str]:
    """What is wrong with one JSON body the client sent to the route `template`, judged by the route's request
    schema in Discord's description (empty: nothing, or a route that takes no JSON body)."""
    if body is None or template is None or not discord_has(method, template):
        return []
    operation = discord_spec()["paths"][template][method.lower()]
    if "application/json" not in (operation.get("requestBody") or {}).get("content", {}):
        return [f"{method} {template}: Discord takes no JSON body here, the client sent one"]
    pointer = f"/paths/{_escape(template)}/{method.lower()}/requestBody/content/application~1json/schema"
    validator = Draft202012Validator({"$ref": f"{DISCORD_URI}#{pointer}"}, registry=_discord_registry(sent=True))
    return [f"{method} {template} (sent): {problem}" for problem in _schema_problems(validator, body)]


def _schema_problems(validator: Draft202012Validator, document: Any) -> list[str]:
    problems = []
    for error in validator.iter_errors(document):
        while error.context:  # oneOf/anyOf: the branch that got deepest into the body says what is wrong
            error = max(error.context, key=lambda e: len(e.absolute_path))
        problems.append(f"{_path(error.absolute_path)}: {error.message[:300]}")
    return problems


def _escape(template: str) -> str:
    return template.replace("~", "~0").replace("/", "~1")


def _resolve(pointer: str) -> dict[str, Any]:
    node: Any = discord_spec()
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return dict(node)


def route_pattern(template: str) -> re.Pattern[str]:
    """A Discord path template as a regex: ids are digits, tokens and emoji names one path segment."""

    def parameter(match: re.Match[str]) -> str:
        return r"(\d+)" if match.group(1).endswith("_id") else r"([^/]+)"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", parameter, re.escape(template)))


# ---------------------------------------------------------------------------------------------- Slack


@cache
def slack_sample(name: str) -> dict[str, Any]:
    """A recorded sample: `api/chat.postMessage`, `events/AppMentionPayload`, `app-backend/…`; or, for what Slack
    has published no sample of (agent sessions), the shape its reference pages document (`documented/`)."""
    path = slack_sample_path(name)
    assert path is not None, f"no sample of {name}"
    return dict(json.loads(path.read_text()))


def slack_sample_path(name: str) -> Path | None:
    for folder in (REFERENCE / "slack", REFERENCE / "slack" / "documented"):
        if (folder / f"{name}.json").exists():
            return folder / f"{name}.json"
    return None


def slack_response_problems(method: str, body: dict[str, Any]) -> list[str]:
    """What a Web API response of the stand-in lacks or types differently from Slack's sample of `method`."""
    if slack_sample_path(f"api/{method}") is None:
        return [f"{method}: no recorded sample of this method to check against"]
    sample = slack_sample(f"api/{method}")
    if body.get("ok") is False:
        required: set[str] = {"ok", "error"}
    else:
        required = set(sample) - ERROR_KEYS - set(OPTIONAL_IN_RESPONSES.get(method, {}))
    problems = [f"{method}: no `{key}`" for key in sorted(required - set(body))]
    return problems + [f"{method}: {p}" for p in _type_problems(body, sample, "")]


def slack_payload_problems(
    name: str, payload: dict[str, Any], inner: str | None = None, *, form_encoded: bool = False
) -> list[str]:
    """What a payload the stand-in delivered lacks or types differently from Slack's sample `name`.

    `inner` names a nested object checked for missing keys too (`event` of an Events API body).
    `form_encoded`: Slack sends this payload as form fields (a slash command), so every value is a string.
    """
    sample = slack_sample(name)
    if form_encoded:
        sample = {key: value if value is None else _form_value(value) for key, value in sample.items()}
    problems = [f"{name}: no `{key}`" for key in _missing(payload, sample)]
    if inner is not None:
        problems += [f"{name}: no `{inner}.{k}`" for k in _missing(payload.get(inner) or {}, sample[inner])]
    return problems + [f"{name}: {p}" for p in _type_problems(payload, sample, "")]


def _missing(payload: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    return sorted(set(sample) - set(payload) - set(OPTIONAL_IN_PAYLOADS))


def _form_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _type_problems(value: Any, sample: Any, path: str) -> Iterator[str]:
    if sample is None or (value is None and path.rsplit(".", 1)[-1].split("[")[0] in NULLABLE):
        return
    if _kind(value) != _kind(sample):
        yield f"`{path or '.'}` is {_kind(value)}, Slack sends {_kind(sample)}"
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key in sample:
                yield from _type_problems(item, sample[key], f"{path}.{key}" if path else key)
    elif isinstance(value, list) and sample:
        for index, item in enumerate(value):
            yield from _type_problems(item, _item_sample(sample, item), f"{path}[{index}]")


def _item_sample(items: list[Any], item: Any) -> Any:
    """The sample's items merged into one, those of `item`'s `type` where items have a type."""
    if not isinstance(item, dict) or not all(isinstance(i, dict) for i in items):
        return items[0]
    if item.get("type") in UNSAMPLED_ITEMS:
        return None
    same = [i for i in items if i.get("type") == item.get("type")] if "type" in item else items
    merged: dict[str, Any] = {}
    for sample in same or items:  # the samples often merge every kind into one item: then that one
        for key, value in sample.items():
            if merged.get(key) is None:
                merged[key] = value
    return merged


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    kinds: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), "null")


def _path(parts: Any) -> str:
    return "/".join(str(p) for p in parts) or "."


# ---------------------------------------------------------------------------------------------- the stand-ins

EVENT_SAMPLES = {  # by the event's type, and its subtype where that changes its shape
    "app_mention": "events/AppMentionPayload",
    "message": "events/MessagePayload",
    "message/message_changed": "events/MessageChangedPayload",
    "message/message_deleted": "events/MessageDeletedPayload",
    "agent_session_stopped": "events/AgentSessionStoppedPayload",
}
INTERACTION_SAMPLES = {
    "block_actions": "app-backend/BlockActionPayload",
    "message_action": "app-backend/MessageShortcutPayload",
    "view_submission": "app-backend/ViewSubmissionPayload",
}


def discord_standin_problems(standin: Any) -> list[str]:
    """Every response a Discord stand-in served, and every JSON body it was sent, that Discord's description does
    not allow."""
    problems: list[str] = []
    for served in standin.served:
        problems += [
            f"{p} (for {served.path})"
            for p in discord_problems(served.method, served.template, served.status, served.body)
            + discord_request_problems(served.method, served.template, served.request)
        ]
    return sorted(set(problems))


def slack_standin_problems(standin: Any) -> list[str]:
    """Every Web API response and delivered payload of a Slack stand-in that departs from Slack's samples.

    Payloads of kinds with no sample here (other event types) are not checked.
    """
    problems: list[str] = []
    for call in standin.calls:
        sampled = slack_sample_path(f"api/{call.method}") is not None
        if call.response is not None and call.status == 200 and sampled:  # the others: see test_conformance
            problems += slack_response_problems(call.method, call.response)
    for envelope in standin.envelopes:
        payload = envelope["payload"]
        if envelope["type"] == "events_api":
            event = payload.get("event", {})
            kind = (
                f"{event.get('type')}/{event['subtype']}"
                if event.get("subtype") in ("message_changed", "message_deleted")
                else event.get("type")
            )
            sample = EVENT_SAMPLES.get(kind)
            problems += slack_payload_problems(sample, payload, inner="event") if sample else []
        elif envelope["type"] == "interactive" and payload.get("type") in INTERACTION_SAMPLES:
            problems += slack_payload_problems(INTERACTION_SAMPLES[payload["type"]], payload)
        elif envelope["type"] == "slash_commands":
            problems += slack_payload_problems("app-backend/SlashCommandPayload", payload, form_encoded=True)
    return sorted(set(problems))
