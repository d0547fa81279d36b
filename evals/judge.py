"""The judge: a versioned prompt and model that grade a final answer against a rubric.

The judge is asked through the same model gateway as the agent (runs.gateway.client),
on its own route (the version's ``model`` at ``endpoint``), with no tools. The request
is the judge prompt as the system message and one user message::

    RUBRIC:
    <the example's rubric>

    ANSWER:
    <the run's final answer>

and the judge answers with a JSON object ``{"score": 0..1, "verdict": "pass"|"fail",
"reason": "..."}``. The model simulator grades such a request deterministically
(runs.simulator.judge). An answer that is not that object is an error of the example,
not a score: a judge that cannot be read must not pass anything.

Versions are numbered per agent like its prompts (releases.versioning); version 1 is
``DEFAULT_TEMPLATE`` on ``AGENTDESK_JUDGE_MODEL``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from agents.definition import ModelRoute
from audit.log import audit_record
from audit.models import AuditVerb
from evals.calls import ModelUsage, complete_on_routes
from evals.models import JudgePrompt
from releases.versioning import version_first, version_next_number

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DEFAULT_TEMPLATE = """\
You grade the final answer a customer-support agent gave, against a rubric.
Each line of the rubric is one criterion. Decide for each whether the answer meets it.
Reply with one JSON object and nothing else:
{"score": <the share of criteria met, from 0 to 1>, "verdict": "pass" or "fail", \
"reason": "<one sentence: which criteria were met and which were missed>"}
The verdict is "pass" when the score is at least 0.5."""


class JudgeUnreadable(ValueError):
    """The judge's reply is not the JSON object it was asked for."""


@dataclass(frozen=True)
class Grade:
    score: float
    verdict: str
    reason: str
    usage: ModelUsage

    def as_json(self) -> dict[str, Any]:
        return {"score": self.score, "verdict": self.verdict, "reason": self.reason}


def _hash(template: str, model: str, endpoint: str) -> str:
    return hashlib.sha256(json.dumps([template, model, endpoint]).encode()).hexdigest()


def _audit_created(version: JudgePrompt, user: User | None) -> None:
    audit_record(
        actor=user,
        verb=AuditVerb.JUDGE_PROMPT_CREATED,
        object_type="judge_prompt",
        object_id=version.agent_name,
        after={"number": version.number, "model": version.model, "note": version.note},
    )


def judge_first(*, agent_name: str) -> JudgePrompt:
    model = settings.AGENTDESK_JUDGE_MODEL

    def defaults() -> dict[str, Any]:
        return {
            "template": DEFAULT_TEMPLATE,
            "model": model,
            "endpoint": "default",
            "content_hash": _hash(DEFAULT_TEMPLATE, model, "default"),
            "note": "The code's judge.",
        }

    return version_first(
        JudgePrompt,
        agent_name=agent_name,
        defaults=defaults,
        created=lambda row: _audit_created(row, None),
    )


def judge_current(*, agent_name: str) -> JudgePrompt:
    """The judge new evals are graded by: the agent's latest version."""
    first = judge_first(agent_name=agent_name)
    latest = JudgePrompt.objects.filter(agent_name=agent_name).order_by("-number").first()
    return latest or first


def judge_save(
    *,
    agent_name: str,
    template: str,
    model: str,
    endpoint: str = "default",
    note: str = "",
    user: User | None,
) -> JudgePrompt:
    """A new judge version (refused when it is the current one unchanged)."""
    template = template.strip()
    if not template:
        raise ValueError("The judge prompt is empty.")
    if endpoint not in settings.AGENTDESK_LLM_ENDPOINTS:
        raise ValueError(f"There is no endpoint alias {endpoint!r}.")
    content_hash = _hash(template, model, endpoint)
    with transaction.atomic():
        first = judge_first(agent_name=agent_name)
        number = version_next_number(JudgePrompt, first=first)
        if judge_current(agent_name=agent_name).content_hash == content_hash:
            raise ValueError("That is the current judge already.")
        version = JudgePrompt.objects.create(
            agent_name=agent_name,
            number=number,
            template=template,
            model=model,
            endpoint=endpoint,
            content_hash=content_hash,
            note=note.strip()[:500],
            created_by=user,
        )
        _audit_created(version, user)
    return version


def judge_messages(judge: JudgePrompt, *, rubric: str, answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": judge.template},
        {"role": "user", "content": f"RUBRIC:\n{rubric.strip()}\n\nANSWER:\n{answer.strip()}"},
    ]


def judge_grade(judge: JudgePrompt, *, rubric: str, answer: str) -> Grade:
    """The judge's grade; ModelCallFailed or JudgeUnreadable when there is none."""
    reply, usage = complete_on_routes(
        (ModelRoute(judge.model, judge.endpoint),),
        judge_messages(judge, rubric=rubric, answer=answer),
        tools=[],
    )
    return Grade(*_read(reply.content), usage=usage)


def _read(content: str) -> tuple[float, str, str]:
    text = content.strip()
    if text.startswith("```"):  # a model that fences its JSON
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except ValueError:
        raise JudgeUnreadable(f"the judge did not answer JSON: {content[:200]!r}") from None
    score = data.get("score") if isinstance(data, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise JudgeUnreadable(f"the judge's score is not a number from 0 to 1: {content[:200]!r}")
    verdict = data.get("verdict")
    if verdict not in ("pass", "fail"):
        verdict = "pass" if score >= 0.5 else "fail"
    return float(score), str(verdict), str(data.get("reason") or "")[:1000]
