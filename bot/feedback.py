"""👍/👎 on answers: what a vote is filed under (the model, template and engine that answered, kept while a vote is
likely), and the votes themselves, under an HMAC of the voter so nobody can tell who voted."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Literal

from bot.limits import unavailable
from bot.quota import RATE_WINDOW_S
from bot.settings import ClientSettings
from bot.texts import text
from chatbus import AnsweredRecord, Bus, BusError, Done, InflightRecord, Vote

log = logging.getLogger(__name__)
VOTE_WINDOW_S = 7 * 24 * 3600  # how long after it is posted an answer can be rated
VOTES_PER_MINUTE = 20  # a person's clicks on vote buttons, over all answers


class Feedback:
    """One platform's answers as votes see them, and its votes."""

    def __init__(self, bus: Bus, platform: str, settings: ClientSettings) -> None:
        self.bus, self.platform, self.settings = bus, platform, settings
        self._key: bytes | None = None

    async def note_answered(self, record: InflightRecord, done: Done) -> str | None:
        """Keep what votes on this answer are filed under; the question id when it gets vote buttons."""
        if not self.settings.feedback_ttl_days:
            return None
        keep = self.settings.feedback_keep_text
        answered = AnsweredRecord(
            question_id=record.question_id,
            platform=self.platform,
            model=done.model,
            template=done.template,
            engine=done.engine,
            answered_at=time.time(),
            question=record.question if keep else None,
            answer=done.text if keep else None,
        )
        try:  # every answer has one, so it lives only while a vote is likely: votes themselves are kept longer
            await self.bus.feedback.note_answered(answered, min(self.settings.feedback_ttl_s, VOTE_WINDOW_S))
        except BusError:  # nothing to file votes under: the answer goes out without buttons
            return None
        return record.question_id

    async def vote(self, question_id: str, user: str, vote: Literal["up", "down"]) -> str:
        """File a person's 👍/👎 on an answer (replacing their earlier vote on it); returns what to tell them."""
        language = self.settings.bot_language
        try:
            answered = await self.bus.feedback.answered_record(question_id)
            if answered is None:
                return text("vote_expired", language)
            if await self.bus.queue.count_request(f"{self.platform}-votes", user, RATE_WINDOW_S) > VOTES_PER_MINUTE:
                return text("vote_rate_limited", language, limit=VOTES_PER_MINUTE)
            voter = await self._voter(user)
            before = await self.bus.feedback.note_vote(question_id, voter, vote, VOTE_WINDOW_S)
            if before == vote:  # the same click again: already filed
                return text(f"vote_{vote}", language)
            filed = Vote(
                question_id=question_id,
                platform=self.platform,
                voter=voter,
                vote=vote,
                at=time.time(),
                model=answered.model,
                template=answered.template,
                engine=answered.engine,
                question=answered.question if before is None else None,  # the texts once per voter, not per click
                answer=answered.answer if before is None else None,
            )
            await self.bus.feedback.add_vote(filed, self.settings.feedback_ttl_s)
        except BusError as exc:
            return unavailable(exc, self.platform, language)
        log.info("%s question %s: voted %s", self.platform, question_id, vote)
        return text(f"vote_{vote}", language)

    async def _voter(self, user: str) -> str:
        """A voter's id in the feedback stream: an HMAC of the platform's user id under the deployment's key
        (FEEDBACK_SECRET, or one made once in Redis), so nobody can hash known ids to find who voted."""
        if self._key is None:
            secret = self.settings.feedback_secret
            self._key = secret.get_secret_value().encode() if secret else await self.bus.feedback.feedback_secret()
        return hmac.new(self._key, f"{self.platform}:{user}".encode(), hashlib.sha256).hexdigest()[:16]
