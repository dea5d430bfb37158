"""One request's answer as it grows, the same for every engine: when it stops and what may be shown.

An engine feeds it token ids (`add_token`: the builtin and paged engines) or text (`add_text`: a
server that streams text). It stops at eos, at a new `###` section, or at `max_new_tokens`, and it
says what changed as a `GenerationUpdate`, so every engine streams and stops alike.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from chatbus.messages import FinishReason, TokenLogprob
from inference.engine import GenerationRequest, GenerationUpdate
from inference.engines.detokenize import IncrementalDecoder
from inference.prompt import cut_at_stop, visible_answer


class Answer:
    """The generated text of one request, its stop reason, and what was last shown of it."""

    def __init__(
        self, request: GenerationRequest, prompt_tokens: int, eos_token_id: int, tokenizer: Any = None
    ) -> None:
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.eos_token_id = eos_token_id
        self.decoder = IncrementalDecoder(tokenizer) if tokenizer is not None else None
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.cancelled = False
        self._text = ""  # what a text-streaming server sent (token engines read their decoder's)
        self._shown = ""
        # With the request's `logprobs`: each answer token's, and the length of the text once it was decoded.
        self._logprobs: list[TokenLogprob] = []
        self._ends: list[int] = []

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def text(self) -> str:
        return self.decoder.text if self.decoder is not None else self._text

    def add_token(self, token: int, logprob: TokenLogprob | None = None) -> GenerationUpdate | None:
        """One sampled token (with its log-probability when the request asked for them); eos ends the answer
        unless the request ignores it."""
        assert self.decoder is not None, "an answer fed token ids needs the tokenizer"
        if token == self.eos_token_id and not self.request.ignore_eos:
            self.finish_reason = "stop"
        else:
            self.decoder.push(token)
            self.completion_tokens += 1
            if logprob is not None:
                self._logprobs.append(logprob)
                self._ends.append(len(self.decoder.text))
        return self._update()

    def add_text(self, text: str, tokens: int, finish_reason: FinishReason | None = None) -> GenerationUpdate | None:
        """Text that `tokens` tokens made; `finish_reason` when the server says the answer ended."""
        self._text += text
        self.completion_tokens += tokens
        if finish_reason is not None and self.finish_reason is None:
            self.finish_reason = finish_reason
        return self._update()

    def finish(self, reason: FinishReason) -> GenerationUpdate | None:
        """The engine says the answer ended (transformers stopped it) without a token that says so."""
        if self.finish_reason is None:
            self.finish_reason = reason
        return self._update()

    def _update(self) -> GenerationUpdate | None:
        """The rules every engine shares: a `###` section stops, `max_new_tokens` ends with length."""
        final = self.finish_reason is not None or self.completion_tokens >= self.request.max_new_tokens
        text, stopped = visible_answer(self.text, final=final)
        if stopped and not self.request.ignore_eos:
            self.finish_reason = "stop"
        elif final and self.finish_reason is None:
            self.finish_reason = "length"
        if self.finish_reason is not None:
            text, _ = visible_answer(self.text, final=True)
        if text == self._shown and self.finish_reason is None:
            return None
        self._shown = text
        return GenerationUpdate(
            self.request.id,
            text,
            self.finish_reason is not None,
            self.finish_reason,
            self.prompt_tokens,
            self.completion_tokens,
            logprobs=self._logprobs_of(text, stopped),
        )

    def _logprobs_of(self, shown: str, stopped: bool) -> tuple[TokenLogprob, ...]:
        """The log-probabilities of the tokens whose text is in `shown`: while streaming, those decoded up to its end
        (trailing whitespace and a possible `#` held back with it); at the end every token, less those of a stop
        marker."""
        if not self._logprobs:
            return ()
        if self.finish_reason is not None and not stopped:
            return tuple(self._logprobs)
        kept, _ = cut_at_stop(self.text)
        limit = len(kept) if self.finish_reason is not None else len(kept) - len(kept.lstrip()) + len(shown)
        return tuple(self._logprobs[: bisect_right(self._ends, limit)])
