"""The Discord front-end: `app` (the bot and its handlers), `surface` (where answers appear), `views` (buttons and
the form), `commands` (their languages), `reading` (threads, files and replies as text), `run` (the process)."""
