"""Exit statuses of every kullm process (`kullm ask`'s own are listed in bot/terminal.py's docstring).

2 is a configuration or input error: `kullm up` does not restart a child that exits with it.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY, EXIT_REDIS, EXIT_TIMEOUT, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5, 130
EXIT_INPUT = EXIT_CONFIG
EXIT_NO_WORKER = 6  # `kullm ask`: no worker serves the queue (none serving, none loading its model)
EXIT_PIPE = 141  # stdout closed under us (a pipe's reader left), as a shell reports a process SIGPIPE ended
