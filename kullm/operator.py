"""The operator's commands over the queue: `kullm status`, `kullm keys`, `kullm usage` and `kullm feedback`. They
print for whoever runs the service (settings and Redis named where they are the fix); `kullm ask`, the one
command a chat member might also run, lives with the chat front-ends in bot/terminal/."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.table import Table

from bot.settings import ClientSettings
from bot.terminal.render import redis_failed
from chatbus import (
    ApiKey,
    Bus,
    BusError,
    redact_url,
)
from chatbus.api_keys import digest, new_key
from runtime.exits import (
    EXIT_INPUT,
    EXIT_OK,
)


async def status(settings: ClientSettings, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print queue depth, questions in flight, live workers and dead letters."""
    out = out or sys.stdout
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        stats = await bus.workers.stats()
    except BusError as exc:
        return redis_failed(exc, settings)
    finally:
        await bus.aclose()
    by_task = Counter[str]()
    for worker in stats.workers:
        by_task.update(worker.tasks)
    if as_json:
        document = {
            "redis": redact_url(settings.redis_url),
            "queued": stats.queued,
            "in_flight": stats.pending,
            "answering_by_task": dict(by_task),
            "dead": stats.dead,
            "workers": [w.model_dump(exclude={"v"}) for w in stats.workers],
        }
        out.write(json.dumps(document, ensure_ascii=False) + "\n")
        return EXIT_OK
    console = Console(file=out, highlight=False)
    console.print(f"redis: {settings.redis_said}", markup=False, soft_wrap=True)
    console.print(f"queued (waiting or answering): {stats.queued}")
    console.print(f"in flight (delivered, not finished): {stats.pending}")
    if by_task:
        kinds = ", ".join(f"{task} {count}" for task, count in sorted(by_task.items()))
        console.print(f"being answered, by task: {kinds}")
    console.print(f"dead letters: {stats.dead}")
    console.print(f"live workers: {len(stats.workers)}")
    for worker in stats.workers:
        state = " (loading its model)" if worker.loading else " (draining)" if worker.draining else ""
        console.print(f"  {worker.name}: {worker.active}/{worker.slots} busy, {worker.model}{state}", markup=False)
    return EXIT_OK


async def feedback(
    settings: ClientSettings, *, since: float = 0.0, as_json: bool = False, out: TextIO | None = None
) -> int:
    """Print the 👍/👎 votes since `since` (epoch seconds): a count per model, template and engine, or with
    `as_json` one JSON line per vote (the question and answer too, only with FEEDBACK_KEEP_TEXT=1)."""
    out = out or sys.stdout
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        votes = await bus.feedback.votes(since)
    except BusError as exc:
        return redis_failed(exc, settings)
    finally:
        await bus.aclose()
    if as_json:
        for vote in votes:
            text_kept = settings.feedback_keep_text and vote.question is not None
            document = vote.model_dump(exclude={"v"} if text_kept else {"v", "question", "answer"})
            document["at"] = datetime.fromtimestamp(vote.at, UTC).isoformat(timespec="seconds")
            out.write(json.dumps(document, ensure_ascii=False) + "\n")
        return EXIT_OK
    console = Console(file=out)
    ups = sum(v.vote == "up" for v in votes)
    answers = len({v.question_id for v in votes})
    console.print(f"votes: {len(votes)} on {answers} answers (👍 {ups}, 👎 {len(votes) - ups})")
    counts: dict[tuple[str, str, str], list[int]] = {}
    for vote in votes:
        tally = counts.setdefault((vote.model, vote.template, vote.engine), [0, 0])
        tally[vote.vote == "down"] += 1
    for (model, template, engine), (up, down) in sorted(counts.items()):
        share = f"{up / (up + down):.0%}"
        console.print(f"  {model or '?'} · {template or '?'} · {engine or '?'}: 👍 {up}  👎 {down}  ({share} 👍)")
    return EXIT_OK


