"""Redis key names of the contract, each with the reason it exists."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "kullm:"
# Consumer group every worker joins: one delivery of each question to one worker.
WORKER_GROUP = "workers"
# Stream entry field that carries the JSON document.
FIELD = "m"


@dataclass(frozen=True)
class Keys:
    """All key names under one prefix, so several deployments can share a Redis."""

    prefix: str = DEFAULT_PREFIX

    @property
    def questions(self) -> str:
        """Stream of questions, read by the `workers` consumer group."""
        return f"{self.prefix}questions"

    def answers(self, question_id: str) -> str:
        """Stream of answer events for one question; expires an hour after its last event."""
        return f"{self.prefix}answers:{question_id}"

    def inflight(self, platform: str) -> str:
        """Hash question id → delivery record of answers an adapter has not finished posting."""
        return f"{self.prefix}inflight:{platform}"

    def lease(self, question_id: str) -> str:
        """Which adapter process currently posts this answer (PX lease)."""
        return f"{self.prefix}lease:{question_id}"

    def entry(self, question_id: str) -> str:
        """The questions-stream entry answering this question id (SET NX): a second entry with the id is a copy."""
        return f"{self.prefix}entry:{question_id}"

    def cancel(self, question_id: str) -> str:
        """Set when the user asked to stop; workers poll it for questions they decode."""
        return f"{self.prefix}cancel:{question_id}"

    @property
    def dead(self) -> str:
        """Stream of questions that failed `max_deliveries` times, kept for operators."""
        return f"{self.prefix}dead"

    def seen(self, platform: str, event_id: str) -> str:
        """NX marker that drops a platform event delivered twice."""
        return f"{self.prefix}seen:{platform}:{event_id}"

    def thread(self, platform: str, thread_id: str) -> str:
        """List of past turns of one conversation."""
        return f"{self.prefix}thread:{platform}:{thread_id}"

    @property
    def knowledge_channels(self) -> str:
        """Hash "platform:channel" → who turned workspace knowledge on there, and when (`chatbus.knowledge`)."""
        return f"{self.prefix}kn:channels"

    def knowledge_space(self, platform: str, channel: str) -> str:
        """The stem of one channel's knowledge keys: `…:docs`, `…:post:TERM`, `…:time`, `…:stats`."""
        return f"{self.prefix}kn:{platform}:{channel}"

    def knowledge_sum(self, token: str) -> str:
        """A search's scratch sum of postings, deleted in the same round trip."""
        return f"{self.prefix}kn-sum:{token}"

    def rate(self, platform: str, user: str) -> str:
        """Questions a user asked in the current rate window (INCR, expires with the window)."""
        return f"{self.prefix}rate:{platform}:{user}"

    def answered(self, question_id: str) -> str:
        """An answer posted with vote buttons (`AnsweredRecord`), kept while it can be rated (at most 7 days)."""
        return f"{self.prefix}answered:{question_id}"

    def votes(self, question_id: str) -> str:
        """Hash voter → their vote on one answer: a repeated click files nothing, a changed vote no second copy of
        the texts; expires with the answer's record."""
        return f"{self.prefix}votes:{question_id}"

    @property
    def feedback_secret(self) -> str:
        """The key of the voters' HMAC (made once, kept), unless FEEDBACK_SECRET sets one: without it, a voter's
        hash cannot be recomputed from a known user id."""
        return f"{self.prefix}feedback-secret"

    @property
    def feedback(self) -> str:
        """Stream of votes (`Vote`), oldest first, trimmed to FEEDBACK_TTL_DAYS at every vote."""
        return f"{self.prefix}feedback"

    def personas(self, platform: str) -> str:
        """Hash channel id → that channel's `Persona`; kept until an admin clears it."""
        return f"{self.prefix}persona:{platform}"

    @property
    def api_keys(self) -> str:
        """Hash SHA-256(key) → `ApiKey`: the OpenAI-compatible API's keys (`kullm keys`)."""
        return f"{self.prefix}api-keys"

    def api_open(self, name: str) -> str:
        """Sorted set question id → deadline: an API key's questions queued or being answered."""
        return f"{self.prefix}api-open:{name}"

    def usage(self, day: str) -> str:
        """Hash `platform<TAB>user<TAB>channel<TAB>metric` → count, for one UTC day (YYYY-MM-DD); `channel` "*"
        is the user's total over channels (what a daily token quota reads)."""
        return f"{self.prefix}usage:{day}"

    def reserved(self, platform: str, user: str) -> str:
        """Sorted set question id → deadline: a user's answers holding tokens of their daily cap (`chatbus.ledger`);
        a reservation past its deadline is dropped by the next one."""
        return f"{self.prefix}reserved:{platform}:{user}"

    def reserved_tokens(self, platform: str, user: str) -> str:
        """Hash question id → tokens reserved, beside `reserved`; both expire with the latest deadline."""
        return f"{self.prefix}reserved-tokens:{platform}:{user}"

    @property
    def workers(self) -> str:
        """Hash worker name → last heartbeat record, so `kullm status` can count live workers."""
        return f"{self.prefix}workers"
