"""Workspace knowledge: channels' own history as 맥락, searched with Korean-aware terms (`bot.knowledge.index`)."""
