"""The front-ends of the queue: Discord (`bot.discord`), Slack (`bot.slack`), the OpenAI-compatible API
(`bot.api`) and `kullm ask` (`bot.terminal`).

They share the way a question goes in (`relay`: limits from `limits` and `quota`, a placeholder, the enqueue) and
the way its answer comes out (`poster`: followed through Redis outages, edited in place, resumed after a restart),
the answer's layout, personas, votes and every text a person reads (`texts`, both languages). A platform's folder
only turns its events into a question and where it was asked, and shows answers where the platform shows them
(its `Surface`). Every error they raise descends from `bot.errors.BotError`.

Boundaries: they import the contract (`chatbus`) and the process plumbing (`runtime`), never `inference`, torch or
`redis`.
"""
