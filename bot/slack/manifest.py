"""The Slack app's manifest in each language: slack/manifest.yml (Korean) and slack/manifest.en.yml (English).

Slack has no localisation for app commands, so each language has its own manifest: the app an operator creates
speaks BOT_LANGUAGE. Both are written from the text catalogue (`python -m bot.slack.manifest` rewrites them;
a test holds the files to it; PyYAML, a development dependency, is needed only to write them), and ask for the
same least privileges.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bot.texts import Language, text
from chatbus import Task

ASK_SHORTCUT = "kullm_ask"
# Message shortcuts that work on the message (or its thread) itself.
TASK_SHORTCUTS: dict[str, Task] = {
    "kullm_summarize": "summarize",
    "kullm_translate": "translate",
    "kullm_proofread": "proofread",
}
FILES: dict[Language, str] = {"ko": "manifest.yml", "en": "manifest.en.yml"}
HEADER = """\
# Create the Slack app in one step: https://api.slack.com/apps → Create New App → From an app manifest.
# This is the {language} app (BOT_LANGUAGE={code}); the other language's is {other}. Written by
# `python -m bot.slack.manifest` from bot/texts/catalogue.py: edit that, not this file.
# Least privilege: read mentions and DMs sent to the bot, post and edit its own messages, the /kullm command,
# the assistant pane (assistant:write: its status line, suggested prompts and thread titles), Slack's agent sessions
# (agent_view: each answer thread a session with a status, a title and Slack's stop button, which sends
# agent_session_stopped), the settings command
# (users:read: whether the person setting a channel's persona is a workspace admin; names in summaries and in the
# line quoting a question), the workspace actions: reading a thread to summarise it when asked
# (channels:history, groups:history, mpim:history) and files shared with a question (files:read), and workspace
# knowledge: the message events of the public and private channels the bot is a member of (message.channels,
# message.groups; stored only where an admin turned knowledge on, dropped otherwise), a channel's history read back
# when it is turned on (channels:history, groups:history), and who may read which channel when someone asks
# (channels:read, groups:read: conversations.info, users.conversations).
"""
SCOPES = [
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "channels:read",
    "chat:write",
    "commands",
    "files:read",
    "groups:history",
    "groups:read",
    "im:history",
    "mpim:history",
    "users:read",
]


def manifest(language: Language) -> dict[str, Any]:
    """The app manifest for `language`."""
    shortcuts = [
        {
            "name": text("modal_title", language),
            "type": "message",
            "callback_id": ASK_SHORTCUT,
            "description": text("shortcut_ask_description", language),
        }
    ]
    shortcuts += [
        {
            "name": text(f"task_{task}", language),
            "type": "message",
            "callback_id": callback_id,
            "description": text(f"shortcut_{task}_description", language),
        }
        for callback_id, task in TASK_SHORTCUTS.items()
    ]
    return {
        "display_information": {
            "name": "KULLM",
            "description": text("app_description", language),
            "background_color": "#1d3557",
        },
        "features": {
            "assistant_view": {"assistant_description": text("pane_description", language)},
            "agent_view": {"agent_description": text("pane_description", language)},
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": "KULLM", "always_online": True},
            "slash_commands": [
                {
                    "command": "/kullm",
                    "description": text("cmd_kullm_description", language),
                    "usage_hint": text("cmd_kullm_usage", language),
                    "should_escape": False,
                },
                {
                    "command": "/" + text("cmd_settings", language),
                    "description": text("cmd_settings_slack_description", language),
                    "usage_hint": text("cmd_settings_usage", language),
                    "should_escape": False,
                },
            ],
            "shortcuts": shortcuts,
        },
        "oauth_config": {"scopes": {"bot": SCOPES}},
        "settings": {
            "event_subscriptions": {
                "bot_events": [
                    "agent_session_stopped",
                    "app_mention",
                    "assistant_thread_started",
                    "message.channels",
                    "message.groups",
                    "message.im",
                ]
            },
            "interactivity": {"is_enabled": True},
            "org_deploy_enabled": False,
            "socket_mode_enabled": True,
            "token_rotation_enabled": False,
        },
    }


def manifest_text(language: Language) -> str:
    """The manifest file's text for `language`, with its header."""
    other: Language = "en" if language == "ko" else "ko"
    header = HEADER.format(
        language="Korean" if language == "ko" else "English", code=language, other=f"slack/{FILES[other]}"
    )
    import yaml  # a development dependency: only this writer needs it

    body: str = yaml.safe_dump(manifest(language), allow_unicode=True, sort_keys=False, width=120)
    return header + body


def main(directory: str = "slack") -> int:
    """Write both manifests into `directory`."""
    for language, name in FILES.items():
        (Path(directory) / name).write_text(manifest_text(language), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
