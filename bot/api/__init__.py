"""`kullm api`: an OpenAI-compatible HTTP API on the same queue as the chat bots.

`GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`, streamed (server-sent
events) or not, in OpenAI's shapes. A request becomes a question like any other: the last user
message is the question, the earlier user/assistant turns its history, system messages its
instructions (as a channel's persona is); workers answer it in the model's template. Every request
needs a key (`kullm keys create`): keys are stored as SHA-256 digests only, and each has its limits —
questions a minute, tokens a day, questions open at once (which is also what keeps one key from
starving the others: it can never hold more than that many places in the queue). A client that
disconnects cancels its question within DISCONNECT_POLL_S, queued or answering, streamed or not.

Hostile clients cost little: a key verified once is trusted for API_KEY_CACHE_S without a Redis round trip,
and keys not yet verified are looked up at most FAILED_KEYS_PER_S a second per client address (a burst
of FAILED_KEY_BURST), so a flood of wrong keys is refused before it reaches Redis; the listener sits
behind the shared connection guard (header timeout, a connection cap sized to the descriptors); every
waiting answer is followed through the process's one answer reader, not a connection each.

    kullm api          # 127.0.0.1:8080 by default (API_HOST, API_PORT)

Its parts: `app` (the handlers), `models` (the request bodies, validated by pydantic and converted inward to a
`Call`), `keys` (which key a request carries), `responses` (OpenAI's shapes), `errors`, `settings`, `run`.
"""
