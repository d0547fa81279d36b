"""The simulator as an LLM judge: a deterministic rubric score for an agent's final answer.

The contract, as an eval runner sends it:

1. A judge request is a chat completion request with no ``tools`` whose last user message
   starts with ``"RUBRIC:"`` and contains ``"\\n\\nANSWER:\\n"``, that is
   ``"RUBRIC:\\n<rubric text>\\n\\nANSWER:\\n<the agent's final answer>"``. The system
   message (the versioned judge prompt) is not read. The rubric ends at the first
   ``"\\n\\nANSWER:\\n"``; everything after it is the answer. Any other request, and any
   request with tools, gets the support agent as before.
2. The reply's assistant ``content`` is a JSON object string
   ``{"score": <0..1, 2 decimals>, "verdict": "pass" | "fail", "reason": "<one sentence>"}``;
   ``verdict`` is ``"pass"`` when the reported score is >= 0.5. Usage is counted as for any
   other reply (``ceil(characters / 4)``).
3. The rubric's criteria are its non-empty lines with leading bullets (``-``, ``*``, ``+``,
   ``•``, ``1.``, ``2)``, ``a)``, ``[ ]``) stripped. A criterion is met when at least half of
   its distinct content words occur in the answer. Content words are lower-cased runs of 4 or more
   letters minus a small stopword list, compared by their first 5 letters, so
   "refunded" matches "refund" and "refunds". A criterion without content words is met.
4. score = met / criteria; 1.0 when the rubric has no criteria and the answer is not blank;
   0.0 for a blank answer, whatever the rubric.
5. Noise: with probability ``noise_rate`` (the server's ``judge_noise_rate``, 0 by default) each
   criterion's verdict is flipped, drawn from ``random.Random(f"{seed}:judge:{rubric}\\0
   {answer}")``. With a rate of 0 the seed cannot change the score; with any rate the same
   seed, rubric and answer give the same judgement. Blank answers and empty rubrics are
   never flipped.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from runs.simulator.conversation import text_of

RUBRIC_PREFIX = "RUBRIC:"
ANSWER_SEPARATOR = "\n\nANSWER:\n"
PASS_SCORE = 0.5
STEM_LENGTH = 5
MIN_WORD_LENGTH = 4
# Function words and the verbs rubrics use to point at the answer ("the answer mentions
# ..."): neither says what the answer must contain.
STOPWORDS = frozenset(
    {
        "about", "also", "answer", "been", "does", "each", "from", "have", "into", "just",
        "mention", "mentions", "more", "most", "must", "only", "other", "response", "says",
        "should", "some", "state", "states", "such", "than", "that", "their", "them", "then",
        "there", "these", "they", "this", "those", "very", "what", "when", "where", "which",
        "while", "will", "with", "without", "would", "your",
    }
)  # fmt: skip
_WORD_RE = re.compile(r"[^\W\d_]+")
# One leading bullet: a dash/star/dot (space optional), or a number or single letter
# followed by "." or ")" and a space (so "e.g." and "3.5 kg" keep their text).
_BULLET_RE = re.compile(r"^(?:[-*+\u2022\u2013]+\s*|\(?(?:\d+|[a-zA-Z])[.)]\s+|\[[ xX]?\]\s*)")


@dataclass(frozen=True)
class Judgement:
    """A rubric judgement: the criteria in rubric order and whether each was met."""

    score: float
    verdict: str
    reason: str
    criteria: tuple[str, ...] = ()
    met: tuple[bool, ...] = ()

    def as_content(self) -> str:
        """The assistant message content: the JSON object of the contract."""
        payload = {"score": self.score, "verdict": self.verdict, "reason": self.reason}
        return json.dumps(payload, ensure_ascii=False)


def parse_judge_request(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(rubric, answer) when the last user message is a judge prompt, else None."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        return None
    text = text_of(users[-1].get("content"))
    if not text.startswith(RUBRIC_PREFIX) or ANSWER_SEPARATOR not in text:
        return None
    rubric, _, answer = text.removeprefix(RUBRIC_PREFIX).partition(ANSWER_SEPARATOR)
    return rubric.removeprefix("\n"), answer


def rubric_criteria(rubric: str) -> list[str]:
    """The rubric's non-empty lines, bullets stripped, in order."""
    found = []
    for line in rubric.splitlines():
        text = line.strip()
        while (stripped := _BULLET_RE.sub("", text, count=1).strip()) != text:
            text = stripped
        if text:
            found.append(text)
    return found


def content_stems(text: str) -> list[str]:
    """The first 5 letters of each content word, lower-cased, in order, repeats kept."""
    words = (w.lower() for w in _WORD_RE.findall(text))
    return [w[:STEM_LENGTH] for w in words if len(w) >= MIN_WORD_LENGTH and w not in STOPWORDS]


def criterion_met(criterion: str, answer: str) -> bool:
    """Whether at least half of the criterion's distinct content words occur in the answer."""
    wanted = set(content_stems(criterion))
    present = {w.lower()[:STEM_LENGTH] for w in _WORD_RE.findall(answer)}
    return 2 * len(wanted & present) >= len(wanted)


def judge(rubric: str, answer: str, *, seed: int = 0, noise_rate: float = 0.0) -> Judgement:
    """Score ``answer`` against ``rubric``; a pure function of its arguments."""
    criteria = tuple(rubric_criteria(rubric))
    if not answer.strip():
        reason = "The answer is empty, so no criterion is met."
        return Judgement(0.0, "fail", reason, criteria, (False,) * len(criteria))
    if not criteria:
        return Judgement(1.0, "pass", "The rubric lists no criteria and the answer is not empty.")
    met = [criterion_met(c, answer) for c in criteria]
    if noise_rate > 0:
        rng = random.Random(f"{seed}:judge:{rubric}\0{answer}")
        met = [m != (rng.random() < noise_rate) for m in met]
    score = round(sum(met) / len(criteria), 2)
    verdict = "pass" if score >= PASS_SCORE else "fail"
    return Judgement(score, verdict, _reason(criteria, met), criteria, tuple(met))


def _reason(criteria: tuple[str, ...], met: list[bool]) -> str:
    """'Met 1 of 2 criteria: met "a"; missed "b".' (criteria quoted, end punctuation cut)."""

    def quoted(wanted: bool) -> str:
        chosen = [c for c, m in zip(criteria, met, strict=True) if m is wanted]
        return ", ".join(f'"{c.rstrip(".;:!")}"' for c in chosen)

    groups = []
    if any(met):
        groups.append(f"met {quoted(True)}")
    if not all(met):
        groups.append(f"missed {quoted(False)}")
    return f"Met {sum(met)} of {len(criteria)} criteria: {'; '.join(groups)}."
