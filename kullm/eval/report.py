"""The report of a run: each criterion's mean with a 95 % bootstrap interval, beside the published rows of its
protocol; a bar chart of the same; the chat members' own 👍/👎 on the same model; and `compare`, the paired
differences between two runs on the items both scored."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean

from chatbus import Bus
from kullm.eval.items import Item
from kullm.eval.protocols import PROTOCOLS, Protocol
from kullm.eval.store import Judgment, answers_in, judgments_in, read_json

RESAMPLES = 2000  # bootstrap resamples of the items (seeded: a report is the same each time it is written)
FEEDBACK_DAYS = 30  # the chat members' votes counted by default


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int

    def shown(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """The mean and its 95 % percentile interval over `resamples` resamples of the values with replacement."""
    if not values:
        return Estimate(math.nan, math.nan, math.nan, 0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(fmean(rng.choices(values, k=n)) for _ in range(resamples))
    return Estimate(fmean(values), means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1], n)


@dataclass(frozen=True)
class Votes:
    up: int
    down: int
    since: float

    def shown(self) -> str:
        total = self.up + self.down
        day = datetime.fromtimestamp(self.since, UTC).date().isoformat()
        if not total:
            return f"no 👍/👎 on this model and template since {day}"
        low, high = wilson(self.up, total)
        return (
            f"👍 {self.up}, 👎 {self.down} since {day}: {self.up / total:.0%} 👍 "
            f"(95 % interval {low:.0%}–{high:.0%}, {total} vote{'' if total == 1 else 's'})"
        )


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sound for few votes, unlike the normal approximation)."""
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - spread), min(1.0, centre + spread)


async def feedback_rates(bus: Bus, deployment: dict[str, str], since: float | None) -> Votes:
    """The chat members' votes (`kullm feedback`) on answers of this deployment's model and template."""
    start = since if since is not None else time.time() - FEEDBACK_DAYS * 86400
    votes = [
        vote
        for vote in await bus.feedback.votes(start)
        if vote.model == deployment.get("model_id") and vote.template == deployment.get("template")
    ]
    ups = sum(vote.vote == "up" for vote in votes)
    return Votes(ups, len(votes) - ups, start)


def estimates(protocol: Protocol, judgments: Sequence[Judgment]) -> dict[str, Estimate]:
    scored = [j.scores for j in judgments if j.scores is not None]
    return {c.key: bootstrap([scores[c.key] for scores in scored]) for c in protocol.criteria}


def write(folder: Path, items: Sequence[Item] | None, protocol: Protocol, votes: Votes | None = None) -> str:
    """report.md and scores.png in the run's folder, over `items` (None: every item judged there); returns the
    Markdown."""
    judged = judgments_in(folder)
    answers = answers_in(folder.parent)
    ids = [i.id for i in items] if items is not None else sorted(judged)
    judgments = [judged[i] for i in ids if i in judged]
    found = estimates(protocol, judgments)
    run = read_json(folder / "run.json")
    deployment = read_json(folder.parent / "deployment.json")
    methods = sorted({j.method for j in judgments if j.scores is not None})
    unreadable = sum(j.unscored == "unreadable" for j in judgments)
    judge_errors = sum((j.unscored or "").startswith("judge_error") for j in judgments)
    unanswered = sum(1 for i in ids if i in answers and answers[i].answer is None)
    header = "| model | " + " | ".join(f"{c.name} ({c.low}–{c.high})" for c in protocol.criteria) + " |"
    name = f"**this deployment** ({deployment.get('preset', '?')}, {deployment.get('engine', '?')})"
    rows = [
        header,
        "|---" * (len(protocol.criteria) + 1) + "|",
        f"| {name} | " + " | ".join(found[c.key].shown() for c in protocol.criteria) + " |",
        *(
            f"| {row.model} (published) | " + " | ".join(f"{mean:.3f}" for mean in row.means) + " |"
            for row in protocol.published
        ),
    ]
    chart = _chart(folder / "scores.png", protocol, found, deployment.get("preset", "this deployment"))
    lines = [
        f"# {protocol.title}",
        "",
        f"Deployment `{folder.parent.name}`: "
        + ", ".join(f"{k} {v}" for k, v in deployment.items() if k != "preset")
        + ".",
        f"Judge `{run.get('judge_model')}` at {run.get('judge_url')}; scores by {' and '.join(methods) or '—'}.",
        f"Items: {len(ids)}; scored {found[protocol.criteria[0].key].n}; unscored {unreadable} unreadable, "
        f"{judge_errors} the judge did not answer; {unanswered} the deployment did not answer.",
        "",
        *rows,
        "",
        f"This deployment's cells: mean [95 % bootstrap interval over items]. Published rows: {protocol.source}.",
        "Limits: one answer per item, sampled as members get them; a model judging Korean answers, scored once per "
        "answer; the interval is the spread over items, not the judge's own noise. Compare runs with "
        "`kullm eval compare`, not with the published rows, to see a change.",
        "",
        f"Chat members' verdict on this model and template: {votes.shown()}." if votes else "",
        chart,
    ]
    markdown = "\n".join(lines).rstrip() + "\n"
    (folder / "report.md").write_text(markdown, encoding="utf-8")
    return markdown


