"""The `kullm` command, on top of both sides: one entry point for the worker, the adapters, the API and the
terminal (`cli`, `parser`), `kullm up` (`up`), the operator's commands (`operator`), `kullm prompt` and
`kullm download`. Each subcommand imports its side lazily, so `kullm ask` never loads torch."""
