"""Process plumbing every kullm process shares, whichever side it is on: exit statuses (`runtime.exits`), the
logging set-up (`runtime.logs`), stopping on a signal (`runtime.signals`) and the guard in front of every HTTP
listener (`runtime.http_guard`). It imports nothing of the project: chatbus, bot, inference and kullm may all
import it.
"""
