"""The application commands' languages: registered in BOT_LANGUAGE, localised to the other catalogue language
for the Discord clients that speak it."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.texts import Language, text

log = logging.getLogger(__name__)


# Discord client languages each catalogue language is offered in (name_localizations, description_localizations).
LOCALES: dict[Language, tuple[discord.Locale, ...]] = {
    "ko": (discord.Locale.korean,),
    "en": (discord.Locale.american_english, discord.Locale.british_english),
}


class Localizer(app_commands.Translator):
    """Commands are registered in BOT_LANGUAGE and localised to the other catalogue language, so each member sees
    them in their own client's language (Discord sends the registered names back whatever the member typed)."""

    def __init__(self, language: Language) -> None:
        self.language = language

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        key = string.extras.get("key")
        other: Language = "en" if self.language == "ko" else "ko"
        if key is None or locale not in LOCALES[other]:
            return None
        return text(key, other)