async def keys(settings: ClientSettings, action: str, name: str | None = None, **limits: int | None) -> int:
    """`kullm keys create NAME [limits] | list | revoke NAME`: the API's keys, stored as SHA-256 digests only."""

    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        existing = await bus.api_keys.all()
        by_name = {key.name: found for found, key in existing.items()}
        if action == "list":
            if not existing:
                print("no API keys (kullm keys create NAME)")
            for key in sorted(existing.values(), key=lambda key: key.name):
                daily = f"{key.tokens_per_day:,} tokens/day" if key.tokens_per_day else "no daily cap"
                used = await bus.ledger.tokens_today("api", key.name)
                made = time.strftime("%Y-%m-%d", time.gmtime(key.created_at))
                print(
                    f"{key.name}: {key.questions_per_minute}/min, {daily}, {key.concurrent} at once; "
                    f"created {made}; {used:,} tokens today"
                )
            return EXIT_OK
        assert name is not None
        if action == "revoke":
            if name not in by_name:
                print(f"no API key named {name!r}", file=sys.stderr)
                return EXIT_INPUT
            await bus.api_keys.revoke(by_name[name])
            print(f"revoked {name}: requests with it now get 401")
            return EXIT_OK
        if name in by_name:
            print(f"an API key named {name!r} exists: revoke it first, or pick another name", file=sys.stderr)
            return EXIT_INPUT
        given = {field: value for field, value in limits.items() if value is not None}
        try:
            record = ApiKey(name=name, created_at=time.time(), **given)  # type: ignore[arg-type]
        except ValueError as exc:
            print(f"invalid key settings: {exc}", file=sys.stderr)
            return EXIT_INPUT
        secret = new_key()
        await bus.api_keys.add(digest(secret), record)
        print(secret)
        print(f"(the key for {name}: shown this once, stored only as its SHA-256)", file=sys.stderr)
        return EXIT_OK
    except BusError as exc:
        return redis_failed(exc, settings)
    finally:
        await bus.aclose()


USAGE_GROUPS = {"platform": (0,), "user": (0, 1), "key": (0, 1), "channel": (0, 2)}


def _usage_row(by: str, platform: str, channel: str) -> bool:
    """Whether a usage field counts toward `by`: per channel its channel rows, else the users' totals ("*"),
    API keys apart from chat users."""
    if by == "channel":
        return channel != "*"
    if channel != "*":
        return False
    return by == "platform" or (by == "key") == (platform == "api")


async def usage(
    settings: ClientSettings, *, since: float | None = None, by: str = "user", as_json: bool = False
) -> int:
    """`kullm usage`: questions and tokens per day, grouped by platform, user, API key or channel."""
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    start = since if since is not None else time.time() - 6 * 86400
    days = [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in range(int(start), int(time.time()) + 1, 86400)]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    if today not in days:
        days.append(today)
    try:
        rows: dict[tuple[str, ...], Counter[str]] = {}
        for day in days:
            for field, count in (await bus.ledger.usage(day)).items():
                platform, user, channel, metric = field.split("\t")
                if not _usage_row(by, platform, channel):
                    continue
                parts = (platform, user, channel)
                group = (day, *(parts[i] for i in USAGE_GROUPS[by]))
                rows.setdefault(group, Counter())[metric] += count
    except BusError as exc:
        return redis_failed(exc, settings)
    finally:
        await bus.aclose()
    names = {"platform": ["platform"], "user": ["platform", "user"], "key": ["platform", "key"]}
    columns = ["day", *names.get(by, ["platform", "channel"])]
    ordered = sorted(rows.items())
    if as_json:
        for group, counts in ordered:
            document = dict(zip(columns, group, strict=True)) | {
                m: counts[m] for m in ("questions", "prompt_tokens", "completion_tokens")
            }
            print(json.dumps(document, ensure_ascii=False))
        return EXIT_OK
    table = Table(*columns, "questions", "prompt tokens", "completion tokens")
    for group, counts in ordered:
        table.add_row(*group, *(f"{counts[m]:,}" for m in ("questions", "prompt_tokens", "completion_tokens")))
    Console().print(table if ordered else "no usage recorded in that period")
    return EXIT_OK