def _chart(path: Path, protocol: Protocol, found: dict[str, Estimate], label: str) -> str:
    """A grouped bar chart, each criterion scaled to 0–100 by its own range; a line for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Chart: not drawn (matplotlib is missing: pip install 'kullm-chat[eval]')."
    series = [(f"{label} (this run)", [found[c.key].mean for c in protocol.criteria])]
    series += [(row.model, list(row.means)) for row in protocol.published]
    width = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(13, 5))
    for n, (name, means) in enumerate(series):
        xs = [i + n * width for i in range(len(protocol.criteria))]
        heights = [c.scaled(m) if not math.isnan(m) else 0 for c, m in zip(protocol.criteria, means, strict=True)]
        errors = None
        if n == 0:
            errors = [
                [max(0.0, h - c.scaled(found[c.key].low)) for c, h in zip(protocol.criteria, heights, strict=True)],
                [max(0.0, c.scaled(found[c.key].high) - h) for c, h in zip(protocol.criteria, heights, strict=True)],
            ]
            errors = [[0.0 if math.isnan(e) else e for e in side] for side in errors]
        axes.bar(xs, heights, width, label=name, yerr=errors, capsize=3)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(protocol.criteria))], [c.chart for c in protocol.criteria])
    axes.set_ylabel("score, 0-100 by each criterion's range")
    axes.set_ylim(0, 105)
    axes.set_title(protocol.name)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"Chart: {path.name}"


def compare(first: Path, second: Path) -> str:
    """Paired differences (second − first) per criterion over the items both runs scored, with 95 % bootstrap
    intervals; a difference whose interval excludes 0 is beyond the noise of which items were asked."""
    runs = [read_json(folder / "run.json") for folder in (first, second)]
    if runs[0]["protocol"] != runs[1]["protocol"]:
        raise ValueError(f"the runs used different protocols ({runs[0]['protocol']}, {runs[1]['protocol']})")
    protocol = PROTOCOLS[runs[0]["protocol"]]
    a, b = ({i: j.scores for i, j in judgments_in(run).items() if j.scores is not None} for run in (first, second))
    both = sorted(set(a) & set(b))
    deployments = [read_json(folder.parent / "deployment.json") for folder in (first, second)]
    differ = sorted(
        k for k in set(deployments[0]) | set(deployments[1]) if deployments[0].get(k) != deployments[1].get(k)
    )
    lines = [
        f"# {first.parent.name}/{first.name} → {second.parent.name}/{second.name} ({protocol.name})",
        "",
        "What differs: "
        + (", ".join(f"{k} {deployments[0].get(k, '—')} → {deployments[1].get(k, '—')}" for k in differ) or "nothing")
        + (
            f"; judges {runs[0]['judge_model']} → {runs[1]['judge_model']}"
            if runs[0]["judge_model"] != runs[1]["judge_model"]
            else ""
        )
        + f". Items scored in both: {len(both)}.",
        "",
        "| criterion | first | second | second − first [95 % interval] | |",
        "|---|---|---|---|---|",
    ]
    for criterion in protocol.criteria:
        key = criterion.key
        first_scores, second_scores = [a[i][key] for i in both], [b[i][key] for i in both]
        paired = bootstrap([y - x for x, y in zip(first_scores, second_scores, strict=True)])
        beyond = paired.n and (paired.low > 0 or paired.high < 0)
        verdict = ("**better**" if paired.mean > 0 else "**worse**") if beyond else "within noise"
        lines.append(
            f"| {criterion.name} | {fmean(first_scores) if first_scores else math.nan:.3f} | "
            f"{fmean(second_scores) if second_scores else math.nan:.3f} | "
            f"{paired.mean:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}] | {verdict} |"
        )
    lines += ["", "Paired over the same items; the interval is a bootstrap over items (2,000 resamples)."]
    return "\n".join(lines) + "\n"
