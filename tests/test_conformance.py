"""The stand-ins against the platforms' own references (tests/reference/): Discord's OpenAPI description and
Slack's recorded samples. Every test that drives the real clients against a stand-in also checks, when it
ends, every response and payload that stand-in produced (the fixtures call `testkit.conformance`);
these tests check the route table and that the checks catch what they must."""

from __future__ import annotations

import json
from typing import Any

from testkit import conformance
from testkit.conformance import (
    discord_has,
    discord_problems,
    discord_request_problems,
    slack_payload_problems,
    slack_response_problems,
)
from testkit.standins.discord import DiscordStandIn
from testkit.standins.slack import SlackStandIn


def test_every_route_of_the_discord_standin_is_in_discords_description() -> None:
    routes = DiscordStandIn()._route_table()
    missing = [f"{m} {path}" for methods, path, *_ in routes for m in methods.split("|") if not discord_has(m, path)]
    assert routes and missing == []


def test_every_method_of_the_slack_standin_has_a_recorded_sample_or_is_listed() -> None:
    without = sorted(m for m in SlackStandIn()._methods if conformance.slack_sample_path(f"api/{m}") is None)
    # Not among the publisher's samples: checked only by the app's own tests.
    assert without == ["reactions.remove"]


def _message(**overrides: Any) -> bytes:
    author = {"id": "1", "username": "a", "avatar": None, "discriminator": "0", "public_flags": 0, "flags": 0}
    author |= {"global_name": None, "primary_guild": None}
    message = {
        "id": "10",
        "channel_id": "20",
        "type": 0,
        "content": "hi",
        "author": author,
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
        "timestamp": "2026-11-28T00:00:00.000000+00:00",
        "edited_timestamp": None,
        "flags": 0,
        "components": [],
        **overrides,
    }
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


def test_the_discord_check_passes_a_real_shape_and_catches_departures() -> None:
    route = "/channels/{channel_id}/messages"
    assert discord_problems("POST", route, 200, _message()) == []
    assert any("'id' is a required property" in p for p in discord_problems("POST", route, 200, _message(id=...)))
    assert any("is not of type" in p for p in discord_problems("POST", route, 200, _message(pinned="no")))
    assert discord_problems("POST", "/channels/{channel_id}/pins", 200, b"{}") == ["POST: not a route of Discord's API"]
    assert discord_problems("PUT", route, 200, b"{}") == ["PUT: not a route of Discord's API"]
    assert discord_problems("POST", "/channels/{channel_id}/typing", 204, b"") == []
    assert discord_problems("POST", route, 404, b'{"message": "Unknown Channel", "code": 10003}') == []
    assert discord_problems("POST", route, 404, b'{"message": "Unknown Channel"}') != [], "an error body has a code"


def test_what_the_bot_sends_discord_is_checked_against_the_routes_request_schema() -> None:
    """Components V2 layouts and user-installable commands, as the description's component and integration schemas
    say; ids may be sent as JSON integers (as discord.py sends them)."""
    messages, commands = "/channels/{channel_id}/messages", "/applications/{application_id}/commands"
    text = {"type": 10, "content": "답변"}
    row = {"type": 1, "components": [{"type": 2, "style": 2, "custom_id": "kullm:cancel:1", "label": "그만"}]}
    layout = {"flags": 32768, "components": [{"type": 17, "components": [text, {"type": 14}, row]}]}
    assert discord_request_problems("POST", messages, layout) == []
    empty = {"flags": 32768, "components": [{"type": 17, "components": [{"type": 10, "content": ""}]}]}
    assert any("should be non-empty" in p for p in discord_request_problems("POST", messages, empty))
    too_long = {"flags": 32768, "components": [{"type": 10, "content": "가" * 4001}]}
    assert discord_request_problems("POST", messages, too_long) != []
    command = {"name": "kullm", "type": 1, "description": "질문", "integration_types": [0, 1], "contexts": [0, 1, 2]}
    assert discord_request_problems("PUT", commands, [command]) == []
    assert discord_request_problems("PUT", commands, [{**command, "integration_types": [7]}]) != []
    assert discord_request_problems("POST", "/users/@me/channels", {"recipient_id": 1100000000000000011}) == []


def test_the_slack_check_passes_a_real_shape_and_catches_departures() -> None:
    ok: dict[str, Any] = {
        "ok": True,
        "channel": "C1",
        "ts": "1.2",
        "message": {"type": "message", "text": "hi", "ts": "1.2"},
    }
    assert slack_response_problems("chat.postMessage", ok) == []
    assert slack_response_problems("chat.postMessage", {k: v for k, v in ok.items() if k != "ts"}) == [
        "chat.postMessage: no `ts`"
    ]
    assert slack_response_problems("chat.postMessage", {**ok, "ts": 1.2}) == [
        "chat.postMessage: `ts` is a number, Slack sends a string"
    ]
    deep = {**ok, "message": {**ok["message"], "blocks": [{"type": "section", "text": "plain"}]}}
    assert slack_response_problems("chat.postMessage", deep) == [
        "chat.postMessage: `message.blocks[0].text` is a string, Slack sends an object"
    ]
    assert slack_response_problems("chat.update", {"ok": False, "error": "message_not_found"}) == []
    sample = conformance.slack_sample("events/AppMentionPayload")
    envelope = {k: v for k, v in sample.items() if k != "event_id"}
    assert "events/AppMentionPayload: no `event_id`" in slack_payload_problems(
        "events/AppMentionPayload", envelope, "event"
    )
    no_ts = {**sample, "event": {k: v for k, v in sample["event"].items() if k != "ts"}}
    assert slack_payload_problems("events/AppMentionPayload", no_ts, "event") == [
        "events/AppMentionPayload: no `event.ts`"
    ]
