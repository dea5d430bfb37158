"""The judge: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, a vLLM server, this project's own
`kullm api`), asked for log-probabilities while it gives them.

A judge that is busy or slow (429, 5xx, a timeout, a dropped connection) is waited for and asked again, a bounded
number of times, honouring Retry-After; then that one judgment is given up (`JudgeUnavailable`) and the run goes on.
A judge that refuses the request itself (a wrong key, an unknown model or URL) stops the run (`JudgeRefused`): every
other item would fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

from kullm.eval.scoring import Reply, Token

TOP_LOGPROBS = 5  # alternatives asked for at each reply token: enough for scales of up to five values
REPLY_MAX_TOKENS = 200  # the score lines; a judge that writes more is cut (and its reply likely unreadable)
MAX_TRIES = 5
BACKOFF_S = 2.0  # the first wait after a failed try (doubled each time, at most MAX_BACKOFF_S) without Retry-After
MAX_BACKOFF_S = 60.0


class JudgeRefused(Exception):
    """The judge refuses the request itself: asking again cannot help."""


class JudgeUnavailable(Exception):
    """The judge did not answer after MAX_TRIES (the last problem is the message)."""


class LogprobsRefused(Exception):
    """The judge refuses `logprobs` (a server that has none): the run goes on by sampling."""


class Judge:
    """One judge endpoint and model; `logprobs` turns false for good once it shows it has none."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        model: str,
        api_key: str | None,
        *,
        timeout_s: float = 120.0,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.session, self.url, self.model = session, url.rstrip("/"), model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff_s = backoff_s
        self.logprobs = True
        self.prompt_tokens = self.completion_tokens = 0

    async def reply(self, messages: list[dict[str, str]], temperature: float) -> Reply:
        """One reply, with log-probabilities while the judge gives them."""
        wanted = self.logprobs
        try:
            found = await self._ask(messages, temperature, wanted)
        except LogprobsRefused:
            self.logprobs = False
            return await self._ask(messages, temperature, False)
        if wanted and found.tokens is None:  # accepted the parameter, returned nothing: it has none
            self.logprobs = False
        return found

    async def _ask(self, messages: list[dict[str, str]], temperature: float, logprobs: bool) -> Reply:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": REPLY_MAX_TOKENS,
        }
        if logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        problem = ""
        for attempt in range(MAX_TRIES):
            wait = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt)
            try:
                async with self.session.post(
                    f"{self.url}/chat/completions", json=body, headers=self.headers, timeout=self.timeout
                ) as response:
                    if response.status == 200:
                        return self._counted(_reply_of(await response.json(content_type=None)))
                    text = (await response.text())[:300]
                    problem = f"HTTP {response.status}: {text}"
                    if response.status == 429 or response.status >= 500:
                        wait = _retry_after(response) or wait
                    elif response.status == 400 and logprobs and "logprob" in text.lower():
                        raise LogprobsRefused(problem)
                    else:
                        raise JudgeRefused(f"the judge at {self.url} refused the request ({problem})")
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError, KeyError) as exc:
                if isinstance(exc, aiohttp.InvalidURL):
                    raise JudgeRefused(f"not a judge URL: {self.url}") from exc
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt + 1 < MAX_TRIES:
                await asyncio.sleep(wait)
        raise JudgeUnavailable(f"no reply after {MAX_TRIES} tries; last: {problem}")

    def _counted(self, reply: Reply) -> Reply:
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        return reply


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(response.headers.get("Retry-After", "")))
    return None


def _reply_of(document: Any) -> Reply:
    """A chat completion's first choice as a `Reply`; ValueError/KeyError for a body that is not one."""
    choice = document["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise ValueError("the reply has no text")
    content = (choice.get("logprobs") or {}).get("content")
    tokens = None
    if content:
        tokens = tuple(
            Token(
                str(entry["token"]),
                float(entry["logprob"]),
                tuple((str(top["token"]), float(top["logprob"])) for top in entry.get("top_logprobs") or ()),
            )
            for entry in content
        )
    usage = document.get("usage") or {}
    return Reply(text, tokens, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
