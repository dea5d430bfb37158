"""Encode/decode of the queue contract: round trips and one clear error for anything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbus import (
    AnswerEvent,
    Delta,
    Done,
    ErrorEvent,
    MalformedMessage,
    Question,
    Restart,
    Started,
    Turn,
    decode_event,
    is_final,
)
from chatbus.keys import FIELD, Keys

texts = st.text(max_size=300)
questions = st.builds(
    Question,
    id=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    platform=st.sampled_from(["discord", "slack", "terminal"]),
    question=st.text(min_size=1, max_size=300),
    context=texts,
    history=st.lists(st.builds(Turn, question=texts, answer=texts), max_size=4).map(tuple),
    target=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    user=texts,
    created_at=st.floats(0, 2e9),
    expires_at=st.floats(0, 2e9),
    max_new_tokens=st.none() | st.integers(1, 8192),
)
events = st.one_of(
    st.builds(Started, worker=texts, attempt=st.integers(1, 10)),
    st.builds(Delta, text=texts),
    st.builds(Restart, attempt=st.integers(1, 10)),
    st.builds(
        Done,
        text=texts,
        finish_reason=st.sampled_from(["stop", "length"]),
        prompt_tokens=st.integers(0, 4096),
        completion_tokens=st.integers(0, 4096),
        queued_s=st.floats(0, 1e6),
        generate_s=st.floats(0, 1e6),
    ),
    st.builds(
        ErrorEvent, code=st.sampled_from(["too_long", "expired", "cancelled", "overloaded", "failed"]), message=texts
    ),
)


@given(questions)
def test_question_round_trip(question: Question) -> None:
    fields = question.to_fields()
    assert Question.from_fields(fields) == question
    # Redis hands back bytes: decoding works on them too.
    assert Question.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == question


@given(events)
def test_event_round_trip(event: AnswerEvent) -> None:
    fields = event.to_fields()
    assert decode_event(fields) == event
    assert json.loads(fields[FIELD])["v"] == 1


def test_final_events() -> None:
    assert is_final(Done(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0, queued_s=0, generate_s=0))
    assert is_final(ErrorEvent(code="failed"))
    assert not is_final(Delta(text="x"))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "missing field"),
        ({FIELD: b"\xff\xfe not utf-8"}, "not UTF-8 JSON"),
        ({FIELD: "{not json"}, "not UTF-8 JSON"),
        ({FIELD: "[1, 2]"}, "not a JSON object"),
        ({FIELD: json.dumps({"v": 2, "id": "a"})}, "unsupported version"),
        ({FIELD: json.dumps({"v": 1, "id": "a"})}, "platform"),
        (
            {
                FIELD: json.dumps(
                    {"v": 1, "id": "bad id!", "platform": "x", "question": "q", "created_at": 0, "expires_at": 0}
                )
            },
            "id",
        ),
        (
            {FIELD: json.dumps({"v": 1, "id": "a", "platform": "x", "question": "", "created_at": 0, "expires_at": 0})},
            "question",
        ),
        (
            {
                FIELD: json.dumps(
                    {"v": 1, "id": "a", "platform": "x", "question": "q", "created_at": 0, "expires_at": 0, "extra": 1}
                )
            },
            "extra",
        ),
    ],
)
def test_malformed_question_raises_one_error_type(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        Question.from_fields(fields, "1-0")
    assert info.value.entry_id == "1-0"


@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    for decode in (Question.from_fields, decode_event):
        with pytest.raises(MalformedMessage):
            decode({FIELD: raw})


def test_unknown_event_type_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_event({FIELD: json.dumps({"v": 1, "type": "bogus"})})


def test_key_names_follow_the_contract() -> None:
    keys = Keys("kullm:")
    assert keys.questions == "kullm:questions"
    assert keys.answers("q1") == "kullm:answers:q1"
    assert keys.inflight("discord") == "kullm:inflight:discord"
    assert keys.lease("q1") == "kullm:lease:q1"
    assert keys.cancel("q1") == "kullm:cancel:q1"
    assert keys.dead == "kullm:dead"
    assert keys.seen("slack", "E1") == "kullm:seen:slack:E1"
    assert keys.thread("slack", "T1") == "kullm:thread:slack:T1"
    assert Keys("other:").questions == "other:questions"


def _entry(**fields: object) -> dict[str, str]:
    document = {"v": 1, "id": "a", "platform": "x", "question": "q", "created_at": 1.0, "expires_at": 2.0, **fields}
    return {FIELD: json.dumps(document, ensure_ascii=False)}  # UTF-8, as pydantic writes it


@pytest.mark.parametrize(
    ("fields", "oversized"),
    [
        ({"question": "가" * 16_001}, True),
        ({"context": "가" * 200_001}, True),
        ({"history": [{"question": "q", "answer": "a"}] * 51}, True),
        ({"history": [{"question": "q", "answer": "가" * 16_001}]}, True),
        ({"context": "가" * 200_000, "history": [{"question": "가" * 16_000, "answer": "a"}] * 50}, True),  # > 1 MiB
        ({"created_at": float("inf")}, False),
        ({"expires_at": float("-inf")}, False),
        ({"created_at": float("nan")}, False),
        ({"expires_at": 1e300}, False),
        ({"max_new_tokens": 10**9}, False),
    ],
)
def test_the_contract_bounds_every_input(fields: dict[str, object], oversized: bool) -> None:
    with pytest.raises(MalformedMessage) as info:
        Question.from_fields(_entry(**fields), "1-0")
    assert info.value.oversized is oversized


def test_the_largest_valid_entry_still_decodes() -> None:
    turns = [{"question": "가" * 1000, "answer": "나" * 1000}] * 50
    entry = _entry(question="가" * 16_000, context="다" * 100_000, history=turns)
    assert len(Question.from_fields(entry).history) == 50
