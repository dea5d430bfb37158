"""User-facing messages, Korean by default and English with BOT_LANGUAGE=en."""

from __future__ import annotations

from typing import Literal

Language = Literal["ko", "en"]

_TEXTS: dict[str, dict[Language, str]] = {
    "thinking": {"ko": "⏳ 생각 중…", "en": "⏳ Thinking…"},
    "waiting_turn": {
        "ko": "⏳ 순서를 기다리는 중… (앞에 질문 {ahead}개)",
        "en": "⏳ Waiting for your turn… ({ahead} {questions} ahead)",
    },
    "too_long": {
        "ko": "❌ 질문이 너무 깁니다 ({length}자). {limit}자 이하로 줄여 주세요.",
        "en": "❌ The question is too long ({length} characters). Please keep it under {limit}.",
    },
    "too_long_tokens": {
        "ko": "❌ 질문이 모델이 한 번에 읽을 수 있는 길이를 넘습니다. 질문을 줄여서 다시 물어봐 주세요.",
        "en": "❌ The question is longer than the model can read at once. Please shorten it.",
    },
    "context_cut": {
        "ko": "📎 맥락이 길어 앞부분만 읽었습니다.",
        "en": "📎 The context was long, so only its beginning was read.",
    },
    "context_too_long": {
        "ko": "❌ 맥락이 너무 깁니다 ({length:,}자). {limit:,}자 이하로 줄여 주세요.",
        "en": "❌ The context is too long ({length:,} characters). Please keep it under {limit:,}.",
    },
    "empty": {"ko": "❓ 질문을 입력해 주세요.", "en": "❓ Please type a question."},
    "tokens_per_day": {
        "ko": "🪫 오늘 쓸 수 있는 토큰({limit:,}개)이 남지 않았습니다 (답변 중인 질문이 잡아 둔 몫 포함). "
        "답변이 끝난 뒤나 내일(UTC 0시 이후) 다시 물어봐 주세요.",
        "en": "🪫 None of today's {limit:,} tokens are left (answers still running hold their share). "
        "Please ask again once they finish, or tomorrow (after 00:00 UTC).",
    },
    "summarizing": {"ko": "📝 요약 중… {done}/{total}", "en": "📝 Summarising… {done}/{total}"},
    "task_summarize": {"ko": "스레드 요약", "en": "Thread summary"},
    "task_translate": {"ko": "한↔영 번역", "en": "Korean↔English translation"},
    "task_proofread": {"ko": "맞춤법 교정", "en": "Proofreading"},
    "task_empty": {"ko": "❓ {task}할 글이 없습니다.", "en": "❓ There is no text for {task}."},
    "file_question": {"ko": "이 파일의 내용을 요약해 줘", "en": "Summarise this file"},
    "no_thread": {
        "ko": "🧵 이 메시지에는 스레드가 없습니다. 스레드 안의 메시지에서 다시 해 주세요.",
        "en": "🧵 This message has no thread. Try it on a message inside a thread.",
    },
    "task_in_thread": {"ko": "📝 {thread}에 답을 올립니다.", "en": "📝 The answer goes into {thread}."},
    "file_too_large": {
        "ko": "❌ 파일 {name}이(가) 너무 큽니다 ({size:,}바이트). {limit:,}바이트(MAX_FILE_BYTES) 이하만 읽습니다.",
        "en": "❌ The file {name} is too large ({size:,} bytes). Files up to {limit:,} bytes (MAX_FILE_BYTES) are read",
    },
    "file_not_text": {
        "ko": "❌ 파일 {name}은(는) 텍스트 파일이 아닙니다. .txt .md .csv .json .py 같은 텍스트나 PDF만 읽습니다.",
        "en": "❌ The file {name} is not a text file. Text (.txt .md .csv .json .py …) and PDF files are read.",
    },
    "file_not_decodable": {
        "ko": "❌ 파일 {name}을(를) 읽을 수 없습니다 (UTF-8, CP949/EUC-KR 텍스트나 PDF가 아닙니다).",
        "en": "❌ Cannot read the file {name} (not UTF-8 or CP949/EUC-KR text, nor a readable PDF).",
    },
    "file_no_text": {
        "ko": "❌ PDF {name}에서 글자를 찾지 못했습니다 (스캔한 이미지인가요?).",
        "en": "❌ No text found in the PDF {name} (is it a scanned image?).",
    },
    "file_too_complex": {
        "ko": "❌ PDF {name}은(는) 읽기 한도({seconds:.0f}초, 메모리, 압축을 푼 크기)를 넘어 읽지 않았습니다.",
        "en": "❌ The PDF {name} was not read: it exceeds the reading budget ({seconds:.0f} s, memory, unpacked size).",
    },
    "persona_shown": {
        "ko": "🎭 이 채널의 페르소나 (<@{by}> 님이 {at}에 설정):\n{persona}",
        "en": "🎭 This channel's persona (set by <@{by}> on {at}):\n{persona}",
    },
    "persona_none": {
        "ko": "🎭 이 채널에는 페르소나가 없습니다. 관리자가 `{command} persona set 지시문`으로 정할 수 있습니다.",
        "en": "🎭 This channel has no persona. An admin can set one with `{command} persona set instructions`.",
    },
    "persona_set": {
        "ko": "✅ 이 채널의 페르소나를 정했습니다. 다음 질문부터 적용됩니다:\n{persona}",
        "en": "✅ This channel's persona is set. It applies from the next question:\n{persona}",
    },
    "persona_cleared": {
        "ko": "🗑️ 이 채널의 페르소나를 지웠습니다.",
        "en": "🗑️ This channel's persona is cleared.",
    },
    "persona_admins_only": {
        "ko": "🔒 페르소나는 관리자만 바꿀 수 있습니다 ({who}).",
        "en": "🔒 Only admins can change the persona ({who}).",
    },
    "discord_admins": {"ko": "서버 관리 권한이 있는 멤버", "en": "members with Manage Server"},
    "slack_admins": {
        "ko": "워크스페이스 관리자와 SLACK_ADMIN_USER_IDS에 있는 사람",
        "en": "workspace admins and the people in SLACK_ADMIN_USER_IDS",
    },
    "persona_too_long": {
        "ko": "❌ 페르소나가 너무 깁니다 ({length:,}자). {limit:,}자 이하로 줄여 주세요.",
        "en": "❌ The persona is too long ({length:,} characters). Please keep it under {limit:,}.",
    },
    "persona_usage": {
        "ko": "⚙️ 사용법: `{command} persona` (보기), `{command} persona set 지시문`, `{command} persona clear`",
        "en": "⚙️ Usage: `{command} persona` (show), `{command} persona set instructions`, `{command} persona clear`",
    },
    "question_not_utf8": {
        "ko": "❌ 질문이 올바른 UTF-8 텍스트가 아닙니다.",
        "en": "❌ The question is not valid UTF-8 text.",
    },
    "context_not_utf8": {
        "ko": "❌ 맥락이 올바른 UTF-8 텍스트가 아닙니다.",
        "en": "❌ The context is not valid UTF-8 text.",
    },
    "context_file_unreadable": {
        "ko": "❌ 맥락 파일을 읽을 수 없습니다 ({path}: {reason}).",
        "en": "❌ Cannot read the context file ({path}: {reason}).",
    },
    "no_worker": {
        "ko": "⚠️ 이 대기열을 처리하는 작업자(worker)가 없어 질문을 거두었습니다. `kullm up`이나 `kullm worker`를 "
        "같은 Redis로 실행해 주세요. 쓰고 있는 Redis: {redis}",
        "en": "⚠️ No worker is serving this queue, so the question was withdrawn. Start `kullm up` or "
        "`kullm worker` on the same Redis. Redis in use: {redis}",
    },
    "worker_loading": {
        "ko": "⏳ 작업자가 모델을 불러오는 중입니다. 다 불러오면 답합니다…",
        "en": "⏳ A worker is loading its model; it answers once loaded…",
    },
    "workers_silent": {
        "ko": "⏳ 작업자가 응답하지 않습니다 (멈췄거나 다시 시작하는 중). 돌아오면 답합니다…",
        "en": "⏳ The workers are not responding (frozen or restarting); they answer once back…",
    },
    "answered": {"ko": "토큰 {tokens}개 · {seconds:.1f}초", "en": "{tokens} tokens · {seconds:.1f}s"},
    "redis_in_use": {"ko": "🔗 Redis: {redis}", "en": "🔗 Redis: {redis}"},
    "prompt_bad_option": {
        "ko": "❌ {option}에는 PLATFORM:ID를 주세요 (예: discord:123, slack:C123:1700000000.000100).",
        "en": "❌ {option} takes PLATFORM:ID (for example discord:123 or slack:C123:1700000000.000100).",
    },
    "prompt_no_tokenizer": {
        "ko": "❌ 모델의 토크나이저를 불러올 수 없습니다: {reason}",
        "en": "❌ Cannot load the model's tokenizer: {reason}",
    },
    "prompt_no_history": {
        "ko": "🔌 Redis에서 대화 기록이나 페르소나를 읽을 수 없습니다 ({url}).",
        "en": "🔌 Cannot read the conversation or the persona from Redis ({url}).",
    },
    "settings_invalid": {"ko": "❌ 잘못된 설정", "en": "❌ invalid setting"},
    "overloaded": {
        "ko": "🚦 지금은 질문이 너무 많이 밀려 있습니다 (대기 {depth}개). 잠시 후 다시 물어봐 주세요.",
        "en": "🚦 Too many questions are waiting right now ({depth}). Please try again shortly.",
    },
    "expired": {
        "ko": "⌛ 답변을 시작하기 전에 대기 시간이 지났습니다. 다시 물어봐 주세요.",
        "en": "⌛ The question waited too long before an answer could start. Please ask again.",
    },
    "cancelled": {"ko": "⏹️ 답변을 멈췄습니다.", "en": "⏹️ Stopped."},
    "withdrawn": {"ko": "⏹️ 질문을 취소했습니다.", "en": "⏹️ Question withdrawn."},
    "left": {
        "ko": "⏹️ 멈추라고 요청하고 나왔습니다. 답변은 작업자가 멈춥니다.",
        "en": "⏹️ Asked the worker to stop and left without waiting.",
    },
    "failed": {
        "ko": "⚠️ 답변을 만드는 중 오류가 났습니다. 운영자에게 알려 주세요.",
        "en": "⚠️ Something went wrong while answering. Please tell the operator.",
    },
    "given_up": {
        "ko": "⌛ 이 질문은 너무 오래되어 답변을 마치지 못했습니다. 다시 물어봐 주세요.",
        "en": "⌛ This question is too old to finish its answer. Please ask again.",
    },
    "timeout": {
        "ko": "⌛ 답변이 오지 않습니다. 작업자(worker)가 실행 중인지 확인해 주세요.",
        "en": "⌛ No answer is arriving. Check that a worker is running.",
    },
    "redis_auth": {
        "ko": "🔐 Redis가 비밀번호를 받아들이지 않습니다 ({url}). REDIS_PASSWORD나 REDIS_URL을 확인해 주세요.",
        "en": "🔐 Redis refuses the password ({url}). Check REDIS_PASSWORD or REDIS_URL.",
    },
    "redis_down": {
        "ko": "🔌 Redis에 연결할 수 없습니다 ({url}). REDIS_URL을 확인해 주세요.",
        "en": "🔌 Cannot reach Redis ({url}). Check REDIS_URL.",
    },
    "redis_down_kullm_up": {
        "ko": "🔌 이 디렉터리의 `kullm up`이 쓰는 Redis({url})에 연결할 수 없습니다. `kullm up`이 실행 중인지 "
        "확인하거나 REDIS_URL을 설정해 주세요.",
        "en": "🔌 Cannot reach the Redis that `kullm up` runs for this directory ({url}). Check that `kullm up` is "
        "running, or set REDIS_URL.",
    },
    "redis_stalled": {
        "ko": "🔌 Redis({url})가 응답하지 않습니다 (연결은 되지만 멈춘 상태). 잠시 후 다시 시도해 주세요.",
        "en": "🔌 Redis ({url}) is not answering (it accepts connections but is stalled). Please try again shortly.",
    },
    "redis_refuses": {
        "ko": "🔌 지금은 질문을 받을 수 없습니다: 대기열(Redis)이 쓰기를 거부합니다 ({reason}). "
        "잠시 후 다시 물어봐 주세요.",
        "en": "🔌 Questions can't be taken right now: the queue (Redis) refuses writes ({reason}). "
        "Please try again shortly.",
    },
    "unavailable": {
        "ko": "🔌 지금은 질문을 받을 수 없습니다: 대기열(Redis)에 연결되지 않습니다. 잠시 후 다시 물어봐 주세요.",
        "en": "🔌 Questions can't be taken right now: the queue (Redis) is unreachable. Please try again shortly.",
    },
    "redis_lost": {
        "ko": "🔌 Redis 연결이 끊겼습니다. 질문은 대기열에 남아 있으니 다시 연결하는 중입니다…",
        "en": "🔌 Lost the connection to Redis. The question stays queued; reconnecting…",
    },
    "rate_limited": {
        "ko": "🐢 질문이 너무 잦습니다. 1분에 {limit}개까지 물어볼 수 있어요. 잠시 후 다시 물어봐 주세요.",
        "en": "🐢 You are asking too often: up to {limit} questions a minute. Please wait a moment.",
    },
    "concurrent": {
        "ko": "⏳ 이미 답변을 기다리는 질문이 {limit}개 있습니다. 답이 끝난 뒤 다시 물어봐 주세요.",
        "en": "⏳ You already have {limit} questions being answered. Please wait for them to finish.",
    },
    "not_allowed": {
        "ko": "🚫 이 채널이나 역할에서는 KULLM을 쓸 수 없습니다.",
        "en": "🚫 KULLM is not enabled for this channel or role.",
    },
    "usage_discord": {
        "ko": "👋 KULLM(구름)에게 물어보세요: `@{name} 딥러닝이 뭐야?` 또는 `/kullm 질문:딥러닝이 뭐야?`\n"
        "메시지에 답장하며 멘션하면 그 메시지를 맥락으로 씁니다. 스레드 안에서는 멘션 없이 대화를 이어갈 수 있어요.",
        "en": "👋 Ask KULLM: `@{name} What is deep learning?` or `/kullm question:...`\n"
        "Mention me in a reply to use that message as context. Inside my threads, just keep talking.",
    },
    "usage_slack": {
        "ko": "👋 KULLM(구름)에게 물어보세요: `/kullm 딥러닝이 뭐야?` 또는 `@KULLM 딥러닝이 뭐야?`\n"
        "메시지의 ⋮ 메뉴 → *KULLM에게 묻기* 로 그 메시지에 대해 물을 수 있어요. "
        "답변 스레드에서 다시 멘션하면 대화가 이어집니다.",
        "en": "👋 Ask KULLM: `/kullm What is deep learning?` or `@KULLM ...`\n"
        "Use ⋮ → *Ask KULLM* on a message to ask about it. Mention me again in an answer thread to continue.",
    },
    "invite_slack": {
        "ko": "🔒 KULLM이 이 채널에 없습니다. 채널에서 `/invite @KULLM` 으로 초대한 뒤 다시 물어봐 주세요.",
        "en": "🔒 KULLM is not in this channel. Invite it with `/invite @KULLM`, then ask again.",
    },
    "asked_by_slack": {"ko": "<@{user}> 님의 질문: {question}", "en": "<@{user}> asked: {question}"},
    "requested_by_slack": {"ko": "<@{user}> 님이 {task}{particle} 요청했어요", "en": "<@{user}> requested: {task}"},
    "requested_by": {"ko": "**{user}** 님이 {task}{particle} 요청했어요", "en": "**{user}** requested: {task}"},
    "modal_submit": {"ko": "묻기", "en": "Ask"},
    "asked_by": {"ko": "**{user}** 님의 질문: {question}", "en": "**{user}** asked: {question}"},
    "cancel_button": {"ko": "그만", "en": "Stop"},
    "cancel_not_yours": {
        "ko": "🙅 질문한 사람이나 관리자만 답변을 멈출 수 있어요.",
        "en": "🙅 Only the asker or a moderator can stop this answer.",
    },
    "cancel_requested": {"ko": "⏹️ 멈추는 중…", "en": "⏹️ Stopping…"},
    "answer_gone": {"ko": "이 답변은 이미 끝났습니다.", "en": "This answer has already finished."},
    "modal_title": {"ko": "KULLM에게 묻기", "en": "Ask KULLM"},
    "modal_label": {"ko": "질문", "en": "Question"},
    "restarted": {"ko": "🔁 답변을 처음부터 다시 만듭니다…", "en": "🔁 Starting the answer over…"},
    "streaming_below": {"ko": "✍️ 아래에 답변을 쓰는 중…", "en": "✍️ Writing the answer below…"},
    "stop_below": {"ko": "✍️ 위에 답변을 쓰는 중…", "en": "✍️ Writing the answer above…"},
    "generating": {"ko": "✍️ 답변을 쓰는 중…", "en": "✍️ Writing the answer…"},
    "generating_status": {"ko": "답변을 쓰는 중…", "en": "writing the answer…"},
    "pane_prompts_title": {"ko": "무엇을 도와드릴까요?", "en": "What can I help with?"},
    "vote_up_button": {"ko": "좋아요", "en": "Helpful"},
    "vote_down_button": {"ko": "아쉬워요", "en": "Not helpful"},
    "vote_up": {"ko": "👍 평가를 저장했습니다. 고맙습니다!", "en": "👍 Thanks, your rating is saved."},
    "vote_down": {
        "ko": "👎 평가를 저장했습니다. 무엇이 아쉬웠는지 스레드에 남겨 주시면 운영자에게 도움이 됩니다.",
        "en": "👎 Your rating is saved. Saying in the thread what was wrong helps the operators.",
    },
    "vote_rate_limited": {
        "ko": "평가 버튼은 1분에 {limit}번까지 누를 수 있습니다. 잠시 후 다시 눌러 주세요.",
        "en": "Rating buttons take {limit} clicks a minute. Please try again shortly.",
    },
    "vote_expired": {
        "ko": "이 답변은 더 이상 평가할 수 없습니다 (보관 기간이 지났습니다).",
        "en": "This answer can no longer be rated (its keeping period is over).",
    },
}


