"""The demo's golden dataset: ``gating``, the support agent's regression gate.

Built from the seeded tickets (``examples.support.tickets``), so it always matches the
shop ``seed_shop`` makes:

1. one **step** example per ticket: the conversation a run starts with (the system prompt
   of the production release rendered for the ticket, then the ticket as the agent's first
   user message), with the run ``input`` set so an eval re-renders the system prompt of the
   release under test. The right first call is ``lookup_order`` on the ticket's order id
   (the first one it names, exact), or ``lookup_customer`` on the sender's address when it
   names none, as the agent is told to gather before it acts (spam and gibberish expect
   no call); a first step never moves money, so ``issue_refund`` and ``cancel_order`` are
   forbidden there;
2. a **task** example for a handful of tickets whose outcome is plain (status questions,
   a cancellation, a handoff): the calls a good run makes, in any order, how it ends and a
   short rubric for the judge.

``golden_dataset_ensure`` stores it once, marked gating; if the dataset exists it is left
as it is, whatever it holds (an operator may have curated it since).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction

from agents.registry import agent_get
from evals.datasets import dataset_create
from evals.models import Dataset, DatasetVersion
from examples.support.models import Ticket
from releases.prompts import prompt_render
from releases.services import release_production

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from agents.definition import Agent
    from releases.models import PromptVersion

AGENT = "support"
GOLDEN_DATASET = "gating"
DESCRIPTION = (
    "The demo's regression gate: the first call for every seeded ticket, and whole runs "
    "for a few plain ones. Made by seed_demo."
)
# The shop's order ids, as the agent (and the model simulator) find them in a ticket.
ORDER_ID_RE = re.compile(r"\bSO-\d{4}\b")
MONEY_MOVING = ("issue_refund", "cancel_order")
# Tickets that want no action at all: their first step has no right call, only wrong ones.
NO_ACTION_TAGS = frozenset({"spam", "gibberish"})
REPLIED = "- says the customer was replied to"


@dataclass(frozen=True)
class TaskSpec:
    """A task example's expectations: ``calls`` are (tool, {argument: exact value}).

    The rubric grades the run's final answer, the operator's summary of what was done.
    """

    calls: tuple[tuple[str, dict[str, str]], ...]
    end_state: str
    rubric: str
    forbidden: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {
    "T-0001": TaskSpec(
        (("lookup_order", {"order_id": "SO-1001"}), ("send_reply", {"ticket_id": "T-0001"})),
        "succeeded",
        REPLIED,
        MONEY_MOVING,
    ),
    "T-0008": TaskSpec(
        (("lookup_order", {"order_id": "SO-1008"}), ("send_reply", {"ticket_id": "T-0008"})),
        "succeeded",
        REPLIED,
        MONEY_MOVING,
    ),
    "T-0036": TaskSpec(
        (("lookup_order", {"order_id": "SO-1036"}), ("send_reply", {"ticket_id": "T-0036"})),
        "succeeded",
        REPLIED,
        MONEY_MOVING,
    ),
    "T-0004": TaskSpec(
        (
            ("lookup_order", {"order_id": "SO-1004"}),
            ("cancel_order", {"order_id": "SO-1004"}),
            ("send_reply", {"ticket_id": "T-0004"}),
        ),
        "succeeded",
        f"- says order SO-1004 was cancelled\n{REPLIED}",
        ("issue_refund",),
    ),
    "T-0024": TaskSpec(
        (
            ("lookup_order", {"order_id": "SO-1024"}),
            ("handoff_to_human", {"ticket_id": "T-0024"}),
        ),
        "succeeded",
        "- says the ticket was handed off to a human",
        MONEY_MOVING,
    ),
}


def ticket_input(ticket: Ticket) -> dict[str, Any]:
    """The run input for a seeded ticket (the support agent's input schema)."""
    return {
        "ticket_id": ticket.ticket_id,
        "customer_email": ticket.customer_email,
        "subject": ticket.subject,
        "body": ticket.body,
    }


def first_call(ticket: Ticket) -> tuple[str, dict[str, str]] | None:
    """The right first call for a ticket: its (first) order looked up, else its sender.

    None for spam and gibberish, where any call but a harmless one is wrong.
    """
    if NO_ACTION_TAGS & set(ticket.tags):
        return None
    found = ORDER_ID_RE.findall(f"{ticket.subject}\n{ticket.body}")
    if found:
        return "lookup_order", {"order_id": found[0]}
    return "lookup_customer", {"email": ticket.customer_email}


def _expected(calls: tuple[tuple[str, dict[str, str]], ...]) -> list[dict[str, Any]]:
    return [
        {"tool": tool, "arguments": {name: {"value": value} for name, value in arguments.items()}}
        for tool, arguments in calls
    ]


def step_example(ticket: Ticket, *, agent: Agent, prompt: PromptVersion) -> dict[str, Any]:
    """A ticket's first decision: the conversation a run starts with, and the call to make."""
    run_input = ticket_input(ticket)
    validated = agent.input_schema.model_validate(run_input)
    call = first_call(ticket)
    return {
        "kind": "step",
        "id": f"{ticket.ticket_id.lower()}-first-call",
        "tags": ["first-call", *ticket.tags],
        "note": f"{ticket.ticket_id}: {ticket.subject}"[:500],
        "messages": [
            {
                "role": "system",
                "content": prompt_render(agent=agent, version=prompt, validated_input=validated),
            },
            {"role": "user", "content": agent.render_input(validated)},
        ],
        "input": run_input,
        "expected_calls": _expected((call,)) if call else [],
        # A lookup reads: the policy lets it run, nobody reviews it.
        "expected_policy": {"outcome": "execute"} if call else None,
        "forbidden_tools": list(MONEY_MOVING),
        "reason": "Gather before acting: nothing is refunded or cancelled on the first step.",
    }


def task_example(ticket: Ticket, spec: TaskSpec) -> dict[str, Any]:
    """A whole run of a ticket whose outcome is plain."""
    return {
        "kind": "task",
        "id": f"{ticket.ticket_id.lower()}-run",
        "tags": ["run", *ticket.tags],
        "note": f"{ticket.ticket_id}: {ticket.subject}"[:500],
        "input": ticket_input(ticket),
        "expected_calls": _expected(spec.calls),
        "forbidden_tools": list(spec.forbidden),
        "end_state": {"state": spec.end_state},
        "rubric": spec.rubric,
    }


def golden_examples(*, agent: Agent, prompt: PromptVersion) -> list[dict[str, Any]]:
    """Every example of the golden dataset, from the seeded tickets (step, then task)."""
    tickets = list(Ticket.objects.order_by("ticket_id"))
    steps = [step_example(ticket, agent=agent, prompt=prompt) for ticket in tickets]
    tasks = [task_example(t, TASKS[t.ticket_id]) for t in tickets if t.ticket_id in TASKS]
    return steps + tasks


def golden_dataset_ensure(*, user: User | None = None) -> DatasetVersion | None:
    """Store the golden dataset, marked gating, unless the agent has one by that name.

    Returns the version made, or None when the dataset existed (it is left untouched).
    It is not made the gate when the agent has another gating dataset already.
    The tickets must be seeded first (``seed_shop``).
    """
    if Dataset.objects.filter(agent_name=AGENT, name=GOLDEN_DATASET).exists():
        return None
    agent = agent_get(AGENT)
    prompt = release_production(agent_name=AGENT).prompt_version
    with transaction.atomic():
        version = dataset_create(
            agent_name=AGENT,
            name=GOLDEN_DATASET,
            user=user,
            description=DESCRIPTION,
            examples=golden_examples(agent=agent, prompt=prompt),
            note="Seeded from the demo tickets.",
        )
        # An agent has at most one gating dataset: one an operator chose stays the gate.
        if not Dataset.objects.filter(agent_name=AGENT, gating=True).exists():
            Dataset.objects.filter(pk=version.dataset_id).update(gating=True)
    return version
