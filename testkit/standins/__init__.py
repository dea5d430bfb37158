"""Loopback Discord and Slack, specified by the platforms (../shared/reference), driven by the real clients."""
