"""The catalogue's texts of workspace knowledge (`/kullm-설정 지식`, "찾아줘: …"), Korean and English side by side as in
`bot.texts.catalogue`; `bot.texts` merges them into its TEXTS (kept apart only so that module stays at its length)."""

from __future__ import annotations

from typing import Literal

KNOWLEDGE_TEXTS: dict[str, dict[Literal["ko", "en"], str]] = {
    "knowledge_on": {
        "ko": "📚 이 채널의 지식을 켰어요. 최근 {days}일의 기록을 읽고, 새 메시지·수정·삭제를 따라가요. "
        "`찾아줘: 질문`으로 물어보세요.",
        "en": "📚 Knowledge is on for this channel. Its last {days} days are being read, and new, edited and deleted "
        "messages are followed. Ask with `find: question`.",
    },
    "knowledge_off": {
        "ko": "📕 이 채널의 지식을 껐어요. 저장된 기록은 `잊기`나 보관 기간이 지나면 지워져요.",
        "en": "📕 Knowledge is off for this channel. What is stored goes with `forget`, or when it ages out.",
    },
    "knowledge_status": {
        "ko": "📚 지식: {state} · 저장된 메시지 {messages}개{span}",
        "en": "📚 Knowledge: {state} · {messages} messages stored{span}",
    },
    "knowledge_state_on": {"ko": "켜짐", "en": "on"},
    "knowledge_state_off": {"ko": "꺼짐", "en": "off"},
    "knowledge_span": {"ko": " ({oldest} ~ {newest})", "en": " ({oldest} to {newest})"},
    "knowledge_forgot": {
        "ko": "🗑️ 이 채널에서 저장한 메시지 {messages}개를 모두 지우고 지식을 껐어요.",
        "en": "🗑️ All {messages} messages stored from this channel are erased, and knowledge is off.",
    },
    "knowledge_admins_only": {
        "ko": "🔒 채널의 지식은 {who}만 켜고 끌 수 있어요.",
        "en": "🔒 Only {who} can turn a channel's knowledge on or off.",
    },
    "knowledge_nothing": {
        "ko": "🔎 읽을 수 있는 채널의 기록에서 이 질문과 관련된 메시지를 찾지 못했어요. 다른 말로 물어봐 주세요.",
        "en": "🔎 Nothing in the channels you can read matches this question. Try asking in other words.",
    },
    "knowledge_none_on": {
        "ko": "🔎 지식이 켜진 채널 중 읽을 수 있는 곳이 없어요. "
        "관리자가 채널에서 `/kullm-설정 지식 켜기`로 켤 수 있어요.",
        "en": "🔎 No channel you can read here has knowledge on. An admin can turn it on with "
        "`/kullm-settings knowledge on`.",
    },
    "knowledge_no_dm": {
        "ko": "🔒 지식은 채널에서만 켤 수 있어요. DM과 그룹 DM의 대화는 저장하지 않아요.",
        "en": "🔒 Knowledge is for channels only: DMs and group DMs are never stored.",
    },
    "knowledge_invite_first": {
        "ko": "📭 먼저 이 채널에 KULLM 봇을 초대해 주세요(`/invite @KULLM`). 봇이 있는 채널의 기록만 읽을 수 있어요.",
        "en": "📭 Invite the KULLM bot to this channel first (`/invite @KULLM`): it can read only channels it is in.",
    },
    "knowledge_needs_scopes": {
        "ko": "🔧 이 Slack 앱에는 지식에 필요한 권한(channels:read, groups:read, message.channels 이벤트)이 없어요. "
        "관리자가 slack/manifest.yml로 앱을 고치고 다시 설치해야 해요.",
        "en": "🔧 This Slack app lacks what knowledge needs (channels:read, groups:read, the message.channels event). "
        "An admin must update it from slack/manifest.en.yml and reinstall it.",
    },
    "knowledge_usage": {"ko": "📚 채널의 지식: `{knowledge}`", "en": "📚 The channel's knowledge: `{knowledge}`"},
    "knowledge_not_on_terminal": {
        "ko": "🔎 {channel}: 지식이 켜진 채널이 아니에요. `discord:<채널 ID>`나 `slack:<채널 ID>`로 지정해 주세요.",
        "en": "🔎 {channel}: not a channel with knowledge on. Name it as `discord:<channel id>` or "
        "`slack:<channel id>`.",
    },
    "knowledge_alone": {
        "ko": "--knowledge의 맥락은 채널의 기록이에요: --context, --context-file, --task와 함께 쓸 수 없어요.",
        "en": "--knowledge takes its context from the channel's history: it cannot go with --context, --context-file "
        "or --task.",
    },
    "knowledge_needs_extra": {
        "ko": "📚 지식 검색에는 한국어 형태소 분석기가 필요해요: pip install 'kullm-chat[knowledge]'",
        "en": "📚 Searching knowledge needs the Korean analyser: pip install 'kullm-chat[knowledge]'",
    },
    "cmd_search": {"ko": "찾기", "en": "search"},
    "cmd_search_description": {
        "ko": "지식이 켜진 채널의 기록에서 찾아 답하기",
        "en": "Answer from the history of channels with knowledge on",
    },
    "cmd_knowledge": {"ko": "지식", "en": "knowledge"},
    "cmd_knowledge_description": {
        "ko": "이 채널의 기록으로 답하기 (관리자)",
        "en": "Answer from this channel's history (admins)",
    },
    "cmd_on": {"ko": "켜기", "en": "on"},
    "cmd_on_description": {"ko": "이 채널의 기록을 읽고 따라가기", "en": "Read and follow this channel's history"},
    "cmd_off": {"ko": "끄기", "en": "off"},
    "cmd_off_description": {"ko": "더 읽지 않고 답에 쓰지 않기", "en": "Stop reading it and answering from it"},
    "cmd_status": {"ko": "상태", "en": "status"},
    "cmd_status_description": {"ko": "켜졌는지, 몇 개를 저장했는지", "en": "Whether it is on, and how much is stored"},
    "cmd_forget": {"ko": "잊기", "en": "forget"},
    "cmd_forget_description": {"ko": "저장한 기록을 모두 지우기", "en": "Erase everything stored from it"},
}
