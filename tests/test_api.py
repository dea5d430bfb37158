"""The OpenAI-compatible API (`kullm api`) driven by the official `openai` client, streamed and not, against a
real worker loop (scripted engine: the tiny model's trained answers) and real Redis: answers, history and
system messages, errors in OpenAI's shapes, keys and their limits, a client that disconnects, fairness, and
the usage every front-end records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from chatbus import Bus, Done, Question, Turn, usage_field
from testkit import trained
from testkit.engines import RunWorker
from testkit.polling import eventually
from testkit.processes import BotProcess, run_kullm
from testkit.redis_server import RedisServer, free_port

pytestmark = pytest.mark.e2e


@dataclass
class ApiUnderTest:
    base_url: str
    process: BotProcess
    redis_url: str
    clients: list[AsyncOpenAI] = field(default_factory=list)

    def key(self, name: str, *limits: str) -> str:
        """`kullm keys create NAME …`: the key it prints once."""
        made = run_kullm(["keys", "create", name, *limits], self.redis_url)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def client(self, key: str) -> AsyncOpenAI:
        """The official client on a key; no retries, so a test sees each 429 (closed at teardown)."""
        self.clients.append(AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=60))
        return self.clients[-1]


@contextlib.asynccontextmanager
async def running_api(redis_url: str, tmp_path: Path, **env: str) -> AsyncIterator[ApiUnderTest]:
    """`kullm api` as a process on a free port, once it answers /healthz; its clients closed and it stopped after."""
    port = free_port()
    process = BotProcess("api", tmp_path / "api.log", {"REDIS_URL": redis_url, "API_PORT": str(port), **env}).start()
    under_test = ApiUnderTest(f"http://127.0.0.1:{port}/v1", process, redis_url)
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, process.log()
                await asyncio.sleep(0.1)
        yield under_test
    finally:
        for client in under_test.clients:
            await client.close()
        await asyncio.to_thread(process.stop)


@pytest.fixture
async def api(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[ApiUnderTest]:
    async with running_api(redis_server.url, tmp_path, API_MAX_TOKENS="400", API_KEY_CACHE_S="1") as under_test:
        yield under_test


async def test_the_openai_client_gets_answers_streamed_and_not(api: ApiUnderTest, run_worker: RunWorker) -> None:
    run_worker()
    client = api.client(api.key("notebook"))

    async def serves_the_preset() -> bool:
        return [m.id for m in (await client.models.list()).data] == ["kullm-v1"]

    # What the workers serve, once they report: the preset's name (or SERVED_MODEL_NAME), never MODEL_ID, a path.
    assert await eventually(serves_the_preset)
    answer = await client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "한국의 수도는 어디야?"}]
    )
    assert answer.choices[0].message.content == trained.CAPITAL and answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.usage is not None and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    # Earlier turns are the history, a system message the instructions (as a channel's persona is).
    followed = await client.chat.completions.create(
        model="scripted",
        messages=[
            {"role": "user", "content": "내 이름은 민수야"},
            {"role": "assistant", "content": trained.NAME_ANSWER},
            {"role": "user", "content": [{"type": "text", "text": "내 이름이 뭐라고 했지?"}]},
        ],
    )
    assert followed.choices[0].message.content == trained.HISTORY_ANSWER
    pirate = await client.chat.completions.create(
        model="scripted",
        messages=[
            {"role": "system", "content": trained.PIRATE_PERSONA},
            {"role": "user", "content": "한국의 수도는 어디야?"},
        ],
    )
    assert pirate.choices[0].message.content == trained.PIRATE_CAPITAL
    stream = await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "긴 이야기를 들려줘"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == trained.LONG_STORY and len(chunks) > 5, "streamed in pieces"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    completion = await client.completions.create(model="scripted", prompt="딥러닝이 뭐야?")
    assert completion.choices[0].text == trained.DEEP_LEARNING and completion.object == "text_completion"
    pieces = [
        c.choices[0].text async for c in await client.completions.create(model="x", prompt="인사해줘", stream=True)
    ]
    assert "".join(pieces) == trained.GREETING
    short = await client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "긴 이야기를 들려줘"}], max_tokens=5
    )
    assert short.choices[0].finish_reason == "length" and short.usage is not None and short.usage.completion_tokens == 5


async def test_errors_come_in_openais_shapes(api: ApiUnderTest, run_worker: RunWorker) -> None:
    run_worker(context_window=300, max_new_tokens=200)
    good = api.client(api.key("scripts"))
    with pytest.raises(openai.AuthenticationError) as unknown:
        await api.client("kullm-not-a-key").chat.completions.create(
            model="x", messages=[{"role": "user", "content": "안녕"}]
        )
    assert unknown.value.status_code == 401 and unknown.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as hot:
        await good.chat.completions.create(model="x", messages=[{"role": "user", "content": "안녕"}], temperature=3)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as bad:
        await good.chat.completions.create(model="x", messages=[{"role": "assistant", "content": "안녕"}])
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as long:
        await good.chat.completions.create(model="x", messages=[{"role": "user", "content": "아주 긴 질문 " * 100}])
    assert long.value.code == "context_length_exceeded", "the worker's too_long, as OpenAI says it"
    with pytest.raises(openai.BadRequestError) as huge_turn:
        turns: list[ChatCompletionMessageParam] = [user("가"), {"role": "assistant", "content": "나" * 20_000}]
        await good.chat.completions.create(model="x", messages=[*turns, user("다")])
    assert huge_turn.value.param == "messages" and "16,000 characters" in str(huge_turn.value)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api.base_url}/chat/completions", data=b"not json") as response,
    ):
        assert response.status == 401, "the key is checked first"
    assert "scripts" in run_kullm(["keys", "list"], api.redis_url).stdout
    assert run_kullm(["keys", "revoke", "scripts"], api.redis_url).returncode == 0
    await asyncio.sleep(1.0)  # API_KEY_CACHE_S: a revoked key works at most that long
    with pytest.raises(openai.AuthenticationError):
        await good.chat.completions.create(model="x", messages=[{"role": "user", "content": "안녕"}])


async def test_each_keys_limits_answer_429_with_retry_after(api: ApiUnderTest, run_worker: RunWorker) -> None:
    run_worker()
    ask = [user("한국의 수도는 어디야?")]
    rate = api.client(api.key("rate", "--questions-per-minute", "2"))
    for _ in range(2):
        await rate.chat.completions.create(model="x", messages=ask)
    with pytest.raises(openai.RateLimitError) as limited:
        await rate.chat.completions.create(model="x", messages=ask)
    assert 1 <= int(limited.value.response.headers["Retry-After"]) <= 60
    # The prompt's bound (its UTF-8 bytes and 256 for the template) is held at admission: 300 leave room for one.
    daily = api.client(api.key("daily", "--tokens-per-day", "300"))
    await daily.chat.completions.create(model="x", messages=ask)
    await asyncio.sleep(0.5)  # the worker writes usage with its next flush
    with pytest.raises(openai.RateLimitError) as spent:
        await daily.chat.completions.create(model="x", messages=ask)
    assert spent.value.code == "insufficient_quota" and int(spent.value.response.headers["Retry-After"]) <= 86400
    usage = run_kullm(["usage", "--by", "key", "--json"], api.redis_url)
    rows = {row["key"]: row for row in map(json.loads, usage.stdout.splitlines())}
    assert rows["rate"]["questions"] == 2 and rows["daily"]["questions"] == 1
    assert 0 < rows["daily"]["prompt_tokens"] + rows["daily"]["completion_tokens"] <= 300


async def test_a_client_that_disconnects_cancels_its_question(
    api: ApiUnderTest, run_worker: RunWorker, bus: Bus
) -> None:
    run_worker()
    key = api.key("leaver")
    body = {"model": "x", "messages": [{"role": "user", "content": "긴 이야기를 들려줘"}], "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{api.base_url}/chat/completions", json=body, headers=headers)
        first = await response.content.readline()
        question_id = json.loads(first.removeprefix(b"data: "))["id"].removeprefix("chatcmpl-")
        response.close()  # gone mid-answer
    events = [event async for _, event in bus.answers.follow(question_id, start_timeout_s=30, stall_timeout_s=30)]
    assert events[-1].type == "error" and events[-1].code == "cancelled", "stopped, not generated for nobody"
    whole = {"model": "x", "messages": [{"role": "user", "content": "긴 이야기를 들려줘"}]}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.3):
                await session.post(f"{api.base_url}/chat/completions", json=whole, headers=headers)
    await eventually(lambda: api.process.log().count("client disconnected, cancelled") == 2)
    await eventually(lambda: no_open_questions(bus, "leaver"))  # no place held for the client that left


async def test_one_key_flooding_cannot_hold_more_than_its_share_of_the_queue(
    api: ApiUnderTest, run_worker: RunWorker, bus: Bus
) -> None:
    run_worker(max_batch_size=1)
    flood = api.client(api.key("flood", "--concurrent", "2", "--questions-per-minute", "100"))
    story = [user("긴 이야기를 들려줘")]
    requests = [asyncio.ensure_future(flood.chat.completions.create(model="x", messages=story)) for _ in range(8)]
    await asyncio.sleep(1.0)  # they have all arrived: two are queued, six refused
    refused = [r for r in requests if r.done() and isinstance(r.exception(), openai.RateLimitError)]
    assert len(refused) == 6
    # A chat user asks meanwhile: at most the flood's two questions are ahead of theirs.
    chat = Question.new("slack", "한국의 수도는 어디야?", ttl_s=60, user="U0ALICE")
    ahead = await bus.queue.enqueue(chat)
    assert ahead <= 2
    events = [event async for _, event in bus.answers.follow(chat.id, start_timeout_s=60, stall_timeout_s=60)]
    assert isinstance(events[-1], Done) and events[-1].text == trained.CAPITAL
    answered = await asyncio.gather(*(r for r in requests if r not in refused))
    assert [a.choices[0].message.content for a in answered] == [trained.LONG_STORY] * 2
    # The worker runs on this event loop: it writes the last answer's usage just after its `done`, so that write
    # is let through before `kullm usage` (run synchronously) holds the loop.
    await eventually(lambda: counted(bus, "slack", "U0ALICE"))
    by_platform = run_kullm(["usage", "--by", "platform", "--json"], api.redis_url)
    platforms = {row["platform"]: row["questions"] for row in map(json.loads, by_platform.stdout.splitlines())}
    assert platforms == {"api": 2, "slack": 1}


async def counted(bus: Bus, platform: str, user: str) -> bool:
    """True once today's usage holds a question of this user."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return (await bus.ledger.usage(day)).get(usage_field(platform, user, "*", "questions"), 0) > 0


