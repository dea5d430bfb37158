"""The Block Kit the bot sends: an answer's section with its stop button or vote buttons (Slack's
feedback_buttons, or plain buttons where a workspace lacks them), and the form that asks about a message."""

from __future__ import annotations

import json
import logging
from typing import Any

from bot.slack.mrkdwn import slack_escape
from bot.texts import text

log = logging.getLogger(__name__)


SECTION_LIMIT = 3000


MODAL_ID = "kullm_ask_modal"


CANCEL_ACTION = "kullm_cancel"


VOTE_ACTION = "kullm_vote"  # kullm_vote_up, kullm_vote_down: plain buttons, where Slack lacks feedback_buttons


FEEDBACK_ACTION = "kullm_feedback"  # Slack's feedback_buttons element; its value is "up:<question id>" or "down:…"


MODAL_QUOTE_CHARS = 300  # how much of the chosen message the form quotes


MODAL_PLACEHOLDER_CHARS = 150  # Slack's cap on an input's placeholder


CONTEXT_IN_METADATA = 2500  # private_metadata holds 3,000 characters


def section(shown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shown[:SECTION_LIMIT] or "…"}}


def feedback_block(question_id: str, language: Any) -> dict[str, Any]:
    """Slack's own 👍 / 👎 (feedback_buttons in a context_actions block) under a finished answer."""
    return {
        "type": "context_actions",
        "block_id": "kullm_feedback",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": text("vote_up_button", language)},
                    "accessibility_label": text("vote_up_label", language),
                    "value": f"up:{question_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": text("vote_down_button", language)},
                    "accessibility_label": text("vote_down_label", language),
                    "value": f"down:{question_id}",
                },
            }
        ],
    }


def vote_buttons_block(question_id: str, language: Any) -> dict[str, Any]:
    """👍 / 👎 as plain buttons, where a workspace lacks feedback_buttons."""
    buttons = [
        {
            "type": "button",
            "action_id": f"{VOTE_ACTION}_{vote}",
            "value": question_id,
            "text": {"type": "plain_text", "text": f"{emoji} " + text(f"vote_{vote}_button", language)},
        }
        for vote, emoji in (("up", "👍"), ("down", "👎"))
    ]
    return {"type": "actions", "block_id": "kullm_feedback", "elements": buttons}


def answer_blocks(shown: str, question_id: str, language: Any) -> list[dict[str, Any]]:
    """The placeholder while streaming: the text so far and the stop button."""
    return [
        section(shown),
        {
            "type": "actions",
            "block_id": "kullm_controls",
            "elements": [
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "value": question_id,
                    "text": {"type": "plain_text", "text": "⏹️ " + text("cancel_button", language)},
                }
            ],
        },
    ]


def ask_modal(metadata: dict[str, str], chosen: str, language: Any) -> dict[str, Any]:
    """The form asking about a message: the message quoted, and the question's field with an example."""
    blocks: list[dict[str, Any]] = []
    if chosen.strip():
        shown = chosen.strip()
        shown = shown if len(shown) <= MODAL_QUOTE_CHARS else shown[: MODAL_QUOTE_CHARS - 1] + "…"
        quote = "\n".join(f"&gt; {slack_escape(line)}" for line in shown.splitlines())
        blocks.append(section(f"*{text('modal_quote', language)}*\n{quote}"))
    blocks.append(
        {
            "type": "input",
            "block_id": "question",
            "label": {"type": "plain_text", "text": text("modal_label", language)},
            "element": {
                "type": "plain_text_input",
                "action_id": "value",
                "multiline": True,
                "placeholder": {
                    "type": "plain_text",
                    "text": text("modal_placeholder", language)[:MODAL_PLACEHOLDER_CHARS],
                },
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": MODAL_ID,
        "private_metadata": json.dumps(metadata, ensure_ascii=False),
        "title": {"type": "plain_text", "text": text("modal_title", language)},
        "submit": {"type": "plain_text", "text": text("modal_submit", language)},
        "blocks": blocks,
    }
