"""The two ways KULLM's answers were judged, as facts: each protocol's criteria and scales, the judge it used, its
published means (with their source), and the judge prompt — written for this project from the published criteria,
not copied from anyone's — and how a judge's reply is read back into scores."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kullm.eval.items import Item

SOURCE_2023 = (
    "KULLM README (nlpai-lab/KULLM, before the KULLM3 release), 'LLM Inference Results for Korean Evaluation Set'; "
    "method from its scripts/evaluation: G-Eval with USR's criteria, GPT-4 judge at temperature 0"
)
SOURCE_2024 = (
    "KULLM README after the KULLM3 release, 'Model Evaluation (Fully Reproducible)', values read off the labels of "
    "assets/kullm3_instruction_evaluation.png; judge GPT-4-Turbo (gpt-4-0125-preview)"
)


@dataclass(frozen=True)
class Criterion:
    """One scored aspect of an answer: the name the judge writes, its whole-number scale, and a label for charts."""

    key: str  # stable name in the JSONL files
    name: str  # as the judge is asked to write it
    low: int
    high: int
    chart: str  # the chart's label (its fonts may lack Hangul)

    @property
    def values(self) -> range:
        return range(self.low, self.high + 1)

    def scaled(self, score: float) -> float:
        """The score on 0–100 by this criterion's own range, so that the six scales fit one chart."""
        return 100 * (score - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class Published:
    """A published row: a model and its mean per criterion, in the protocol's order."""

    model: str
    means: tuple[float, ...]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    criteria: tuple[Criterion, ...]
    judge_model: str  # the judge the published figures used (the default --judge-model)
    instructions: str  # the judge's system message
    headings: tuple[str, str, str, str]  # instruction, input, response, "no input"
    published: tuple[Published, ...]
    source: str

    def messages(self, item: Item, answer: str) -> list[dict[str, str]]:
        """The judge's conversation for one answer: the rubric as the system message, the item and answer after."""
        instruction, given, response, nothing = self.headings
        shown = (
            f"{instruction}\n{item.instruction}\n\n{given}\n{item.input or nothing}\n\n{response}\n{answer or nothing}"
        )
        return [{"role": "system", "content": self.instructions}, {"role": "user", "content": shown}]


def _line(criterion: Criterion) -> re.Pattern[str]:
    """A reply line naming the criterion and its score: `자연스러움: 3`, also `- **Fluency**: 4`, `2. 흥미롭기 - 2`."""
    return re.compile(rf"^[\s>*#\-\d.)]*\**{re.escape(criterion.name)}\**\s*[:：=\-]\s*\**\s*(\d+)\b", re.MULTILINE)


@dataclass(frozen=True)
class ReadScore:
    """A criterion's score as written in a reply, and where its digits start in the text read."""

    value: int
    at: int


def read_reply(protocol: Protocol, text: str) -> dict[str, ReadScore] | None:
    """Every criterion's whole-number score from a judge's reply, each within its scale; None when any is missing
    or out of range (the reply is then asked again, and at last recorded as unscored)."""
    scores: dict[str, ReadScore] = {}
    for criterion in protocol.criteria:
        match = _line(criterion).search(text)
        if match is None or int(match.group(1)) not in criterion.values:
            return None
        scores[criterion.key] = ReadScore(int(match.group(1)), match.start(1))
    return scores


KULLM_2023 = Protocol(
    name="kullm-2023",
    title="KULLM (2023): G-Eval with USR's criteria, six scales",
    criteria=(
        Criterion("understandable", "이해 가능성", 0, 1, "Understandable"),
        Criterion("natural", "자연스러움", 1, 3, "Natural"),
        Criterion("context", "맥락 유지", 1, 3, "Keeps context"),
        Criterion("interesting", "흥미롭기", 1, 3, "Interesting"),
        Criterion("instruction", "지시어 사용", 0, 1, "Follows instruction"),
        Criterion("overall", "전반적인 품질", 1, 5, "Overall"),
    ),
    judge_model="gpt-4",
    instructions=(
        "당신은 한국어 AI 비서가 쓴 응답을 채점하는 공정한 평가자입니다. "
        "사용자가 준 지시와 입력, 그리고 그에 대한 AI의 응답을 읽고, "
        "아래 여섯 기준에 따라 응답만을 평가하세요. 모범 답안은 주어지지 않습니다.\n\n"
        "- 이해 가능성 (0 또는 1): 입력을 고려했을 때 응답의 뜻을 알아들을 수 있으면 1, 없으면 0.\n"
        "- 자연스러움 (1~3): 한국어 모국어 화자가 쓴 글처럼 자연스러운 정도. "
        "1 어색함, 2 대체로 자연스러움, 3 매우 자연스러움.\n"
        "- 맥락 유지 (1~3): 지시와 입력의 흐름과 내용을 이어 가는 정도. 1 벗어남, 2 일부 이어 감, 3 잘 이어 감.\n"
        "- 흥미롭기 (1~3): 밋밋하고 뻔한 대신 읽을 만한 내용이 있는 정도. 1 지루함, 2 보통, 3 흥미로움.\n"
        "- 지시어 사용 (0 또는 1): 지시가 요구한 일을 했으면 1, 하지 않았으면 0.\n"
        "- 전반적인 품질 (1~5): 위의 모든 면을 함께 본 응답의 품질. 1 매우 나쁨, 3 보통, 5 매우 좋음.\n\n"
        "설명은 쓰지 말고, 아래 형식 그대로 한 줄에 한 기준씩 정수 점수만 쓰세요.\n"
        "이해 가능성: <점수>\n자연스러움: <점수>\n맥락 유지: <점수>\n"
        "흥미롭기: <점수>\n지시어 사용: <점수>\n전반적인 품질: <점수>"
    ),
    headings=("[지시]", "[입력]", "[응답]", "(없음)"),
    published=(
        Published("GPT-3.5-turbo", (0.980, 2.806, 2.849, 2.056, 0.917, 3.905)),
        Published("GPT-4", (0.984, 2.897, 2.944, 2.143, 0.968, 4.083)),
        Published("KoAlpaca v1.1 (Polyglot-ko 12.8B)", (0.651, 1.909, 1.901, 1.583, 0.385, 2.575)),
        Published("koVicuna (LLaMA 7B)", (0.460, 1.583, 1.726, 1.528, 0.409, 2.440)),
        Published("KULLM v2 (Polyglot-ko 12.8B)", (0.742, 2.083, 2.107, 1.794, 0.548, 3.036)),
    ),
    source=SOURCE_2023,
)

KULLM3_2024 = Protocol(
    name="kullm3-2024",
    title="KULLM3 (2024): five criteria, each 1–5, English judge prompt",
    criteria=(
        Criterion("fluency", "Fluency", 1, 5, "Fluency"),
        Criterion("coherence", "Coherence", 1, 5, "Coherence"),
        Criterion("accuracy", "Accuracy", 1, 5, "Accuracy"),
        Criterion("completeness", "Completeness", 1, 5, "Completeness"),
        Criterion("overall", "Overall Quality", 1, 5, "Overall"),
    ),
    judge_model="gpt-4-0125-preview",
    instructions=(
        "You judge, impartially, responses written by a Korean-language AI assistant. Read the user's instruction, "
        "its input and the assistant's response, then score the response alone on each criterion below, with a "
        "whole number from 1 (very poor) to 5 (excellent). No reference answer is given.\n\n"
        "- Fluency: grammar, idiom and spelling of the response's Korean.\n"
        "- Coherence: how well it keeps to the context of the instruction and input; a response written in English "
        "to a Korean instruction is incoherent.\n"
        "- Accuracy: whether what it states is correct and it answers what was asked.\n"
        "- Completeness: whether it covers every part of the instruction.\n"
        "- Overall Quality: the response as a whole, all of the above together.\n\n"
        "Write no explanation: reply with the scores only, one per line, exactly in this form.\n"
        "Fluency: <score>\nCoherence: <score>\nAccuracy: <score>\nCompleteness: <score>\nOverall Quality: <score>"
    ),
    headings=("[Instruction]", "[Input]", "[Response]", "(none)"),
    published=(
        Published("GPT-4 Turbo", (4.97, 4.94, 4.74, 4.69, 4.80)),
        Published("GPT-3.5 Turbo", (4.93, 4.88, 4.33, 4.12, 4.43)),
        Published("KULLM3", (4.83, 4.78, 4.17, 4.23, 4.36)),
        Published("Solar-10.7-inst", (4.24, 3.04, 3.71, 3.77, 3.32)),
        Published("KULLM v2", (3.70, 3.25, 2.82, 2.48, 2.80)),
        Published("KoAlpaca-12.8", (3.90, 3.25, 2.60, 2.37, 2.67)),
    ),
    source=SOURCE_2024,
)

PROTOCOLS = {protocol.name: protocol for protocol in (KULLM_2023, KULLM3_2024)}
