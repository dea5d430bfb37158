"""Slack's agent sessions (docs.slack.dev/ai/agent-sessions): each answer thread is one session, whose status
follows its question — processing while the question waits and is answered (Slack shows its own stop button, which
stops the answer like ours), active once answered or failed, closed when stopped — titled from the question that
opened it. Where the workspace has no agent sessions (the method unknown, or the app not allowed to call it), the
first refusal turns them off for the process: the assistant pane's status line and the bot's own messages carry on
alone, as before sessions existed.
"""

from __future__ import annotations

import logging
from typing import Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.surface import Outcome

log = logging.getLogger(__name__)


SessionStatus = Literal["processing", "active", "suspended", "closed"]


# What an answer's end makes of its session: stopped by someone, it is over; answered or failed, the thread goes on.
STATUS_AFTER: dict[Outcome, SessionStatus] = {"answered": "active", "failed": "active", "stopped": "closed"}


TITLE_CHARS = 200  # Slack's limit on a session's title


# Errors that mean this workspace (or this app's install) has no agent sessions at all.
UNAVAILABLE = frozenset(
    {"unknown_method", "not_allowed", "not_allowed_token_type", "missing_scope", "feature_not_enabled", "no_permission"}
)


def session_title(question: str) -> str:
    """A session's title: the question's first line, cut to Slack's limit."""
    first = next((line.strip() for line in question.splitlines() if line.strip()), "KULLM")
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


class AgentSessions:
    """Sets the status of the session of an answer's thread (agents.sessions.setStatus), while the workspace has
    them; `available` turns False for good at the first refusal that says it has none."""

    def __init__(self, client: AsyncWebClient, enabled: bool) -> None:
        self.client = client
        self.available = enabled
        self._warned = False

    async def set(
        self, channel: str, thread_ts: str, status: SessionStatus, *, title: str = "", user: str = ""
    ) -> bool:
        """Set the thread's session to `status`, creating it (titled `title`, started by `user`) if it is new; a
        thread-less place (a DM's top level) has none. False when nothing was set: a failure loses only the status."""
        if not self.available or not thread_ts:
            return False
        try:
            response = await self.client.agents_sessions_setStatus(
                channel_id=channel,
                thread_ts=thread_ts,
                status=status,
                title=session_title(title) if title else None,
                initiator_user_id=user or None,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in UNAVAILABLE:
                log.info("slack: no agent sessions here (%s): the pane's status and our own messages only", error)
                self.available = False
            else:
                log.info("slack: agents.sessions.setStatus failed (%s)", error)
            return False
        warning = response.get("warning")
        if warning and not self._warned:
            # missing_agent_session_stopped_event_subscription: Slack's stop button would do nothing.
            log.warning("slack: agents.sessions.setStatus warns %s (see slack/manifest.yml's bot_events)", warning)
            self._warned = True
        return True
