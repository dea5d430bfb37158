"""Log-probabilities through `kullm api` (what lets a deployment judge `kullm eval` with its own model): OpenAI's
`logprobs`/`top_logprobs` on `/v1/chat/completions` and `logprobs` on `/v1/completions`, streamed and not, from a
real worker on the tiny model — checked against the model's own distribution computed here — and refused clearly
where the engine cannot give them or the request is malformed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference.prompt import render_kullm_v1
from testkit import trained
from testkit.engines import RunWorker
from tests.test_api import ApiUnderTest, api  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e
QUESTION = "한국의 수도는 어디야?"


def greedy_by_hand(model_dir: Path, prompt: str, steps: int, top: int) -> list[tuple[str, float, list[float]]]:
    """Greedy decoding done here, one full forward pass a token: each token's text, its log-probability under the
    model, and the `top` best log-probabilities at its position."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    found = []
    with torch.no_grad():
        for _ in range(steps):
            row = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            token = int(row.argmax())
            found.append((str(tokenizer.decode([token])), float(row[token]), row.topk(top).values.tolist()))
            ids.append(token)
    return found


async def test_chat_and_completions_report_the_models_own_logprobs(
    api: ApiUnderTest,  # noqa: F811
    run_worker: RunWorker,
    model_dir: Path,
) -> None:
    run_worker("builtin")
    client = api.client(api.key("judge"))
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = await client.chat.completions.create(model="x", messages=messages, logprobs=True, top_logprobs=3)
    choice = whole.choices[0]
    assert choice.message.content == trained.CAPITAL
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert "".join(t.token for t in content).strip() == trained.CAPITAL, "the tokens spell the answer"
    assert all(len(t.top_logprobs) == 3 and t.bytes == list(t.token.encode()) for t in content)
    # Greedy decoding: each token is its position's most likely; the figures are the model's, computed here.
    by_hand = greedy_by_hand(model_dir, render_kullm_v1(QUESTION), len(content), 3)
    for entry, (token, logprob, best) in zip(content, by_hand, strict=True):
        assert entry.token == token and entry.top_logprobs[0].token == token
        assert math.isclose(entry.logprob, logprob, abs_tol=1e-3)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(best, abs=1e-3)

    streamed = await client.chat.completions.create(
        model="x", messages=messages, logprobs=True, top_logprobs=3, stream=True
    )
    tokens = [
        t async for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []
    ]
    assert [(t.token, round(t.logprob, 4)) for t in tokens] == [(t.token, round(t.logprob, 4)) for t in content]

    plain = await client.chat.completions.create(model="x", messages=messages)
    assert plain.choices[0].logprobs is None, "none unless asked"
    legacy = await client.completions.create(model="x", prompt=QUESTION, logprobs=2)
    scores = legacy.choices[0].logprobs
    assert scores is not None and scores.tokens == [t.token for t in content]
    assert scores.token_logprobs == pytest.approx([t.logprob for t in content], abs=1e-4)
    assert scores.top_logprobs is not None and all(len(top) <= 2 for top in scores.top_logprobs)
    assert scores.text_offset == [sum(len(t.token) for t in content[:i]) for i in range(len(content))]
    pieces = await client.completions.create(model="x", prompt=QUESTION, logprobs=0, stream=True)
    streamed_legacy = [t async for c in pieces if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []]
    assert streamed_legacy == scores.tokens


async def test_logprobs_requests_a_hostile_or_careless_client_sends_are_refused(
    api: ApiUnderTest,  # noqa: F811
    run_worker: RunWorker,
) -> None:
    run_worker()  # the scripted engine reports no log-probabilities, like ENGINE=paged and openai
    key = api.key("careless")
    client = api.client(key)
    messages: Any = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.BadRequestError) as unsupported:
        await client.chat.completions.create(model="x", messages=messages, logprobs=True)
    assert unsupported.value.code == "unsupported" and "log-probabilities" in str(unsupported.value)
    assert (await client.chat.completions.create(model="x", messages=messages)).choices[0].message.content
    bodies: list[tuple[dict[str, Any], str]] = [
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2.5}, "top_logprobs"),
    ]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        for extra, param in bodies:
            body = {"model": "x", "messages": messages, **extra}
            async with session.post(f"{api.base_url}/chat/completions", json=body) as response:
                assert response.status == 400, extra
                assert (await response.json())["error"]["param"] == param, extra
        legacy = {"model": "x", "prompt": QUESTION, "logprobs": 10**6}
        async with session.post(f"{api.base_url}/completions", json=legacy) as response:
            assert response.status == 400 and (await response.json())["error"]["param"] == "logprobs"
