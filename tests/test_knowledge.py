"""The workspace knowledge index on a real Redis with the real Korean analyzer (Kiwi): Korean words match across
particles and endings, edits and deletions apply at once, `forget` and retention erase, and a search reads only the
channels it is given (the asker's readable ones)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.knowledge.analyzer import KoreanAnalyzer
from bot.knowledge.asking import knowledge_question, numbered_context, numbered_sources, worth_keeping
from bot.knowledge.index import KnowledgeIndex
from bot.surface import Source
from chatbus import Bus
from chatbus.knowledge import Hit, Passage
from testkit.processes import StartWorker, run_kullm
from testkit.redis_server import RedisServer

ANALYZER = KoreanAnalyzer()  # the model loaded once for the module's tests


@pytest.fixture
async def index(bus: Bus) -> AsyncIterator[KnowledgeIndex]:
    yield KnowledgeIndex(bus.knowledge, ANALYZER)


def said(channel: str, message: str, text: str, *, at: float = 0.0, thread: str = "") -> Passage:
    return Passage("discord", channel, message, text, author="앨리스", thread=thread, at=at or time.time())


def test_terms_are_stems_without_particles_or_endings() -> None:
    assert ANALYZER.terms("지난주 회의에서 배포 날짜를 언제로 정했지?") == ["지난주", "회의", "배포", "날짜", "정하"]
    assert ANALYZER.terms("배포 날짜는 12월 3일로 정했어요") == ["배포", "날짜", "12", "3", "정하"]
    assert "redis" in ANALYZER.terms("Redis가 죽었어요"), "Latin words lower-cased, their particles left out"
    assert ANALYZER.terms("그리고 그래서 했어요") == [], "nothing that carries meaning: no terms"


async def test_a_question_finds_the_message_whatever_its_particles(index: KnowledgeIndex) -> None:
    await index.put(
        [
            said("c1", "1", "오늘 점심은 김밥이에요"),
            said("c1", "2", "배포 날짜는 12월 3일로 정했어요", thread="t9"),
            said("c1", "3", "서버 에러 로그를 확인해 주세요"),
            said("c1", "4", "회의실 예약은 제가 할게요"),
        ]
    )
    [best, *_] = await index.search("discord", ["c1"], "지난주 회의에서 배포 날짜를 언제로 정했지?")
    assert best.passage.message == "2" and best.passage.thread == "t9" and best.passage.author == "앨리스"
    assert await index.search("discord", ["c1"], "고양이 사료") == [], "nothing relevant: nothing found"


async def test_an_edit_replaces_the_text_and_a_deletion_removes_it_at_once(index: KnowledgeIndex) -> None:
    await index.put([said("c1", "1", "배포는 금요일에 합니다"), said("c1", "2", "점심 메뉴 추천해 주세요")])
    await index.put([said("c1", "1", "배포는 월요일로 미뤘어요")])  # edited
    [hit] = await index.search("discord", ["c1"], "배포 언제야", k=1)
    assert hit.passage.text == "배포는 월요일로 미뤘어요"
    assert await index.search("discord", ["c1"], "금요일") == [], "the old text's terms are gone"
    assert (await index.store.status("discord", "c1")).messages == 2
    assert await index.store.delete("discord", "c1", ["1"]) == 1
    assert await index.search("discord", ["c1"], "배포") == []
    assert (await index.store.status("discord", "c1")).messages == 1


async def test_a_search_reads_only_the_channels_it_is_given(index: KnowledgeIndex) -> None:
    """The asker's readable channels are the only ones searched: a private channel's message never comes back."""
    secret = said("private", "2", "배포 날짜는 비밀리에 5일로 정했어요")
    await index.put([said("public", "1", "배포 날짜는 3일"), secret])
    hits = await index.search("discord", ["public"], "배포 날짜 비밀")
    assert [h.passage.channel for h in hits] == ["public"]
    both = await index.search("discord", ["public", "private"], "배포 날짜 비밀")
    assert [h.passage.channel for h in both] == ["private", "public"]
    assert await index.search("slack", ["public", "private"], "배포") == [], "another platform's channels apart"


async def test_forget_erases_a_channel_and_retention_drops_old_messages(index: KnowledgeIndex, bus: Bus) -> None:
    await index.store.turn_on("discord", "c1", "admin")
    week = 7 * 24 * 3600
    await index.put([said("c1", "1", "예전 배포 기록", at=time.time() - 2 * week), said("c1", "2", "최근 배포 기록")])
    await index.put([said("c2", "9", "다른 채널의 배포")])
    assert await index.store.expire("discord", "c1", time.time() - week) == 1
    assert [h.passage.message for h in await index.search("discord", ["c1"], "배포 기록")] == ["2"]
    status = await index.store.status("discord", "c1")
    assert status.on and status.by == "admin" and status.messages == 1
    assert await index.store.forget("discord", "c1") == 1
    assert [key async for key in bus.redis.scan_iter(match=f"{bus.keys.prefix}kn:discord:c1:*")] == []
    assert (await index.store.status("discord", "c2")).messages == 1, "another channel's index stays"
    await index.store.turn_off("discord", "c1")
    assert not await index.store.is_on("discord", "c1") and await index.store.channels_on("discord") == []


def test_a_search_request_is_told_from_a_question() -> None:
    assert (
        knowledge_question("찾아줘: 지난주 회의에서 배포 날짜를 언제로 정했지?")
        == "지난주 회의에서 배포 날짜를 언제로 정했지?"
    )
    assert knowledge_question("찾아 줘 에러 해결한 사람") == "에러 해결한 사람"
    assert knowledge_question("find: deploy date") == "deploy date"
    assert knowledge_question("찾아줘") is None, "nothing asked: no search"
    assert knowledge_question("배포 날짜 찾아줘") is None, "only as the request's first word"


async def test_passages_become_numbered_context_and_sources_best_first(index: KnowledgeIndex) -> None:
    day = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, 0))
    link = "https://discord.com/channels/1/c1/2"
    await index.put(
        [
            Passage("discord", "c1", "2", "배포 날짜는 12월 3일로 정했어요", "민수", "t1", day, link),
            Passage("discord", "c1", "3", "배포 날짜 전에 테스트 부탁해요", "지영", "", day, ""),
            Passage("discord", "c1", "5", "배포 전에 점심 먹어요", "지영", "", day, ""),
        ]
    )
    hits = await index.search("discord", ["c1"], "배포 날짜 언제로 정했지")
    assert [h.passage.message for h in hits] == ["2", "3"], "5 shares only a word every message has: not an answer"
    context = numbered_context(hits, "ko", {"c1": "개발"})
    assert context.startswith("[1] 민수 · 2026-12-01 · #개발 (스레드)\n배포 날짜는 12월 3일로 정했어요\n\n[2] 지영")
    assert "#dev (the thread)" in numbered_context(hits, "en", {"c1": "dev"})
    assert numbered_sources(hits, "ko") == (Source("[1] 민수", link),), "a message without a link is not a source"
    long = Passage("discord", "c1", "4", "가" * 5000, "밥", at=day)
    assert len(numbered_context([Hit(long, 1.0)], "ko")) < 1300, "one message cannot fill 맥락 alone"


async def test_the_sweep_drops_what_is_past_retention_in_every_channel_with_knowledge_on(
    index: KnowledgeIndex,
) -> None:
    old = time.time() - 400 * 24 * 3600
    for channel in ("c1", "c2"):
        await index.store.turn_on("discord", channel, "admin")
        await index.put([said(channel, "1", "오래된 배포 기록", at=old), said(channel, "2", "새 배포 기록")])
    assert await index.sweep("discord", 0) == 0, "0 keeps everything"
    assert await index.sweep("discord", 365) == 2
    assert [h.passage.message for h in await index.search("discord", ["c1", "c2"], "배포 기록")] == ["2", "2"]


async def test_a_question_of_hundreds_of_words_is_searched_by_its_rarest_terms(
    index: KnowledgeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile (or just long) question: words nowhere in the channel cost nothing, and of the rest only the 16
    rarest go into the sum Redis computes, so its cost is bounded; the rare word that says what it asks still wins."""
    common = [said("c1", str(i), f"서버 배포 일정 회의 점검 공유 메모{i}") for i in range(300)]
    await index.put([*common, said("c1", "bear", "북극곰 사진을 공유했어요")])
    summed: list[int] = []
    pipeline = index.store.redis.pipeline

    def spying(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        union = pipe.zunionstore

        def counted(dest: str, keys: dict[str, float], *rest: Any, **named: Any) -> Any:
            summed.append(len(keys))
            return union(dest, keys, *rest, **named)

        monkeypatch.setattr(pipe, "zunionstore", counted)
        return pipe

    monkeypatch.setattr(index.store.redis, "pipeline", spying)
    unknown = " ".join(f"없는말{chr(0xAC00 + i)}" for i in range(200))
    [best, *_] = await index.search("discord", ["c1"], f"{unknown} 서버 배포 일정 북극곰 사진")
    assert best.passage.message == "bear" and summed == [5], "unknown words are not summed; the rare ones win"
    known = " ".join(f"메모{i}" for i in range(100))
    await index.search("discord", ["c1"], f"{known} 서버 배포 일정")
    assert summed[-1] == 16, "a hundred words found in the channel: only the 16 rarest are summed"
    assert summed[-1] == 16, "16 postings summed, of the hundred terms asked that occur"


async def test_nothing_is_returned_when_no_message_holds_what_the_question_asks(index: KnowledgeIndex) -> None:
    """Sharing one word is not an answer: "회의 때 먹은 저녁 메뉴" finds nothing in messages about 회의 times, so the
    bot says it found nothing instead of answering from noise; a filler word does not cost a real answer."""
    chatter = ["회의 시간은 매주 화요일 3시로 잡았어요", "회의 자료 공유해 주세요", "내일 회의는 취소됐어요"]
    chatter += ["회의 전에 커피 사 올게요", "오늘 점심은 김밥이에요", "서버 점검은 금요일 밤이에요"]
    await index.put([said("c1", str(i), line) for i, line in enumerate(chatter, start=10)])
    await index.put([said("c1", "3", "배포 날짜는 12월 3일로 정했어요")])
    assert await index.search("discord", ["c1"], "지난주 회의 때 먹은 저녁 메뉴가 뭐였지?") == []
    [best, *_] = await index.search("discord", ["c1"], "혹시 기억나? 배포 날짜 언제로 정했지?")
    assert best.passage.message == "3"


def test_requests_to_the_bot_are_not_knowledge() -> None:
    assert worth_keeping("배포 날짜는 12월 3일로 정했어요")
    assert not worth_keeping("<@U0BOT> 찾아줘: 배포 날짜 언제야?") and not worth_keeping("<@!123> 찾아줘: 배포")
    assert not worth_keeping("찾아줘: 배포 날짜") and not worth_keeping("  \n")


async def test_kullm_ask_answers_from_one_channels_knowledge_with_its_sources(
    index: KnowledgeIndex, redis_server: RedisServer, start_worker: StartWorker
) -> None:
    link = "https://discord.com/channels/1/111/2"
    await index.store.turn_on("discord", "111", "admin")
    await index.put([Passage("discord", "111", "2", "배포 날짜는 12월 3일로 정했어요", "밥", link=link)])
    await index.put([said("222", "3", "배포 날짜는 비밀이에요")])  # knowledge not on there: never read
    start_worker(engine="scripted")
    asked = await asyncio.to_thread(
        run_kullm, ["ask", "배포 날짜 언제야?", "--knowledge", "discord:111"], redis_server.url
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == f"[1]에 따르면: 배포 날짜는 12월 3일로 정했어요\n📎 출처: [1] 밥 {link}\n"
    as_json = await asyncio.to_thread(
        run_kullm, ["ask", "배포 날짜?", "--knowledge", "111", "--json"], redis_server.url
    )
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert lines[0] == {"type": "sources", "sources": [{"title": "[1] 밥", "url": link}]}, "a bare id: one platform"
    assert lines[-1]["type"] == "done"
    for args, status, said_ in [
        (["--knowledge", "discord:222"], 2, "지식이 켜진 채널이 아니에요"),
        (["--knowledge", "slack:111"], 2, "지식이 켜진 채널이 아니에요"),
        (["--knowledge", "111", "--context", "맥락"], 2, "함께 쓸 수 없어요"),
    ]:
        refused = await asyncio.to_thread(run_kullm, ["ask", "배포 날짜 언제야?", *args], redis_server.url)
        assert (refused.returncode, refused.stdout) == (status, "") and said_ in refused.stderr, refused.stderr
    nothing = await asyncio.to_thread(run_kullm, ["ask", "주차장 어디야?", "--knowledge", "111"], redis_server.url)
    assert nothing.returncode == 1 and nothing.stderr.startswith("🔎 읽을 수 있는 채널의 기록에서")
