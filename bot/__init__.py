"""Chat adapters: terminal, Discord and Slack front-ends of the queue."""
