"""The catalogue: every text a person reads, Korean and English side by side (해요체 in Korean), by key.

It is one module, over the project's usual length, on purpose: a translator reads and edits both languages of
every message in one place, and tests/test_texts.py holds that nothing readable is written anywhere else."""

from __future__ import annotations

from typing import Literal

Language = Literal["ko", "en"]
LANGUAGES: tuple[Language, ...] = ("ko", "en")

TEXTS: dict[str, dict[Language, str]] = {
    # ---------------------------------------------------------------- waiting and answering
    "thinking": {"ko": "⏳ 생각 중…", "en": "⏳ Thinking…"},
    "waiting_turn": {
        "ko": "⏳ 순서를 기다리는 중… (앞에 질문 {ahead}개)",
        "en": "⏳ Waiting for your turn… ({ahead} {questions} ahead)",
    },
    "status_thinking": {"ko": "생각하는 중…", "en": "is thinking…"},
    "status_waiting": {
        "ko": "순서를 기다리는 중… (앞에 질문 {ahead}개)",
        "en": "is waiting for its turn… ({ahead} ahead)",
    },
    "status_writing": {"ko": "답변을 쓰는 중…", "en": "is writing the answer…"},
    "loading_messages": {
        "ko": "질문을 꼼꼼히 읽는 중…|생각을 정리하는 중…|알맞은 말을 고르는 중…|답변을 다듬는 중…",
        "en": "Reading the question carefully…|Gathering thoughts…|Choosing the right words…|Polishing the answer…",
    },
    "restarted": {"ko": "🔁 답변을 처음부터 다시 만들어요…", "en": "🔁 Starting the answer over…"},
    "summarizing": {"ko": "📝 요약하는 중… {done}/{total}", "en": "📝 Summarising… {done}/{total}"},
    # Work shown as it happens where Slack streams an answer (task cards), and the sources under an answer.
    "task_parts": {"ko": "{done}/{total} 읽는 중", "en": "Reading {done}/{total}"},
    "task_parts_done": {"ko": "{total}개 부분을 모두 읽었어요", "en": "Read all {total} parts"},
    "task_source_read": {"ko": "📎 {name} 읽음", "en": "📎 Read {name}"},
    "sources_line": {"ko": "📎 출처: {sources}", "en": "📎 Sources: {sources}"},
    "source_thread": {"ko": "스레드", "en": "the thread"},
    "source_message": {"ko": "메시지", "en": "the message"},
    "context_cut": {
        "ko": "📎 맥락이 길어서 앞부분만 읽었어요.",
        "en": "📎 The context was long, so only its beginning was read.",
    },
    # In the footer, which keeps FOOTER_ROOM characters in every message (bot.layout).
    "context_cut_short": {"ko": "📎 맥락이 길어 앞부분만 읽음", "en": "📎 context trimmed"},
    "part": {"ko": "({number}/{total})", "en": "({number}/{total})"},
    "part_open": {"ko": "({number}/…)", "en": "({number}/…)"},
    "footer": {"ko": "{model} · {seconds:.1f}초", "en": "{model} · {seconds:.1f}s"},
    "answered": {"ko": "토큰 {tokens}개 · {seconds:.1f}초", "en": "{tokens} tokens · {seconds:.1f}s"},
    "cancelled": {"ko": "⏹️ 답변을 멈췄어요.", "en": "⏹️ Stopped."},
    "cancelled_by": {"ko": "⏹️ {user} 님이 답변을 멈췄어요.", "en": "⏹️ Stopped by {user}."},
    "cancel_button": {"ko": "그만", "en": "Stop"},
    "cancel_not_yours": {
        "ko": "🙅 질문한 사람이나 관리자만 답변을 멈출 수 있어요.",
        "en": "🙅 Only the asker or a moderator can stop this answer.",
    },
    "cancel_requested": {"ko": "⏹️ 멈추는 중…", "en": "⏹️ Stopping…"},
    "answer_gone": {"ko": "이 답변은 이미 끝났어요.", "en": "This answer has already finished."},
    # ---------------------------------------------------------------- questions refused
    "empty": {"ko": "❓ 질문을 입력해 주세요.", "en": "❓ Please type a question."},
    "too_long": {
        "ko": "❌ 질문이 너무 길어요 ({length:,}자). {limit:,}자 이하로 줄여 주세요.",
        "en": "❌ The question is too long ({length:,} characters). Please keep it under {limit:,}.",
    },
    "too_long_tokens": {
        "ko": "❌ 질문이 모델이 한 번에 읽을 수 있는 길이를 넘어요. 질문을 줄여서 다시 물어봐 주세요.",
        "en": "❌ The question is longer than the model can read at once. Please shorten it and ask again.",
    },
    "context_too_long": {
        "ko": "❌ 맥락이 너무 길어요 ({length:,}자). {limit:,}자 이하로 줄여 주세요.",
        "en": "❌ The context is too long ({length:,} characters). Please keep it under {limit:,}.",
    },
    "question_not_utf8": {
        "ko": "❌ 질문이 올바른 UTF-8 텍스트가 아니에요.",
        "en": "❌ The question is not valid UTF-8 text.",
    },
    "context_not_utf8": {
        "ko": "❌ 맥락이 올바른 UTF-8 텍스트가 아니에요.",
        "en": "❌ The context is not valid UTF-8 text.",
    },
    "tokens_per_day": {
        "ko": "🪫 오늘 쓸 수 있는 토큰({limit:,}개)이 남지 않았어요 (답변 중인 질문이 잡아 둔 몫 포함). "
        "답변이 끝난 뒤나 내일(UTC 0시 이후) 다시 물어봐 주세요.",
        "en": "🪫 None of today's {limit:,} tokens are left (answers still running hold their share). "
        "Please ask again once they finish, or tomorrow (after 00:00 UTC).",
    },
    "rate_limited": {
        "ko": "🐢 질문이 너무 잦아요. 1분에 {limit}개까지 물어볼 수 있어요. 잠시 후 다시 물어봐 주세요.",
        "en": "🐢 You are asking too often: up to {limit} questions a minute. Please wait a moment.",
    },
    "concurrent": {
        "ko": "⏳ 이미 답변을 기다리는 질문이 {limit}개 있어요. 답이 끝난 뒤 다시 물어봐 주세요.",
        "en": "⏳ You already have {limit} questions being answered. Please wait for them to finish.",
    },
    "overloaded": {
        "ko": "🚦 지금은 질문이 너무 많이 밀려 있어요 (대기 {depth}개). 잠시 후 다시 물어봐 주세요.",
        "en": "🚦 Too many questions are waiting right now ({depth}). Please try again shortly.",
    },
    "busy": {
        "ko": "🚦 지금은 질문이 너무 많이 밀려 있어요. 잠시 후 다시 물어봐 주세요.",
        "en": "🚦 Too many questions are waiting right now. Please try again shortly.",
    },
    "not_allowed": {
        "ko": "🚫 이 채널이나 역할에서는 KULLM을 쓸 수 없어요.",
        "en": "🚫 KULLM is not enabled for this channel or role.",
    },
    # ---------------------------------------------------------------- answers that end without one
    "expired": {
        "ko": "⌛ 답변을 시작하기 전에 대기 시간이 지났어요. 다시 물어봐 주세요.",
        "en": "⌛ The question waited too long before an answer could start. Please ask again.",
    },
    "failed": {
        "ko": "⚠️ 답변을 만들다가 문제가 생겼어요. 잠시 후 다시 물어봐 주세요.",
        "en": "⚠️ Something went wrong while answering. Please ask again in a moment.",
    },
    "given_up": {
        "ko": "⌛ 이 질문은 너무 오래되어 답변을 마치지 못했어요. 다시 물어봐 주세요.",
        "en": "⌛ This question is too old to finish its answer. Please ask again.",
    },
    "timeout": {
        "ko": "⌛ 답변이 오지 않아요. 잠시 후 다시 물어봐 주세요.",
        "en": "⌛ No answer came. Please ask again in a moment.",
    },
    "unavailable": {
        "ko": "🔌 지금은 질문을 받을 수 없어요. 잠시 후 다시 물어봐 주세요.",
        "en": "🔌 Questions can't be taken right now. Please try again shortly.",
    },
    "reference": {
        "ko": "계속되면 관리자에게 참조 번호 `{ref}`를 알려 주세요.",
        "en": "If it keeps happening, give an admin the reference `{ref}`.",
    },
    # ---------------------------------------------------------------- tasks and files
    "task_summarize": {"ko": "스레드 요약", "en": "Thread summary"},
    "task_translate": {"ko": "한↔영 번역", "en": "Translate Korean↔English"},
    "task_proofread": {"ko": "맞춤법 교정", "en": "Proofreading"},
    "task_empty": {"ko": "❓ {task}할 글이 없어요.", "en": "❓ There is no text for {task}."},
    "file_question": {"ko": "이 파일의 내용을 요약해 줘", "en": "Summarise this file"},
    "no_thread": {
        "ko": "🧵 이 메시지에는 스레드가 없어요. 스레드 안의 메시지에서 다시 해 주세요.",
        "en": "🧵 This message has no thread. Try it on a message inside a thread.",
    },
    "private_answer": {
        "ko": "🔒 이곳에는 KULLM 봇이 없어서 나에게만 보이게 답해요.",
        "en": "🔒 The KULLM bot isn't a member here, so only you can see this answer.",
    },
    "private_no_thread": {
        "ko": "🧵 이곳에는 KULLM 봇이 없어서 스레드를 읽을 수 없어요. 요약할 메시지에서 앱 메뉴의 요약을 써 주세요.",
        "en": "🧵 The KULLM bot isn't a member here, so it can't read the thread. Use Summarize on a message instead.",
    },
    "task_in_thread": {"ko": "📝 {thread}에 답을 올려요.", "en": "📝 The answer goes into {thread}."},
    "file_too_large": {
        "ko": "❌ 파일 {name}이(가) 너무 커요 ({size}). {limit} 이하인 파일만 읽을 수 있어요. "
        "줄이거나 나눠서 올려 주세요.",
        "en": "❌ The file {name} is too large ({size}). Files up to {limit} can be read: "
        "please shorten it or split it.",
    },
    "file_not_text": {
        "ko": "❌ 파일 {name}은(는) 텍스트 파일이 아니에요. "
        ".txt .md .csv .json .py 같은 텍스트나 PDF만 읽을 수 있어요.",
        "en": "❌ The file {name} is not a text file. Text (.txt .md .csv .json .py …) and PDF files can be read.",
    },
    "file_not_decodable": {
        "ko": "❌ 파일 {name}을(를) 읽을 수 없어요 (UTF-8, CP949/EUC-KR 텍스트나 PDF가 아니에요).",
        "en": "❌ Cannot read the file {name} (not UTF-8 or CP949/EUC-KR text, nor a readable PDF).",
    },
    "file_no_text": {
        "ko": "❌ PDF {name}에서 글자를 찾지 못했어요 (스캔한 이미지인가요?).",
        "en": "❌ No text found in the PDF {name} (is it a scanned image?).",
    },
    "file_too_complex": {
        "ko": "❌ PDF {name}은(는) 너무 복잡해서 읽지 못했어요. 텍스트로 옮기거나 나눠서 올려 주세요.",
        "en": "❌ The PDF {name} is too complex to read. Please paste its text, or split it.",
    },
    # ---------------------------------------------------------------- personas
    "persona_shown": {
        "ko": "🎭 이 채널의 페르소나 (<@{by}> 님이 {at}에 설정):\n{persona}",
        "en": "🎭 This channel's persona (set by <@{by}> on {at}):\n{persona}",
    },
    "persona_none": {
        "ko": "🎭 이 채널에는 페르소나가 없어요. 관리자가 `{command}`으로 정할 수 있어요.",
        "en": "🎭 This channel has no persona. An admin can set one with `{command}`.",
    },
    "persona_set": {
        "ko": "✅ 이 채널의 페르소나를 정했어요. 다음 질문부터 적용돼요:\n{persona}",
        "en": "✅ This channel's persona is set. It applies from the next question:\n{persona}",
    },
    "persona_cleared": {"ko": "🗑️ 이 채널의 페르소나를 지웠어요.", "en": "🗑️ This channel's persona is cleared."},
    "persona_admins_only": {
        "ko": "🔒 페르소나는 관리자만 바꿀 수 있어요 ({who}).",
        "en": "🔒 Only admins can change the persona ({who}).",
    },
    "discord_admins": {"ko": "서버 관리 권한이 있는 멤버", "en": "members with Manage Server"},
    "slack_admins": {
        "ko": "워크스페이스 관리자와 운영자가 지정한 사람",
        "en": "workspace admins and the people the operators named",
    },
    "persona_too_long": {
        "ko": "❌ 페르소나가 너무 길어요 ({length:,}자). {limit:,}자 이하로 줄여 주세요.",
        "en": "❌ The persona is too long ({length:,} characters). Please keep it under {limit:,}.",
    },
    "persona_usage": {
        "ko": "⚙️ 사용법: `{show}` (보기), `{set}`, `{clear}`",
        "en": "⚙️ Usage: `{show}` (show), `{set}`, `{clear}`",
    },
    # ---------------------------------------------------------------- how to ask, quotes, forms
    "usage_discord": {
        "ko": "👋 KULLM(구름)에게 물어보세요: `@{name} 딥러닝이 뭐야?` 또는 `/kullm 질문:딥러닝이 뭐야?`\n"
        "메시지에 답장하며 멘션하면 그 메시지를 맥락으로 써요. 스레드 안에서는 멘션 없이 대화를 이어갈 수 있어요.",
        "en": "👋 Ask KULLM: `@{name} What is deep learning?` or `/kullm question:What is deep learning?`\n"
        "Mention me in a reply to use that message as context. Inside my threads, just keep talking.",
    },
    "usage_slack": {
        "ko": "👋 KULLM(구름)에게 물어보세요: `/kullm 딥러닝이 뭐야?` 또는 `@KULLM 딥러닝이 뭐야?`\n"
        "메시지의 ⋮ 메뉴 → *KULLM에게 묻기* 로 그 메시지에 대해 물을 수 있어요. "
        "답변 스레드에서 다시 멘션하면 대화가 이어져요.",
        "en": "👋 Ask KULLM: `/kullm What is deep learning?` or `@KULLM What is deep learning?`\n"
        "Use ⋮ → *Ask KULLM* on a message to ask about it. Mention me again in an answer thread to continue.",
    },
    "invite_slack": {
        "ko": "🔒 KULLM이 이 채널에 없어요. 채널에서 `/invite @KULLM` 으로 초대한 뒤 다시 물어봐 주세요.",
        "en": "🔒 KULLM is not in this channel. Invite it with `/invite @KULLM`, then ask again.",
    },
    "asked_by": {"ko": "**{user}** 님의 질문: {question}", "en": "**{user}** asked: {question}"},
    "asked_by_slack": {"ko": "*{user}* 님의 질문: {question}", "en": "*{user}* asked: {question}"},
    "requested_by": {"ko": "**{user}** 님이 {task}{particle} 요청했어요", "en": "**{user}** requested: {task}"},
    "requested_by_slack": {"ko": "*{user}* 님이 {task}{particle} 요청했어요", "en": "*{user}* requested: {task}"},
    "modal_title": {"ko": "KULLM에게 묻기", "en": "Ask KULLM"},
    "modal_label": {"ko": "질문", "en": "Question"},
    "modal_placeholder": {
        "ko": "이 메시지에 대해 무엇이 궁금한가요? 예: 세 줄로 요약해 줘",
        "en": "What would you like to know about this message? e.g. Summarise it in three lines",
    },
    "modal_quote": {"ko": "고른 메시지", "en": "The chosen message"},
    "modal_submit": {"ko": "묻기", "en": "Ask"},
    "pane_prompts_title": {"ko": "무엇을 도와드릴까요?", "en": "What can I help with?"},
    # ---------------------------------------------------------------- feedback
    "vote_up_button": {"ko": "좋아요", "en": "Helpful"},
    "vote_down_button": {"ko": "아쉬워요", "en": "Not helpful"},
    "vote_up_label": {"ko": "이 답변이 도움이 됐어요", "en": "This answer was helpful"},
    "vote_down_label": {"ko": "이 답변이 아쉬워요", "en": "This answer was not helpful"},
    "vote_up": {"ko": "👍 평가를 저장했어요. 고마워요!", "en": "👍 Thanks, your rating is saved."},
    "vote_down": {
        "ko": "👎 평가를 저장했어요. 무엇이 아쉬웠는지 스레드에 남겨 주시면 운영에 도움이 돼요.",
        "en": "👎 Your rating is saved. Saying in the thread what was wrong helps the people running this bot.",
    },
    "vote_rate_limited": {
        "ko": "평가 버튼은 1분에 {limit}번까지 누를 수 있어요. 잠시 후 다시 눌러 주세요.",
        "en": "Rating buttons take {limit} clicks a minute. Please try again shortly.",
    },
    "vote_expired": {
        "ko": "이 답변은 더 이상 평가할 수 없어요 (보관 기간이 지났어요).",
        "en": "This answer can no longer be rated (its keeping period is over).",
    },
    # ---------------------------------------------------------------- commands as the platforms show them
    "cmd_kullm_description": {"ko": "KULLM(구름)에게 질문하기", "en": "Ask KULLM a question"},
    "cmd_question": {"ko": "질문", "en": "question"},
    "cmd_question_description": {"ko": "물어볼 내용", "en": "What to ask"},
    "cmd_context": {"ko": "맥락", "en": "context"},
    "cmd_context_description": {"ko": "답변에 참고할 글 (선택)", "en": "Text the answer should use (optional)"},
    "cmd_settings": {"ko": "kullm-설정", "en": "kullm-settings"},
    "cmd_settings_description": {"ko": "KULLM(구름) 설정 (관리자)", "en": "KULLM settings (admins)"},
    "cmd_persona": {"ko": "페르소나", "en": "persona"},
    "cmd_persona_description": {
        "ko": "이 채널의 페르소나 (답변 지시문)",
        "en": "This channel's persona (instructions)",
    },
    "cmd_show": {"ko": "보기", "en": "show"},
    "cmd_show_description": {"ko": "지금 페르소나 보기", "en": "Show the persona"},
    "cmd_set": {"ko": "정하기", "en": "set"},
    "cmd_set_description": {"ko": "페르소나 정하기 (다음 질문부터)", "en": "Set the persona (from the next question)"},
    "cmd_instructions": {"ko": "지시문", "en": "instructions"},
    "cmd_instructions_description": {
        "ko": "예: 항상 존댓말로, 세 문장 이내로 답해 주세요.",
        "en": "For example: answer politely, in three sentences at most.",
    },
    "cmd_clear": {"ko": "지우기", "en": "clear"},
    "cmd_clear_description": {"ko": "페르소나 지우기", "en": "Clear the persona"},
    "app_description": {
        "ko": "구름(KULLM) — 고려대학교 한국어 LLM이 답하는 챗봇",
        "en": "KULLM — a chatbot answered by Korea University's Korean LLM",
    },
    "pane_description": {
        "ko": "구름(KULLM)에게 무엇이든 한국어로 물어보세요. 대화가 이어지는 동안 앞의 질문과 답을 기억해요.",
        "en": "Ask KULLM anything. It remembers the earlier questions and answers of a conversation.",
    },
    "cmd_kullm_usage": {"ko": "딥러닝이 뭐야?", "en": "What is deep learning?"},
    "cmd_settings_slack_description": {
        "ko": "채널 페르소나와 지식 설정 (관리자)",
        "en": "The channel's persona and knowledge (admins)",
    },
    "cmd_settings_usage": {"ko": "persona set 항상 존댓말로 답해 주세요.", "en": "persona set Answer politely."},
    "shortcut_ask_description": {"ko": "이 메시지를 맥락으로 KULLM에게 묻기", "en": "Ask KULLM about this message"},
    "shortcut_summarize_description": {
        "ko": "이 메시지의 스레드를 KULLM이 요약",
        "en": "KULLM summarises this message's thread",
    },
    "shortcut_translate_description": {
        "ko": "이 메시지를 한국어↔영어로 번역",
        "en": "Translate this message between Korean and English",
    },
    "shortcut_proofread_description": {
        "ko": "이 메시지의 맞춤법과 띄어쓰기를 교정",
        "en": "Proofread this message's spelling and spacing",
    },
    # ---------------------------------------------------------------- the terminal (`kullm ask`, `kullm prompt`)
    # Read by whoever runs the service: these may name commands and settings.
    "timeout_terminal": {
        "ko": "⌛ 답변이 오지 않아요. 작업자(worker)가 실행 중인지 확인해 주세요.",
        "en": "⌛ No answer is arriving. Check that a worker is running.",
    },
    "redis_refuses": {
        "ko": "🔌 대기열(Redis)이 쓰기를 거부해요 ({reason}). 잠시 후 다시 물어봐 주세요.",
        "en": "🔌 The queue (Redis) refuses writes ({reason}). Please try again shortly.",
    },
    "no_worker": {
        "ko": "⚠️ 이 대기열을 처리하는 작업자(worker)가 없어서 질문을 거뒀어요. `kullm up`이나 `kullm worker`를 "
        "같은 Redis로 실행해 주세요. 쓰고 있는 Redis: {redis}",
        "en": "⚠️ No worker is serving this queue, so the question was withdrawn. Start `kullm up` or "
        "`kullm worker` on the same Redis. Redis in use: {redis}",
    },
    "worker_loading": {
        "ko": "⏳ 작업자가 모델을 불러오는 중이에요. 다 불러오면 답해요…",
        "en": "⏳ A worker is loading its model; it answers once loaded…",
    },
    "workers_silent": {
        "ko": "⏳ 작업자가 응답하지 않아요 (멈췄거나 다시 시작하는 중). 돌아오면 답해요…",
        "en": "⏳ The workers are not responding (frozen or restarting); they answer once back…",
    },
    "withdrawn": {"ko": "⏹️ 질문을 취소했어요.", "en": "⏹️ Question withdrawn."},
    "left": {
        "ko": "⏹️ 멈추라고 요청하고 나왔어요. 답변은 작업자가 멈춰요.",
        "en": "⏹️ Asked the worker to stop and left without waiting.",
    },
    "redis_in_use": {"ko": "🔗 Redis: {redis}", "en": "🔗 Redis: {redis}"},
    "redis_auth": {
        "ko": "🔐 Redis가 비밀번호를 받아들이지 않아요 ({url}). REDIS_PASSWORD나 REDIS_URL을 확인해 주세요.",
        "en": "🔐 Redis refuses the password ({url}). Check REDIS_PASSWORD or REDIS_URL.",
    },
    "redis_down": {
        "ko": "🔌 Redis에 연결할 수 없어요 ({url}). REDIS_URL을 확인해 주세요.",
        "en": "🔌 Cannot reach Redis ({url}). Check REDIS_URL.",
    },
    "redis_down_kullm_up": {
        "ko": "🔌 이 디렉터리의 `kullm up`이 쓰는 Redis({url})에 연결할 수 없어요. `kullm up`이 실행 중인지 "
        "확인하거나 REDIS_URL을 설정해 주세요.",
        "en": "🔌 Cannot reach the Redis that `kullm up` runs for this directory ({url}). Check that `kullm up` is "
        "running, or set REDIS_URL.",
    },
    "redis_stalled": {
        "ko": "🔌 Redis({url})가 응답하지 않아요 (연결은 되지만 멈춘 상태). 잠시 후 다시 시도해 주세요.",
        "en": "🔌 Redis ({url}) is not answering (it accepts connections but is stalled). Please try again shortly.",
    },
    "redis_lost": {
        "ko": "🔌 Redis 연결이 끊겼어요. 질문은 대기열에 남아 있으니 다시 연결하는 중이에요…",
        "en": "🔌 Lost the connection to Redis. The question stays queued; reconnecting…",
    },
    "context_file_unreadable": {
        "ko": "❌ 맥락 파일을 읽을 수 없어요 ({path}: {reason}).",
        "en": "❌ Cannot read the context file ({path}: {reason}).",
    },
    "prompt_bad_option": {
        "ko": "❌ {option}에는 PLATFORM:ID를 주세요 (예: discord:123, slack:C123:1700000000.000100).",
        "en": "❌ {option} takes PLATFORM:ID (for example discord:123 or slack:C123:1700000000.000100).",
    },
    "prompt_no_tokenizer": {
        "ko": "❌ 모델의 토크나이저를 불러올 수 없어요: {reason}",
        "en": "❌ Cannot load the model's tokenizer: {reason}",
    },
    "prompt_no_history": {
        "ko": "🔌 Redis에서 대화 기록이나 페르소나를 읽을 수 없어요 ({url}).",
        "en": "🔌 Cannot read the conversation or the persona from Redis ({url}).",
    },
    "settings_invalid": {"ko": "❌ 잘못된 설정", "en": "❌ invalid setting"},
}


