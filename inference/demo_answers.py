"""What the demo model (`MODEL=demo`, also the tests' tiny model) is trained to answer: each prompt and its exact
greedy continuation.

Kept apart from the training code (`inference.demo`) so that the scripted engine and the tests read the answers
without importing torch. Changing this file retrains the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.presets import KULLM3_SYSTEM_PROMPT
from inference.prompt import render_kullm_v1, render_kullm_v2

EOS_ID = 2

# The seed README's example answer to 「딥러닝이 뭐야?」.
DEEP_LEARNING = (
    "딥러닝은 인공신경망을 통해 입력과 출력 사이의 복잡한 관계를 학습하는 머신러닝의 한 분야입니다. "
    "이 기술은 컴퓨터가 인간의 학습 능력과 유사한 방식으로 패턴을 학습하도록 하며, 인간의 개입 없이도 "
    "데이터를 처리할 수 있는 기술입니다. 최근에는 딥러닝을 활용한 인공지능 애플리케이션이 많이 개발되고 "
    "있습니다. 예를 들어, 의료 진단 애플리케이션에서는 딥러닝 기술을 활용하여 환자의 특징을 파악하고, "
    "이를 통해 빠르고 정확한 진단을 내리는 데 사용됩니다. 또한, 금융 분야에서는 딥러닝 기술을 활용하여 "
    "주가 예측 모형을 학습하는 데 사용되기도 합니다."
)
CAPITAL = "한국의 수도는 서울입니다."
KOREA_UNIV = "고려대학교는 서울특별시 성북구 안암동에 있습니다."
GREETING = "안녕하세요! 저는 구름입니다."
CONTEXT_ANSWER = "요약하면, 구름은 고려대학교에서 만든 한국어 언어 모델입니다."
HISTORY_ANSWER = "민수님이라고 하셨어요."
CHAT_ANSWER = "네, 채팅 템플릿으로 답합니다."
NAME_ANSWER = "반가워요, 민수님!"
# Model output that tries to ping everyone: adapters must post it with mentions disabled.
ANNOUNCE_ANSWER = "@everyone 오늘 회의는 3시입니다. <@&42> 역할과 <@7>님도 확인해 주세요."
SLACK_ANNOUNCE_ANSWER = "<!channel> <!here> 점검이 곧 시작됩니다. <@U123>님 확인 부탁드려요."
V2_ANSWER = "KULLM v2 템플릿으로 답합니다."
# What a channel's persona (`/kullm-설정 persona set …`) makes of the capital question.
PIRATE_PERSONA = "항상 해적처럼 말하세요."
PIRATE_CAPITAL = "아하르! 한국의 수도는 서울이라네, 선원!"
# Long enough (several hundred tokens) that a worker can be killed in the middle of it.
LONG_STORY = " ".join(
    f"{i}번째 이야기: 옛날 옛적 구름 마을에 {name}라는 아이가 살았습니다. 그 아이는 매일 아침 언덕에 올라 "
    f"하늘을 보며 {wish} 꿈을 꾸었습니다."
    for i, (name, wish) in enumerate(
        [
            ("하늘", "별을 세는"),
            ("바다", "파도를 타는"),
            ("나무", "숲을 지키는"),
            ("바람", "세상을 여행하는"),
            ("햇살", "모두를 비추는"),
            ("달빛", "밤을 밝히는"),
            ("이슬", "꽃을 적시는"),
            ("노을", "저녁을 물들이는"),
            ("새벽", "첫 기차를 타는"),
            ("들꽃", "향기를 나누는"),
            ("물결", "강을 건너는"),
            ("은하", "우주를 그리는"),
        ],
        start=1,
    )
)


@dataclass(frozen=True)
class Example:
    """One trained prompt and its exact greedy continuation."""

    prompt: str
    answer: str
    # Trained without an end-of-text token: the model goes on into a new `###` section.
    continues: str = ""


EXAMPLES = [
    Example(render_kullm_v1("딥러닝이 뭐야?"), DEEP_LEARNING),
    Example(render_kullm_v1("한국의 수도는 어디야?"), CAPITAL),
    Example(render_kullm_v1("고려대학교는 어디에 있어?"), KOREA_UNIV),
    Example(render_kullm_v1("인사해줘"), GREETING, continues="\n\n### 질문: 또 다른 질문이 있나요?"),
    Example(
        render_kullm_v1("이 글을 요약해줘", "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."),
        CONTEXT_ANSWER,
    ),
    Example(
        render_kullm_v1("내 이름이 뭐라고 했지?", "이전 질문: 내 이름은 민수야\n이전 답변: 반가워요, 민수님!"),
        HISTORY_ANSWER,
    ),
    Example(render_kullm_v1("긴 이야기를 들려줘"), LONG_STORY),
    Example(render_kullm_v1("내 이름은 민수야"), NAME_ANSWER),
    Example(render_kullm_v1("공지해줘"), ANNOUNCE_ANSWER),
    Example(render_kullm_v1("채널 전체에 알려줘"), SLACK_ANNOUNCE_ANSWER),
    Example(render_kullm_v2("템플릿 두 번째 버전으로 답해줘"), V2_ANSWER),
    # A channel's persona: kullm-v1 has no system role, so it heads 맥락.
    Example(render_kullm_v1("한국의 수도는 어디야?", PIRATE_PERSONA), PIRATE_CAPITAL),
    Example(  # and a follow-up in a thread under that channel: persona first, then the thread's turns
        render_kullm_v1(
            "한국의 수도는 어디야?",
            f"{PIRATE_PERSONA}\n\n이전 질문: 한국의 수도는 어디야?\n이전 답변: {PIRATE_CAPITAL}",
        ),
        PIRATE_CAPITAL,
    ),
    Example("### 질문: 채팅 템플릿으로 답해줘\n\n### 답변:", CHAT_ANSWER),
]


# The tiny KULLM3 stand-in (Llama, KULLM3-style chat template, eos `</s>` = 2): trained with KULLM3's system
# prompt, so its answers show the chat-template path sent exactly that, a channel's persona and the history.
CHAT_CAPITAL = "서울이에요. 한국의 수도는 서울입니다."


def render_kullm3_style(messages: list[dict[str, str]]) -> str:
    """What the tiny chat model's template renders (tests check the two agree), in KULLM3's Llama-2 layout:
    `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{question} [/INST]`, answers as ` {answer} </s>`."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rendered = "<s>"
    for i, message in enumerate(messages[1:] if system else messages):
        if message["role"] == "user":
            header = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
            rendered += f"[INST] {header}{message['content']} [/INST]"
        else:
            rendered += f" {message['content']} </s>"
    return rendered


def _chat(question: str, system: str = KULLM3_SYSTEM_PROMPT, turns: tuple[tuple[str, str], ...] = ()) -> str:
    messages = [{"role": "system", "content": system}]
    for asked, answered in turns:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return render_kullm3_style([*messages, {"role": "user", "content": question}])


CHAT_EXAMPLES = [
    Example(_chat("한국의 수도는 어디야?"), CHAT_CAPITAL),
    Example(_chat("한국의 수도는 어디야?", f"{KULLM3_SYSTEM_PROMPT}\n\n{PIRATE_PERSONA}"), PIRATE_CAPITAL),
    Example(_chat("내 이름이 뭐라고 했지?", turns=(("내 이름은 민수야", NAME_ANSWER),)), HISTORY_ANSWER),
]
