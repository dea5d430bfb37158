"""slack/manifest.yml creates exactly the app the adapter expects, with least privilege."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.settings import SlackSettings
from bot.slack_app import SHORTCUT_ID, TASK_SHORTCUTS

MANIFEST = Path(__file__).resolve().parent.parent / "slack" / "manifest.yml"


def test_manifest_matches_the_adapter() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    features, settings = manifest["features"], manifest["settings"]
    default_settings_command = SlackSettings.model_fields["slack_settings_command"].default
    assert [c["command"] for c in features["slash_commands"]] == ["/kullm", default_settings_command]
    assert [(s["type"], s["callback_id"]) for s in features["shortcuts"]] == [
        ("message", SHORTCUT_ID),
        *(("message", callback_id) for callback_id in TASK_SHORTCUTS),
    ]
    assert sorted(settings["event_subscriptions"]["bot_events"]) == [
        "app_mention",
        "assistant_thread_started",
        "message.im",
    ]
    assert features["assistant_view"]["assistant_description"], "the app is a Slack AI assistant (its pane)"
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True  # DMs with the bot


def test_scopes_are_least_privilege() -> None:
    scopes = yaml.safe_load(MANIFEST.read_text())["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == [
        "app_mentions:read",
        "assistant:write",
        "channels:history",  # a thread, read when someone asks for its summary (no channel events subscribed)
        "chat:write",
        "commands",
        "files:read",  # a file shared with a question
        "groups:history",
        "im:history",
        "mpim:history",
        "users:read",  # /kullm-설정: whether the person setting a persona is a workspace admin; names in summaries
    ]
