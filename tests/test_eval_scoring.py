"""How `kullm eval` reads a judge's reply, weights its scores and compares runs — the rules, without a judge: what a
hostile or sloppy judge writes (markdown, extra words, scores out of range, a missing line), the weighting over
merged tokens, bootstrap intervals, and `compare` telling a real difference from noise."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from kullm.eval.protocols import KULLM3_2024, KULLM_2023, read_reply
from kullm.eval.report import bootstrap, compare, wilson
from kullm.eval.scoring import Reply, Token, sampled_scores, weighted_scores
from kullm.eval.store import Judgment, append, judgments_in, mend

SIX = "이해 가능성: 1\n자연스러움: 3\n맥락 유지: 2\n흥미롭기: 1\n지시어 사용: 0\n전반적인 품질: 4"


def values(text: str) -> dict[str, int] | None:
    read = read_reply(KULLM_2023, text)
    return None if read is None else {key: score.value for key, score in read.items()}


def test_replies_are_read_line_by_line_whatever_decorates_them() -> None:
    assert values(SIX) == {
        "understandable": 1,
        "natural": 3,
        "context": 2,
        "interesting": 1,
        "instruction": 0,
        "overall": 4,
    }
    decorated = "평가 결과입니다.\n" + "\n".join(f"- **{line.replace(': ', '**: ')}" for line in SIX.splitlines())
    assert values(decorated) == values(decorated.replace("**", "")) == values(SIX)
    english = "1. Fluency: 5\n2. Coherence: 4\n3. Accuracy: 3\n4. Completeness: 2\n5. Overall Quality: 1"
    assert read_reply(KULLM3_2024, english) is not None


@pytest.mark.parametrize(
    "reply",
    [
        SIX.replace("전반적인 품질: 4", "전반적인 품질: 7"),  # past the scale
        SIX.replace("이해 가능성: 1", "이해 가능성: 2"),
        SIX.replace("맥락 유지: 2\n", ""),  # a criterion missing
        SIX.replace("자연스러움: 3", "자연스러움: 세 점"),  # not a number
        "",
        "I cannot judge this.",
        "이해 가능성: 1" * 10_000,  # long, and still only one criterion
    ],
)
def test_a_reply_that_cannot_be_read_gives_no_scores_never_zeros(reply: str) -> None:
    assert read_reply(KULLM_2023, reply) is None
    assert weighted_scores(KULLM_2023, Reply(reply, (Token(reply, -0.1),))) is None
    assert sampled_scores(KULLM_2023, [Reply(reply, None)]) is None


def tokens_of(text: str, alternatives: dict[str, list[tuple[str, float]]]) -> tuple[Token, ...]:
    """The reply in tokens the way a BPE merges them: a digit with the space before it (` 3`)."""
    pieces = []
    for line in text.splitlines():
        name, score = line.rsplit(" ", 1)
        pieces += [name, " " + score, "\n"]
    return tuple(Token(p, -0.2, tuple(alternatives.get(p.strip(), []))) for p in pieces[:-1])


def test_each_score_is_weighted_by_the_probabilities_of_the_values_the_judge_could_have_written() -> None:
    alternatives = {"4": [(" 4", -0.2), (" 5", -1.0), (" 3", -2.0), (" 없음", -0.5), ("5", -3.0)]}
    scores = weighted_scores(KULLM_2023, Reply(SIX, tokens_of(SIX, alternatives)))
    assert scores is not None
    p4, p5, p3 = math.exp(-0.2), math.exp(-1.0), math.exp(-2.0)  # "5" lacks the space the written " 4" has: not one
    assert scores["overall"] == pytest.approx((4 * p4 + 5 * p5 + 3 * p3) / (p4 + p5 + p3))
    assert scores["natural"] == 3.0, "no alternatives reported: the written score"
    # A judge reporting only values outside the scale at that position: the written score, not a zero.
    outside = weighted_scores(KULLM_2023, Reply(SIX, tokens_of(SIX, {"0": [(" 9", -0.1)]})))
    assert outside is not None and outside["instruction"] == 0.0


def test_samples_are_averaged_over_the_readable_ones() -> None:
    replies = [Reply(SIX, None), Reply("모르겠습니다", None), Reply(SIX.replace("품질: 4", "품질: 2"), None)]
    assert (sampled_scores(KULLM_2023, replies) or {})["overall"] == 3.0


def test_bootstrap_and_wilson_intervals_bracket_the_truth() -> None:
    rng = random.Random(1)
    values = [rng.gauss(2.0, 0.5) for _ in range(252)]
    found = bootstrap(values)
    assert found.low < 2.0 < found.high and found.high - found.low < 0.2
    assert bootstrap([]).n == 0 and math.isnan(bootstrap([]).mean)
    low, high = wilson(1, 1)
    assert 0.2 < low < 0.21 and high == 1.0


def run_folder(root: Path, name: str, overall: list[float], deployment: dict[str, str]) -> Path:
    folder = root / name / "kullm-2023-judge"
    folder.mkdir(parents=True)
    (root / name / "deployment.json").write_text(json.dumps(deployment))
    (folder / "run.json").write_text(json.dumps({"protocol": "kullm-2023", "judge_model": "j", "judge_url": "u"}))
    for i, score in enumerate(overall):
        scores = {c.key: float(c.low) for c in KULLM_2023.criteria} | {"overall": score}
        append(folder / "judgments.jsonl", Judgment(id=f"t{i}", raw=[""], scores=scores, method="logprobs"))
    return folder


def test_compare_tells_a_real_difference_from_noise(tmp_path: Path) -> None:
    rng = random.Random(2)
    base = [rng.uniform(1, 4) for _ in range(60)]
    first = run_folder(tmp_path, "fp16", base, {"quantization": "none"})
    better = run_folder(tmp_path, "int8", [s + 0.5 + rng.uniform(-0.3, 0.3) for s in base], {"quantization": "8bit"})
    table = compare(first, better)
    assert "quantization none → 8bit" in table
    overall = next(line for line in table.splitlines() if line.startswith("| 전반적인 품질"))
    assert "**better**" in overall and "+0.5" in overall
    assert table.count("within noise") == 5, "the criteria that did not move"


def test_a_torn_last_line_is_cut_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "judgments.jsonl"
    append(path, Judgment(id="a", raw=["x"], unscored="unreadable"))
    with path.open("a") as file:
        file.write('{"id": "b", "raw": ["half')
    assert list(judgments_in(tmp_path)) == ["a"]
    mend(path)
    append(path, Judgment(id="c", raw=["y"], unscored="unreadable"))
    assert list(judgments_in(tmp_path)) == ["a", "c"]