def user(content: str) -> ChatCompletionMessageParam:
    """A user's chat message, as the openai client types it."""
    return {"role": "user", "content": content}


async def no_open_questions(bus: Bus, key: str) -> bool:
    return await bus.redis.zcard(bus.keys.api_open(key)) == 0


def test_turns_before_the_question_pair_up_as_history() -> None:
    from bot.api.models import Message, conversation

    question, history, system = conversation(
        [
            Message(role="system", content="짧게"),
            Message(role="user", content="가"),
            Message(role="user", content="나"),
            Message(role="assistant", content="다"),
            Message(role="user", content="라"),
        ]
    )
    assert (question, history, system) == ("라", [Turn(question="가\n\n나", answer="다")], "짧게")


async def test_a_full_queue_is_503(redis_server: RedisServer, tmp_path: Path) -> None:
    async with running_api(redis_server.url, tmp_path, MAX_QUEUE="1") as under_test:
        client = under_test.client(under_test.key("busy", "--concurrent", "5"))
        ask = [user("한국의 수도는 어디야?")]
        waiting = asyncio.ensure_future(client.chat.completions.create(model="x", messages=ask))
        await eventually(lambda: "queued (key busy)" in under_test.process.log())  # no worker: it stays queued
        with pytest.raises(openai.InternalServerError) as full:
            await client.chat.completions.create(model="x", messages=ask)
        assert full.value.status_code == 503 and full.value.code == "overloaded"
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
