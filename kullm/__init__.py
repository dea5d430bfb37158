"""The `kullm` command: one entry point for the worker and the clients."""
