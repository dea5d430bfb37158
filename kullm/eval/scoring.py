"""Scores the way G-Eval defines them: where the judge returns token log-probabilities, each criterion's score is
the probability-weighted mean over its allowed values at the position of the score it wrote; otherwise the mean of
several sampled replies. A reply that cannot be read yields no scores, never a zero."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean

from kullm.eval.protocols import Criterion, Protocol, read_reply


@dataclass(frozen=True)
class Token:
    """A reply token as the judge reported it: its text, log-probability and most likely alternatives."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Reply:
    """One judge reply: its text, its tokens' log-probabilities (None: the judge sent none) and the tokens it cost."""

    text: str
    tokens: tuple[Token, ...] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def weighted_scores(protocol: Protocol, reply: Reply) -> dict[str, float] | None:
    """Each criterion's expected score under the judge's distribution at the token where it wrote that score (the
    alternatives it reported, renormalised over the criterion's allowed values); the written score itself where none
    of the alternatives is an allowed value. None when the reply cannot be read."""
    assert reply.tokens is not None
    joined = "".join(token.text for token in reply.tokens)
    read = read_reply(protocol, joined)
    if read is None:
        return None
    starts, at = [], 0
    for token in reply.tokens:
        starts.append(at)
        at += len(token.text)
    scores = {}
    for criterion in protocol.criteria:
        score = read[criterion.key]
        index = bisect_right(starts, score.at) - 1
        before = joined[starts[index] : score.at]  # the token's text ahead of the digit (a space, a colon)
        scores[criterion.key] = _expected(criterion, reply.tokens[index], before) or float(score.value)
    return scores


def _expected(criterion: Criterion, token: Token, before: str) -> float | None:
    """Σ v·p(v) / Σ p(v) over the allowed values v among the token and its alternatives; None when none is one."""
    mass: dict[int, float] = defaultdict(float)
    seen = set()
    for text, logprob in ((token.text, token.logprob), *token.top):
        if text in seen or not text.startswith(before):
            continue
        seen.add(text)
        rest = text[len(before) :].strip()
        if rest.isdigit() and int(rest) in criterion.values:
            mass[int(rest)] += math.exp(logprob)
    total = sum(mass.values())
    return sum(value * p for value, p in mass.items()) / total if total > 0 else None


def sampled_scores(protocol: Protocol, replies: list[Reply]) -> dict[str, float] | None:
    """The mean written score per criterion over the replies that can be read; None when none can."""
    read = [found for reply in replies if (found := read_reply(protocol, reply.text)) is not None]
    if not read:
        return None
    return {c.key: fmean(found[c.key].value for found in read) for c in protocol.criteria}
