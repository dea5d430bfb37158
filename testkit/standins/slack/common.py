"""What every part of the loopback Slack shares: constants, request signing, Block Kit validation, recorded calls."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEAM_ID, TEAM_DOMAIN, TEAM_NAME = "T0001", "kullm-test", "KULLM Test"
ACK_TIMEOUT = 5.0  # Slack itself gives up on an envelope after 3 s; 5 s leaves room for a slow CI machine
TRIGGER_TTL = 3.0  # a trigger_id expires 3 s after the interaction that issued it
# The scopes a method needs (any one of them), as docs.slack.dev/reference/methods lists them. A method not
# listed needs none (auth.test, views.*: a trigger_id is the permission). The app token's method is apart.
METHOD_SCOPES = {
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.startStream": ("chat:write",),
    "chat.appendStream": ("chat:write",),
    "chat.stopStream": ("chat:write",),
    "conversations.info": ("channels:read", "groups:read", "im:read", "mpim:read"),
    "conversations.replies": ("channels:history", "groups:history", "im:history", "mpim:history"),
    "conversations.history": ("channels:history", "groups:history", "im:history", "mpim:history"),
    "users.conversations": ("channels:read", "groups:read", "im:read", "mpim:read"),
    "users.info": ("users:read",),
    "reactions.add": ("reactions:write",),
    "reactions.remove": ("reactions:write",),
    "assistant.threads.setStatus": ("assistant:write",),
    "assistant.threads.setSuggestedPrompts": ("assistant:write",),
    "assistant.threads.setTitle": ("assistant:write",),
    "agents.sessions.setStatus": ("chat:write",),  # thread-based sessions (the app declared as an agent)
}
MANIFEST = Path(__file__).resolve().parents[3] / "slack" / "manifest.yml"


def manifest_scopes() -> set[str]:
    """The bot scopes the project's Slack app manifest asks for: what an install of the app grants."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    return set(manifest["oauth_config"]["scopes"]["bot"])


def manifest_events() -> set[str]:
    """The bot events the project's Slack app manifest subscribes to."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    return set(manifest["settings"]["event_subscriptions"]["bot_events"])


# agents.sessions.setStatus (docs.slack.dev/reference/methods/agents.sessions.setStatus): its statuses, and the
# longest title (only used when the call creates the session).
AGENT_SESSION_STATUSES = ("active", "processing", "suspended", "closed")
AGENT_SESSION_TITLE_CHARS = 200


# Block Kit limits the stand-in enforces (docs.slack.dev/reference/block-kit): the ones a chatbot streaming long
# LLM answers runs into first.
MAX_BLOCKS, MAX_TEXT, MAX_SECTION_TEXT, MAX_HEADER_TEXT, MAX_MARKDOWN_TOTAL = 50, 40_000, 3_000, 150, 12_000
BLOCK_TYPES = {
    "actions",
    "context",
    "context_actions",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}

Handler = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]


@dataclass
class Call:
    """One Web API (or response_url) request as the stand-in received it; `at` is time.monotonic()."""

    method: str
    args: dict[str, Any]  # query, form and JSON body merged; JSON-encoded form fields (blocks, ...) decoded
    token: str | None
    at: float
    status: int = 200
    content_type: str = ""
    response: Any = None  # the JSON body answered, a dict (for the conformance check); None before it is


@dataclass
class _Failure:
    status: int
    retry_after: int
    error: str | None


class SlackError(Exception):
    """A Web API error: answered as {"ok": false, "error": ...} (plus `extra`) with HTTP 200, as Slack does."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.extra = error, extra


def sign(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers that make `body` a correctly signed Slack HTTP request (v0 HMAC-SHA256 of "v0:{ts}:{body}")."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))


def _text_object_errors(
    obj: Any, where: str, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds or not isinstance(obj.get("text"), str):
        return [f"{where} must be a text object of type {'/'.join(kinds)}"]
    if not obj["text"]:
        return [f"{where}.text must not be empty"]
    if len(obj["text"]) > limit:
        return [f"{where}.text must be at most {limit} characters"]
    return []


def _one_block_errors(block: dict[str, Any], where: str) -> list[str]:
    kind, errors = block["type"], []
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"{where}: section needs text or fields")
        if "text" in block:
            errors += _text_object_errors(block["text"], f"{where}/text", MAX_SECTION_TEXT)
        for j, fld in enumerate(block.get("fields") or []):
            errors += _text_object_errors(fld, f"{where}/fields/{j}", 2000)
    elif kind == "header":
        errors += _text_object_errors(block.get("text"), f"{where}/text", MAX_HEADER_TEXT, ("plain_text",))
    elif kind == "markdown":
        if not isinstance(block.get("text"), str) or not block["text"]:
            errors.append(f"{where}: markdown block needs a non-empty string text")
    elif kind in ("context", "actions"):
        elements, most = block.get("elements"), 10 if kind == "context" else 25
        if not isinstance(elements, list) or not 1 <= len(elements) <= most:
            errors.append(f"{where}: {kind} needs 1..{most} elements")
    elif kind == "rich_text" and not isinstance(block.get("elements"), list):
        errors.append(f"{where}: rich_text needs elements")
    elif kind == "context_actions":
        errors += _context_actions_errors(block, where)
    return errors


def _context_actions_errors(block: dict[str, Any], where: str) -> list[str]:
    """context_actions: 1 to 5 feedback_buttons or icon_button elements (docs.slack.dev/reference/block-kit)."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= 5:
        return [f"{where}: context_actions needs 1..5 elements"]
    errors: list[str] = []
    for j, element in enumerate(elements):
        at = f"{where}/elements/{j}"
        if not isinstance(element, dict) or element.get("type") not in ("feedback_buttons", "icon_button"):
            errors.append(f"{at}: context_actions holds feedback_buttons or icon_button elements")
        elif element["type"] == "feedback_buttons":
            for side in ("positive_button", "negative_button"):
                button = element.get(side)
                if not isinstance(button, dict) or not isinstance(button.get("value"), str):
                    errors.append(f"{at}/{side}: needs a text and a value")
                    continue
                errors += _text_object_errors(button.get("text"), f"{at}/{side}/text", 75, ("plain_text",))
                if len(str(button.get("accessibility_label") or "")) > 75:
                    errors.append(f"{at}/{side}/accessibility_label must be at most 75 characters")
    return errors


def block_errors(blocks: Any, *, feedback_buttons: bool = True) -> list[str]:
    """Why Slack would answer invalid_blocks for these message blocks (empty when they are fine); without
    `feedback_buttons`, a workspace that lacks context_actions refuses that block."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} blocks allowed")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        known = BLOCK_TYPES if feedback_buttons else BLOCK_TYPES - {"context_actions"}
        if not isinstance(block, dict) or block.get("type") not in known:
            errors.append(f"/{i}: unsupported block type {block.get('type') if isinstance(block, dict) else block!r}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_ids:
                errors.append(f"/{i}: duplicate block_id {block_id!r}")
            seen_ids.add(block_id)
        errors += _one_block_errors(block, f"/{i}")
    return errors


def _markdown_total(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "markdown")


def _rich_text(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack attaches to a message a person typed; <@U…> mentions become user elements."""
    elements: list[dict[str, Any]] = []
    for part in re.split(r"(<@[UW][A-Z0-9]+>)", text):
        if not part:
            continue
        mention = re.fullmatch(r"<@([UW][A-Z0-9]+)>", part)
        elements.append({"type": "user", "user_id": mention.group(1)} if mention else {"type": "text", "text": part})
    section = {"type": "rich_text_section", "elements": elements}
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [section]}]
