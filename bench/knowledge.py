"""Workspace knowledge at scale: index a generated corpus of Korean chat messages into a private redis-server, then
time searches and measure retrieval quality.

    python -m bench.knowledge --messages 100000 --queries 300 --rounds 2

The corpus is generated (seeded), like a busy community's channel: short chat lines ("넵 확인했어요"), requests and
updates that name projects, people and topics with every particle and ending, longer paragraphs, and — the
held-out set — one decision message per (project, attribute) pair ("하늘 프로젝트 배포 날짜는 12월 3일로
정했어요"), each with four distractors that name the same project and attribute without the decision ("하늘 배포
날짜 아직 안 정해졌나요?"), amid chatter that names the same projects and topics. Each decision has a question
written the way people ask (other particles and endings, other word order: "하늘 배포 날짜를 언제로 정했지?");
recall@5 is the share of questions whose decision message is among the five passages returned; it is measured again
with filler words the corpus lacks put before each question ("혹시 기억나? 예전에 얘기했던 …"), and against it, how
many of a dozen off-topic questions (about lunch menus, parking, Wi-Fi passwords: sharing at most a common word
with the corpus) get no passage at all, so the bot says it found nothing (`MIN_COVERAGE`). Search time is
measured per question (analysis included) over rounds that alternate, on the same loaded index; the report gives
every round's p50 and p95, not the best.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.knowledge.analyzer import KoreanAnalyzer
from bot.knowledge.index import KnowledgeIndex
from chatbus import Bus, Keys, connect
from chatbus.knowledge import Passage
from testkit.redis_server import RedisServer

PROJECTS = [
    "하늘", "바다", "구름", "별빛", "새벽", "단풍", "소나무", "무지개", "노을", "한강", "백두", "은하", "파도", "들꽃",
    "햇살", "이슬", "보름", "초롱", "가람", "누리", "미르", "나래", "온새", "다솜", "라온",
]  # fmt: skip
ATTRIBUTES = {  # attribute → (how a decision states a value, how people ask for it)
    "배포 날짜": (["{m}월 {d}일로 정했어요", "{m}월 {d}일에 하기로 했습니다"], ["언제로 정했지?", "언제였죠?"]),
    "담당자": (["{person}님이 맡기로 했어요", "{person}님으로 정해졌어요"], ["누구였지?", "누가 맡았어?"]),
    "예산": (["{n}백만 원으로 확정했어요", "{n}백만 원까지 쓰기로 했어요"], ["얼마로 정했어?", "얼마였지?"]),
    "회의 시간": (["매주 {day}요일 {h}시로 잡았어요", "{day}요일 {h}시에 모이기로 했어요"], ["언제야?", "몇 시였지?"]),
    "서버 주소": (["10.{n}.{d}.{h}로 옮겼어요", "새 주소는 10.{n}.{d}.{h}입니다"], ["뭐로 바뀌었어?", "어디였지?"]),
    "마감일": (["{m}월 {d}일까지로 늦췄어요", "{m}월 {d}일이 마감이에요"], ["언제까지야?", "며칠이었지?"]),
    "저장소": (
        ["git.example.com/{p}로 옮겼어요", "저장소는 git.example.com/{p}에 있어요"],
        ["어디야?", "주소가 뭐였지?"],
    ),
    "발표자": (["{person}님이 발표하기로 했어요", "{person}님이 발표를 맡았어요"], ["누구야?", "누가 하기로 했지?"]),
}
FILLER = "혹시 기억나? 예전에 얘기했던 "
OFF_TOPIC = [
    "지난주 회의 때 먹은 저녁 메뉴가 뭐였지?", "주차장 위치가 어디야?", "휴가 신청은 어떻게 해?",
    "커피 머신 고장 났어?",
    "이번 달 월급날이 언제야?", "택배 보관함 비밀번호 뭐였지?", "하늘 프로젝트 로고 색깔 뭐로 정했지?",
    "바다 팀 회식 장소 어디야?", "신입 교육 자료 어디 있어?", "와이파이 비밀번호 알려줘",
    "구름 프로젝트 마스코트 이름이 뭐야?", "워크숍 숙소 예약했어?",
]  # fmt: skip
PEOPLE = [
    "민수",
    "지영",
    "서연",
    "준호",
    "하린",
    "도윤",
    "지우",
    "예준",
    "수아",
    "시우",
    "하은",
    "유진",
    "태윤",
    "소율",
]
TOPICS = [
    "배포", "서버", "데이터베이스", "회의", "점심", "예산", "일정", "디자인", "테스트", "버그", "로그", "인증", "결제",
    "알림", "검색", "캐시", "모니터링", "보안", "채용", "교육", "발표", "문서", "리뷰", "고객", "계약", "출장", "휴가",
    "장애", "백업", "성능", "번역", "설문", "이벤트", "공지", "마감", "저장소", "주소", "날짜", "담당자", "시간",
]  # fmt: skip
CHAT = [
    "넵 확인했어요",
    "ㅋㅋㅋ 좋아요",
    "감사합니다!",
    "잠시만요",
    "오 대박",
    "수고하셨어요",
    "내일 봬요",
    "ㅇㅋ",
    "헉",
]
LINES = [
    "{person}님 {topic} 확인 부탁드려요",
    "오늘 {topic} 관련해서 이야기 나눠요",
    "{topic}은 {day}요일까지 끝낼게요",
    "{project} {topic} 진행 상황 공유드립니다",
    "{topic} 때문에 {topic2} 일정이 밀렸어요",
    "혹시 {topic} 문서 어디 있는지 아시는 분?",
    "{person}님이 {topic} 쪽 맡아 주시면 좋겠어요",
    "{project} 팀 {topic} 리뷰는 다음 주에 해요",
    "어제 {topic} 이슈는 해결됐나요?",
]
DISTRACTORS = ["{project} {attribute} 아직 안 정해졌나요?", "{project} {attribute} 논의는 다음 회의에서 해요"]
DISTRACTORS_PER_FACT = 4  # messages that name a decision's project and attribute without deciding anything
DAYS = ["월", "화", "수", "목", "금"]


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # the message id of the decision


def corpus(messages: int, seed: int = 7) -> tuple[list[Passage], list[Question]]:
    """`messages` chat messages in one channel, oldest first, and the held-out questions on its decisions."""
    rng = random.Random(seed)
    facts = [(p, a) for p in PROJECTS for a in ATTRIBUTES]
    rng.shuffle(facts)
    # Where each decision, and each of its DISTRACTORS_PER_FACT near-misses, falls in the history.
    places = rng.sample(range(messages), min(messages, len(facts) * (1 + DISTRACTORS_PER_FACT)))
    decisions = dict(zip(places, facts, strict=False))
    distractors = {place: facts[i % len(facts)] for i, place in enumerate(places[len(facts) :])}
    out, questions = [], []
    start = time.time() - 365 * 24 * 3600
    for i in range(messages):
        at = start + i * (365 * 24 * 3600 / messages)
        thread = f"t{i // 12}" if rng.random() < 0.4 else ""
        if i in decisions:
            project, attribute = decisions[i]
            states, asks = ATTRIBUTES[attribute]
            text = f"{project} 프로젝트 {attribute}는 " + rng.choice(states).format(**_values(rng, project))
            questions.append(Question(f"{project} {attribute}{_particle(rng)} {rng.choice(asks)}", str(i)))
        elif i in distractors:
            project, attribute = distractors[i]
            text = rng.choice(DISTRACTORS).format(project=project, attribute=attribute)
        else:
            text = _chat(rng)
        out.append(Passage("bench", "c", str(i), text, author=rng.choice(PEOPLE), thread=thread, at=at))
    return out, questions


def _values(rng: random.Random, project: str) -> dict[str, object]:
    return {
        "m": rng.randint(1, 12),
        "d": rng.randint(1, 28),
        "h": rng.randint(9, 18),
        "n": rng.randint(1, 99),
        "day": rng.choice(DAYS),
        "person": rng.choice(PEOPLE),
        "p": f"team/{project}",
    }


def _particle(rng: random.Random) -> str:
    return rng.choice(["", "는", "를", "가", " 말인데", " 관련해서"])


def _chat(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(CHAT)
    fields = {
        "person": rng.choice(PEOPLE),
        "topic": rng.choice(TOPICS),
        "topic2": rng.choice(TOPICS),
        "day": rng.choice(DAYS),
        "project": rng.choice(PROJECTS),
    }
    if roll < 0.7:
        return rng.choice(LINES).format(**fields)
    count = rng.randint(2, 10)  # a longer message: a few sentences, now and then a paragraph
    sentences = [rng.choice(LINES).format(**{**fields, "topic": rng.choice(TOPICS)}) for _ in range(count)]
    return ". ".join(sentences) + "."


async def run(args: argparse.Namespace) -> str:
    passages, questions = corpus(args.messages)
    questions = questions[: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        client = connect(server.url)
        try:
            index = KnowledgeIndex(Bus(client, Keys("bench:")).knowledge, KoreanAnalyzer())
            index.analyzer.terms("준비")  # the model loaded before the clock starts
            rss_before = _rss_mb()
            started = time.perf_counter()
            await index.put(passages)
            indexing_s = time.perf_counter() - started
            memory = await client.info("memory")
            rounds: list[list[float]] = []
            found = with_filler = nothing = 0
            for round_ in range(args.rounds):
                times = []
                for question in questions if round_ % 2 == 0 else list(reversed(questions)):
                    begun = time.perf_counter()
                    hits = await index.search("bench", ["c"], question.text, k=5)
                    times.append((time.perf_counter() - begun) * 1000)
                    if round_ == 0:
                        found += any(h.passage.message == question.answer for h in hits)
                rounds.append(times)
            for question in questions:
                hits = await index.search("bench", ["c"], FILLER + question.text, k=5)
                with_filler += any(h.passage.message == question.answer for h in hits)
            for off in OFF_TOPIC:
                nothing += not await index.search("bench", ["c"], off, k=5)
        finally:
            await client.aclose()
            server.kill()
    lengths = [len(p.text) for p in passages]
    mean, used = statistics.mean(lengths), memory["used_memory"] / 2**20
    lines = [
        f"workspace knowledge: {args.messages:,} messages (generated, seed 7; length mean {mean:.0f} chars, "
        f"p95 {_pct(lengths, 95):.0f}, max {max(lengths)}), one channel, a private redis-server",
        f"- indexing: {indexing_s:.1f} s ({args.messages / indexing_s:,.0f} messages/s, Kiwi analysis included); "
        f"Redis used_memory {used:.0f} MiB; indexer peak RSS {rss_before:.0f} → {_rss_mb():.0f} MiB",
    ]
    for i, times in enumerate(rounds, start=1):
        lines.append(
            f"- search round {i} ({len(times)} questions, k=5): p50 {_pct(times, 50):.1f} ms, "
            f"p95 {_pct(times, 95):.1f} ms, max {max(times):.1f} ms"
        )
    lines.append(
        f"- recall@5: {found}/{len(questions)} = {found / len(questions):.2f} (held-out decision questions, see "
        "bench/knowledge.py for the method)"
    )
    lines.append(
        f"- recall@5 with filler words before each question: {with_filler}/{len(questions)} = "
        f'{with_filler / len(questions):.2f}; off-topic questions answered "found nothing": {nothing}/{len(OFF_TOPIC)}'
    )
    return "\n".join(lines)


def _pct(values: list[float] | list[int], pct: int) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300, help="at most this many held-out questions")
    parser.add_argument("--rounds", type=int, default=2)
    print(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
