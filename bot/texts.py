"""User-facing messages, Korean by default and English with BOT_LANGUAGE=en."""

from __future__ import annotations

from typing import Literal

Language = Literal["ko", "en"]

_TEXTS: dict[str, dict[Language, str]] = {
    "thinking": {"ko": "⏳ 생각 중… 앞에 {ahead}개", "en": "⏳ Thinking… {ahead} ahead of you"},
    "too_long": {
        "ko": "❌ 질문이 너무 깁니다 ({length}자). {limit}자 이하로 줄여 주세요.",
        "en": "❌ The question is too long ({length} characters). Please keep it under {limit}.",
    },
    "too_long_tokens": {
        "ko": "❌ 질문과 맥락이 모델이 읽을 수 있는 길이를 넘습니다. 줄여서 다시 물어봐 주세요.",
        "en": "❌ The question and its context are longer than the model can read. Please shorten them.",
    },
    "empty": {"ko": "❓ 질문을 입력해 주세요.", "en": "❓ Please type a question."},
    "overloaded": {
        "ko": "🚦 지금은 질문이 너무 많이 밀려 있습니다 (대기 {depth}개). 잠시 후 다시 물어봐 주세요.",
        "en": "🚦 Too many questions are waiting right now ({depth}). Please try again shortly.",
    },
    "expired": {
        "ko": "⌛ 답변을 시작하기 전에 대기 시간이 지났습니다. 다시 물어봐 주세요.",
        "en": "⌛ The question waited too long before an answer could start. Please ask again.",
    },
    "cancelled": {"ko": "⏹️ 답변을 멈췄습니다.", "en": "⏹️ Stopped."},
    "failed": {
        "ko": "⚠️ 답변을 만드는 중 오류가 났습니다. 운영자에게 알려 주세요.",
        "en": "⚠️ Something went wrong while answering. Please tell the operator.",
    },
    "timeout": {
        "ko": "⌛ 답변이 오지 않습니다. 작업자(worker)가 실행 중인지 확인해 주세요.",
        "en": "⌛ No answer is arriving. Check that a worker is running.",
    },
    "redis_down": {
        "ko": "🔌 Redis에 연결할 수 없습니다 ({url}). REDIS_URL을 확인해 주세요.",
        "en": "🔌 Cannot reach Redis ({url}). Check REDIS_URL.",
    },
    "restarted": {"ko": "🔁 답변을 처음부터 다시 만듭니다…", "en": "🔁 Starting the answer over…"},
}


def text(key: str, language: Language = "ko", **values: object) -> str:
    """One message in the chosen language, with its placeholders filled."""
    return _TEXTS[key][language].format(**values)


def error_text(code: str, language: Language = "ko") -> str:
    """The message for an `error` event code."""
    key = "too_long_tokens" if code == "too_long" else code
    return text(key if key in _TEXTS else "failed", language)
