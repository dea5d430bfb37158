"""A channel's persona: the standing instructions an admin gives a channel (`/kullm-설정 페르소나 정하기 …`), shown,
set and cleared here and sent with each question asked there."""

from __future__ import annotations

import logging
import time

from bot.limits import unavailable
from bot.settings import ClientSettings
from bot.texts import persona_forms, text
from chatbus import Bus, BusError, Persona
from chatbus.messages import MAX_INSTRUCTIONS_CHARS

log = logging.getLogger(__name__)


class Personas:
    """One platform's channel personas."""

    def __init__(self, bus: Bus, platform: str, settings: ClientSettings) -> None:
        self.bus, self.platform, self.settings = bus, platform, settings

    async def text_for(self, channel: str) -> str:
        """The channel's persona for the next question; none when unset (or Redis is down: enqueueing says so)."""
        if not channel:
            return ""
        try:
            persona = await self.bus.personas.get(self.platform, channel)
        except BusError:
            return ""
        return persona.text if persona else ""

    async def command(self, command: str, channel: str, user: str, action: str, instructions: str = "") -> str:
        """`/kullm-설정 페르소나 보기`, `… 정하기 <text>` and `… 지우기` (`command` names the adapter's settings
        command), once the adapter checked set and clear came from an admin; returns what to tell them."""
        language = self.settings.bot_language
        forms = persona_forms(command, language)
        try:
            if action == "show":
                persona = await self.bus.personas.get(self.platform, channel)
                if persona is None:
                    return text("persona_none", language, command=forms["set"])
                at = time.strftime("%Y-%m-%d", time.localtime(persona.set_at))
                return text("persona_shown", language, by=persona.set_by, at=at, persona=persona.text)
            if action == "clear":
                await self.bus.personas.set(self.platform, channel, None)
                log.info("%s channel %s: persona cleared", self.platform, channel)
                return text("persona_cleared", language)
            instructions = instructions.strip()
            if not instructions:
                return text("persona_usage", language, **forms)
            if len(instructions) > MAX_INSTRUCTIONS_CHARS:
                return text("persona_too_long", language, length=len(instructions), limit=MAX_INSTRUCTIONS_CHARS)
            persona = Persona(text=instructions, set_by=user, set_at=time.time())
            await self.bus.personas.set(self.platform, channel, persona)
        except BusError as exc:
            return unavailable(exc, self.platform, language)
        log.info("%s channel %s: persona set (%d characters)", self.platform, channel, len(instructions))
        return text("persona_set", language, persona=instructions)
