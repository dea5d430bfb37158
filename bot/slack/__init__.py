"""The Slack front-end: `app` (the listeners), `surface` (where answers appear), `blocks` (Block Kit), `reading`
(threads, markup and files as text), `manifest` (the app's manifest, both languages), `run` (the process)."""