def text(key: str, language: Language = "ko", **values: object) -> str:
    """One message in the chosen language, with its placeholders filled."""
    return _TEXTS[key][language].format(**values)


def object_particle(word: str) -> str:
    """을 after a final consonant (받침), 를 after a vowel: 「스레드 요약을」, 「검사를」."""
    last = next((c for c in reversed(word) if "가" <= c <= "힣"), "")
    return "을" if last and (ord(last) - ord("가")) % 28 else "를"


def quote_of(user: str, question: str, task: str, language: Language, *, slack: bool = False) -> str:
    """The line an adapter posts for what someone asked: a question quoted, a task (a summary, a translation,
    proofreading) said as the request it is."""
    suffix = "_slack" if slack else ""
    if task == "ask":
        return text(f"asked_by{suffix}", language, user=user, question=question)
    label = text(f"task_{task}", language)
    return text(f"requested_by{suffix}", language, user=user, task=label, particle=object_particle(label))


def waiting_line(ahead: int, language: Language = "ko") -> str:
    """What a queued question shows on every surface: thinking when nobody is ahead, else its place in line."""
    if ahead <= 0:
        return text("thinking", language)
    return text("waiting_turn", language, ahead=ahead, questions="question" if ahead == 1 else "questions")


def error_text(code: str, language: Language = "ko") -> str:
    """The message for an `error` event code."""
    key = "too_long_tokens" if code == "too_long" else code
    return text(key if key in _TEXTS else "failed", language)