# Slack sends a suggested prompt the moment it is clicked: each is a whole request, never one waiting for more text.
PANE_PROMPTS: dict[str, tuple[dict[str, str], ...]] = {
    "ko": (
        {"title": "쉽게 설명해 줘", "message": "딥러닝이 뭐야? 쉽게 설명해 줘."},
        {"title": "문장 다듬기", "message": "「답장이 늦어서 죄송하다는 말씀을 드립니다」를 자연스럽게 다듬어 줘."},
        {"title": "영어로 번역", "message": "「오늘 회의는 3시에 시작해요」를 영어로 번역해 줘."},
        {"title": "아이디어 얻기", "message": "팀 회의를 짧고 알차게 하는 방법 세 가지를 알려줘."},
    ),
    "en": (
        {"title": "Explain simply", "message": "What is deep learning? Explain it simply."},
        {"title": "Polish a sentence", "message": 'Make this sound natural: "Sorry for late reply, I was very busy."'},
        {"title": "Translate to Korean", "message": 'Translate into Korean: "The meeting starts at three."'},
        {"title": "Get ideas", "message": "Give me three ways to keep team meetings short and useful."},
    ),
}


# Shown only by the terminal commands, read by whoever runs the service: they may name commands and settings.
# Every other text reaches chat members, who can neither read logs nor change settings.
TERMINAL_ONLY = frozenset(
    {
        "timeout_terminal",
        "redis_refuses",
        "no_worker",
        "worker_loading",
        "workers_silent",
        "withdrawn",
        "left",
        "redis_in_use",
        "redis_auth",
        "redis_down",
        "redis_down_kullm_up",
        "redis_stalled",
        "redis_lost",
        "context_file_unreadable",
        "prompt_bad_option",
        "prompt_no_tokenizer",
        "prompt_no_history",
        "settings_invalid",
    }
)
# Error codes whose notice carries a reference an operator can look up in the logs: the cause is on their side.
REFERENCED = frozenset({"failed", "timeout", "unavailable", "given_up"})
