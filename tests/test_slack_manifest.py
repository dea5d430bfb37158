"""slack/manifest.yml (Korean) and slack/manifest.en.yml (English) create exactly the app the adapter expects, in
its language, with least privilege; both are the ones the catalogue writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import SlackSettings
from bot.slack.manifest import ASK_SHORTCUT as SHORTCUT_ID
from bot.slack.manifest import FILES, TASK_SHORTCUTS, manifest_text
from bot.texts import Language
from testkit.settings import settings_of

SLACK = Path(__file__).resolve().parent.parent / "slack"
HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")


def manifest(language: Language) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SLACK / FILES[language]).read_text())
    return loaded


@pytest.mark.parametrize("language", ["ko", "en"])
def test_each_languages_manifest_is_the_one_the_catalogue_writes(language: Language) -> None:
    assert (SLACK / FILES[language]).read_text() == manifest_text(language), "run `python -m bot.slack.manifest`"


@pytest.mark.parametrize("language", ["ko", "en"])
def test_manifest_matches_the_adapter(language: Language) -> None:
    features, settings = manifest(language)["features"], manifest(language)["settings"]
    adapter = settings_of(SlackSettings, bot_language=language)
    assert [c["command"] for c in features["slash_commands"]] == ["/kullm", adapter.settings_command]
    assert [(s["type"], s["callback_id"]) for s in features["shortcuts"]] == [
        ("message", SHORTCUT_ID),
        *(("message", callback_id) for callback_id in TASK_SHORTCUTS),
    ]
    assert all(len(s["name"]) <= 25 for s in features["shortcuts"]), "Slack's limit on a shortcut's name"
    assert sorted(settings["event_subscriptions"]["bot_events"]) == [
        "agent_session_stopped",  # Slack's stop button on an agent session
        "app_mention",
        "assistant_thread_started",
        "message.channels",  # workspace knowledge: kept only where an admin turned it on
        "message.groups",
        "message.im",
    ]
    assert features["assistant_view"]["assistant_description"], "the app is a Slack AI assistant (its pane)"
    assert features["agent_view"]["agent_description"], "and an agent: its answer threads are agent sessions"
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True  # DMs with the bot


def test_the_english_app_has_no_korean_and_the_korean_app_speaks_korean() -> None:
    english = yaml.safe_dump(manifest("en"), allow_unicode=True)
    assert not HANGUL.search(english), HANGUL.findall(english)
    korean = manifest("ko")["features"]
    assert (
        korean["slash_commands"][1]["command"] == "/kullm-설정" and korean["shortcuts"][0]["name"] == "KULLM에게 묻기"
    )


@pytest.mark.parametrize("language", ["ko", "en"])
def test_scopes_are_least_privilege(language: Language) -> None:
    scopes = manifest(language)["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == [
        "app_mentions:read",
        "assistant:write",
        "channels:history",  # a thread summarised when asked; a channel's history when its knowledge is turned on
        "channels:read",  # workspace knowledge: which channels are public, and who is in which (users.conversations)
        "chat:write",
        "commands",
        "files:read",  # a file shared with a question
        "groups:history",
        "groups:read",
        "im:history",
        "mpim:history",
        "users:read",  # the settings command: whether someone is a workspace admin; names in summaries and quotes
    ]
