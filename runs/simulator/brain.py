"""The simulated support agent: a deterministic policy that picks the next reply.

``decide`` is a pure function of the conversation, the tools offered, a seed and a mistake
rate. It plays the example shop's agent one step at a time:

1. stop when the ticket is settled (a reply or a handoff went through) or after
   ``MAX_ASSISTANT_TURNS`` turns;
2. adapt when the last call failed or a reviewer rejected it: follow an amount named in the
   feedback, otherwise answer the customer or hand off, and never repeat a call verbatim;
3. confirm a successful refund or cancellation to the customer, once;
4. gather: look the order up (or the customer, when the ticket has no order id);
5. act: refund, cancel, answer a status question or hand off; a refund is preceded by a
   policy search and never exceeds the order's refundable amount, whatever the ticket says.

Only tools present in the request are ever called. With probability ``mistake_rate`` the
act step makes a plausible mistake (full refund instead of the damaged item, refund against
policy, cancel instead of refund, wrong status) and marks the Decision with
``mistake=True``; confidence stays high for many mistakes, so calibration has work to do.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import runs.simulator.replies as replies
from runs.simulator.conversation import RESERVED, Facts, Outcome, money, read_history
from runs.simulator.ticket import Intent, Ticket, feedback_amount, parse_ticket, reference_date

MAX_ASSISTANT_TURNS = 12
# A stated amount over this multiple of the order total is absurd: a human should look.
ABSURD_FACTOR = Decimal(2)
_CONFIDENCE = {
    "read": (0.85, 0.99),
    "act": (0.7, 0.98),
    "handoff": (0.6, 0.9),
    "mistake": (0.6, 0.95),
}
_ASKS_FOR_REPLY = re.compile(
    r"\b(reply|tell|explain|inform|answer|respond|decline|let the customer know)", re.IGNORECASE
)
_WINDOW_RE = re.compile(r"(\d{1,3})\s*(?:-\s*)?(?:days?|tage[n]?|jours?|d[ií]as)\b", re.IGNORECASE)
_ACTIONS = ("issue_refund", "cancel_order")
_STOPWORDS = frozenset({"the", "and", "for", "with", "set", "pack", "of"})


@dataclass(frozen=True)
class ToolCall:
    """One function call the simulated model makes; ``arguments`` include the reserved ones."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """The simulated model's reply: tool calls, or a final answer in ``content``.

    ``mistake`` is the ground truth that tests (and only tests) read: the response on the
    wire carries no hint of it.
    """

    tool_calls: tuple[ToolCall, ...] = ()
    content: str | None = None
    mistake: bool = False
    reason: str = ""


def decide(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    rng_seed_material: str,
    mistake_rate: float,
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = False,
) -> Decision:
    """Pick the next reply for this conversation; same inputs, same Decision."""
    facts = read_history(messages)
    turn = _Turn(
        ticket=parse_ticket(facts.customer_text),
        facts=facts,
        schemas=tool_schemas(tools),
        rng=random.Random(rng_seed_material),
        mistake_rate=mistake_rate,
        parallel=parallel_tool_calls,
    )
    return _apply_tool_choice(turn, _next_step(turn), tool_choice)


FALSE_CLAIM = "Everything was refunded in full."


def with_false_claim(decision: Decision, seed_material: str, rate: float) -> Decision:
    """A final answer that lies about a refund, with probability ``rate`` (the knob).

    What a model that reports success it did not achieve sends; the runtime's answer
    verifiers must catch it. Drawn from the conversation, so the same request lies or not
    whatever the attempt.
    """
    if rate <= 0 or random.Random(f"{seed_material}:false-claim").random() >= rate:
        return decision
    content = f"{decision.content} {FALSE_CLAIM}".strip()
    return Decision((), content, True, f"{decision.reason}:false_claim")


def tool_schemas(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Function tools offered in the request, by name, with their JSON schemas."""
    schemas: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            schemas[function["name"]] = parameters if isinstance(parameters, dict) else {}
    return schemas


@dataclass
class _Turn:
    """Everything one decision needs, plus the helpers that build calls."""

    ticket: Ticket
    facts: Facts
    schemas: dict[str, dict[str, Any]]
    rng: random.Random
    mistake_rate: float
    parallel: bool = False

    @property
    def ticket_id(self) -> str:
        return self.ticket.ticket_id or "T-UNKNOWN"

    @property
    def order(self) -> dict[str, Any]:
        return self.facts.order or {}

    @property
    def order_id(self) -> str:
        return str(self.order.get("order_id") or self.ticket.order_id or "")

    @property
    def currency(self) -> str:
        return str(self.order.get("currency") or "EUR")

    def call(
        self,
        name: str,
        arguments: dict[str, Any],
        rationale: str,
        *,
        reason: str,
        kind: str = "act",
        mistake: bool = False,
        force: bool = False,
    ) -> Decision | None:
        """A call to ``name``, or None if the tool is not offered or was already tried."""
        if name not in self.schemas or (not force and self.facts.tried(name, arguments)):
            return None
        low, high = _CONFIDENCE["mistake" if mistake else kind]
        confidence = round(self.rng.uniform(low, high), 2)
        full = {**arguments, "rationale": rationale, "confidence": confidence}
        return Decision((ToolCall(name, full),), None, mistake, reason)

    def final(self, reason: str, summary: str | None = None) -> Decision:
        """A final answer for the operator, no tool call."""
        return Decision((), summary or _summary(self), False, reason)

    def mistake_or(
        self, correct: Decision | None, mistakes: list[Callable[[], Decision | None]]
    ) -> Decision | None:
        """``correct``, or with probability ``mistake_rate`` one of the plausible mistakes."""
        roll = self.rng.random()
        if correct is None or roll >= self.mistake_rate:
            return correct
        options = [d for d in (make() for make in mistakes) if d is not None]
        return self.rng.choice(options) if options else correct


def _first(*candidates: Decision | None) -> Decision | None:
    return next((c for c in candidates if c is not None), None)


def _next_step(turn: _Turn) -> Decision:
    for stage in (_stop_if_done, _adapt_to_failure, _confirm_action, _gather, _act):
        decision = stage(turn)
        if decision is not None:
            return decision
    return turn.final("final:no_tool")


# --- stages -----------------------------------------------------------------------------------


def _stop_if_done(turn: _Turn) -> Decision | None:
    facts = turn.facts
    if facts.assistant_turns >= MAX_ASSISTANT_TURNS:
        summary = f"{turn.ticket_id}: stopped after {facts.assistant_turns} turns without a "
        return turn.final("final:turn_cap", summary + "resolution; a human should take over.")
    settled = {"send_reply", "handoff_to_human"}
    if any(o.status == "ok" and o.name in settled for o in facts.recent()):
        return turn.final("final:done")
    return None


def _adapt_to_failure(turn: _Turn) -> Decision | None:
    last = turn.facts.last()
    if last is None or not last.failed or last.bad_arguments:
        return None  # argument errors are fixed by simply making the right call again
    if last.name in ("issue_refund", "cancel_order"):
        return _after_failed_action(turn, last)
    if last.name == "send_reply":
        summary = f"Sending the reply on {turn.ticket_id} failed ({last.feedback}); please reply."
        return _first(_handoff(turn, summary, "normal", "handoff:reply_failed"))
    if last.name == "handoff_to_human":
        summary = f"{turn.ticket_id}: the handoff failed ({last.feedback}); needs manual attention."
        return turn.final("final:handoff_failed", summary)
    return None  # failed lookups are handled where the order is needed


def _after_failed_action(turn: _Turn, last: Outcome) -> Decision | None:
    amount = feedback_amount(last.feedback)
    refundable = turn.facts.refundable()
    if last.name == "issue_refund" and amount and refundable and 0 < amount <= refundable:
        rationale = f"The reviewer asked for {replies.money_text(amount)}, so I refund that."
        why = "Adjusted as the reviewer asked"
        follow = _refund(turn, amount, why, rationale, "refund:feedback")
        if follow is not None:
            return follow
    verb = "was rejected" if last.status == "rejected" else "failed"
    if _ASKS_FOR_REPLY.search(last.feedback):
        body = replies.reviewer_decline(turn.ticket.language, turn.order_id)
        rationale = f"The {last.name} call {verb} and the reviewer asked me to answer instead."
        answer = _reply(turn, body, rationale, "reply:feedback")
        if answer is not None:
            return answer
    summary = f"{last.name} on {turn.order_id} {verb}: {last.feedback or 'no reason given'}."
    return _handoff(turn, summary, "normal", "handoff:action_failed")


def _confirm_action(turn: _Turn) -> Decision | None:
    done = [o for o in turn.facts.recent() if o.status == "ok" and o.name in _ACTIONS]
    if not done:
        return None
    acted = done[-1]
    language, order_id = turn.ticket.language, turn.order_id
    if acted.name == "issue_refund":
        amount = _outcome_amount(acted)
        body = replies.refund_confirmation(language, order_id, amount, turn.currency)
    else:
        body = replies.cancel_confirmation(language, order_id)
    rationale = f"The {acted.name} call succeeded, so I confirm it to the customer."
    return _first(_reply(turn, body, rationale, "reply:confirm"), turn.final("final:acted"))


def _gather(turn: _Turn) -> Decision | None:
    ticket, facts = turn.ticket, turn.facts
    calls: list[Decision | None] = []
    order_id = ticket.order_id or _order_from_customer(turn)
    if facts.order is None and order_id and _may_try(facts, "lookup_order"):
        calls.append(_lookup_order(turn, order_id))
    elif (
        facts.order is None
        and not ticket.order_id
        and ticket.email
        and ticket.intent is not Intent.OTHER
        and facts.customer is None
        and _may_try(facts, "lookup_customer")
    ):
        calls.append(_lookup_customer(turn, ticket.email))
    if turn.parallel and calls and _needs_policy(turn):
        calls.append(_search_policy(turn))
    made = [c for c in calls if c is not None]
    if len(made) <= 1:
        return _first(*made)
    merged = tuple(call for d in made for call in d.tool_calls)
    return Decision(merged, None, False, "parallel:" + "+".join(c.name for c in merged))


def _act(turn: _Turn) -> Decision | None:
    ticket, facts = turn.ticket, turn.facts
    if facts.order is None:
        return _without_order(turn)
    refund_all = [lambda: _refund_all(turn)] if ticket.intent is Intent.REFUND else []
    if ticket.injection:
        summary = (
            f"{turn.ticket_id} contains instructions aimed at the agent (possible prompt "
            f"injection) about order {turn.order_id}; a human should handle it."
        )
        return turn.mistake_or(_handoff(turn, summary, "urgent", "handoff:injection"), refund_all)
    if ticket.very_angry:
        summary = f"The customer on {turn.ticket_id} is very upset about {turn.order_id}."
        return turn.mistake_or(_handoff(turn, summary, "urgent", "handoff:angry"), refund_all)
    if _absurd(turn):
        summary = (
            f"The customer asks for {ticket.stated_amount} {turn.currency} on {turn.order_id}, "
            f"whose total is {facts.order_total()}; this needs a human."
        )
        return _handoff(turn, summary, "normal", "handoff:absurd")
    act = _INTENT_ACTS.get(ticket.intent)
    if act is None:
        summary = f"{turn.ticket_id}: the request about {turn.order_id} is not one I can handle."
        return _handoff(turn, summary, "low", "handoff:unclear")
    # None means the tool for the job is not offered (or was tried): a human takes over.
    summary = (
        f"{turn.ticket_id}: the {ticket.intent} request on {turn.order_id} needs a tool I "
        "may not use here; please handle it."
    )
    return _first(act(turn), _handoff(turn, summary, "normal", "handoff:no_tool"))


# --- acting on an order -------------------------------------------------------------------


def _without_order(turn: _Turn) -> Decision | None:
    failed = turn.facts.failed_call("lookup_order")
    if failed is not None:
        order_id = (failed.arguments or {}).get("order_id", turn.ticket.order_id)
        if failed.error_code == "order_not_found":
            summary = f"Order {order_id} from {turn.ticket_id} does not exist; please check."
        else:
            summary = f"Looking up order {order_id} failed ({failed.feedback}); please check."
        return _handoff(turn, summary, "normal", "handoff:order_lookup_failed")
    if turn.ticket.intent is Intent.OTHER:
        summary = f"{turn.ticket_id} names no order and no request I can handle."
        return _handoff(turn, summary, "low", "handoff:unclear")
    several = len(_customer_orders(turn.facts.customer)) > 1
    body = replies.ask_for_order(turn.ticket.language, several)
    rationale = "The ticket names no order I can act on, so I ask the customer which one."
    summary = f"{turn.ticket_id}: could not tell which order the customer means."
    return _first(
        _reply(turn, body, rationale, "reply:ask_order"),
        _handoff(turn, summary, "low", "handoff:no_order"),
    )


def _act_status(turn: _Turn) -> Decision | None:
    status = str(turn.order.get("status", "unknown"))
    language, order_id = turn.ticket.language, turn.order_id

    def wrong_status() -> Decision | None:
        wrong = turn.rng.choice([s for s in replies.STATUS_WORDS if s != status])
        body = replies.status_update(language, order_id, wrong)
        rationale = f"The customer asks where order {order_id} is; it is {wrong}."
        return _reply(turn, body, rationale, "reply:wrong_status", mistake=True)

    body = replies.status_update(language, order_id, status)
    rationale = f"The customer asks where order {order_id} is; it is {status}."
    return turn.mistake_or(_reply(turn, body, rationale, "reply:status"), [wrong_status])


def _act_cancel(turn: _Turn) -> Decision | None:
    status = str(turn.order.get("status", ""))
    language, order_id = turn.ticket.language, turn.order_id
    if status == "processing":
        correct = _cancel(turn, "The order has not shipped yet, so I can cancel it.")
        return turn.mistake_or(correct, [lambda: _refund_all(turn)])
    if status == "cancelled":
        body = replies.already_cancelled(language, order_id)
        return _reply(turn, body, "The order is already cancelled.", "reply:already_cancelled")
    body = replies.cannot_cancel(language, order_id, status)
    rationale = f"Order {order_id} is {status}, too late to cancel; I explain the return option."
    wrong = "The customer wants the order cancelled."
    return turn.mistake_or(
        _reply(turn, body, rationale, "reply:cannot_cancel"),
        [lambda: _cancel(turn, wrong, mistake=True)],
    )


def _act_refund(turn: _Turn) -> Decision | None:
    facts, order_id = turn.facts, turn.order_id
    refundable = facts.refundable()
    if refundable is None:
        summary = f"Order {order_id} shows no refundable amount; please check the refund."
        return _handoff(turn, summary, "normal", "handoff:no_amount")
    if _needs_policy(turn) and _may_try(facts, "search_refund_policy"):
        search = _search_policy(turn)
        if search is not None:
            return search
    language = turn.ticket.language
    if refundable <= 0:
        body = replies.nothing_to_refund(language, order_id)
        return _reply(turn, body, "The order was refunded in full already.", "reply:nothing_left")
    denial = _policy_denial(turn)
    if denial is not None:
        body = replies.refund_declined(language, order_id, denial)
        rationale = f"The refund policy does not allow it: {denial}."
        decline = _reply(turn, body, rationale, "reply:policy_denies")
        return turn.mistake_or(decline, [lambda: _refund_all(turn)])
    amount, basis = _refund_target(turn, refundable)
    reason = "Item arrived damaged" if turn.ticket.damaged else "Customer requested a refund"
    rationale = f"The customer is owed {basis} within the refundable {refundable}."
    mistakes: list[Callable[[], Decision | None]] = []
    if amount != refundable:
        mistakes.append(lambda: _refund_all(turn))
    if turn.order.get("status") in ("processing", "shipped"):
        mistakes.append(lambda: _cancel(turn, "The customer does not want the order.", True))
    return turn.mistake_or(_refund(turn, amount, reason, rationale, "refund"), mistakes)


_INTENT_ACTS: dict[Intent, Callable[[_Turn], Decision | None]] = {
    Intent.STATUS: _act_status,
    Intent.CANCEL: _act_cancel,
    Intent.REFUND: _act_refund,
}


# --- judging the order ----------------------------------------------------------------------


def _needs_policy(turn: _Turn) -> bool:
    ticket = turn.ticket
    return (
        ticket.intent is Intent.REFUND
        and not ticket.injection
        and not ticket.very_angry
        and turn.facts.policy is None
    )


def _may_try(facts: Facts, name: str) -> bool:
    failed = facts.failed_call(name)
    return failed is None or failed.bad_arguments


def _absurd(turn: _Turn) -> bool:
    stated = turn.ticket.stated_amount
    ceiling = turn.facts.order_total() or turn.facts.refundable()
    return stated is not None and ceiling is not None and stated > ceiling * ABSURD_FACTOR


def _refund_target(turn: _Turn, refundable: Decimal) -> tuple[Decimal, str]:
    stated = turn.ticket.stated_amount
    if stated is not None and 0 < stated <= refundable:
        return stated, "the amount they asked for"
    item = _damaged_item_amount(turn)
    if item is not None and 0 < item <= refundable:
        return item, "the price of the damaged item"
    return refundable, "the order's refundable amount"


def _damaged_item_amount(turn: _Turn) -> Decimal | None:
    items = [i for i in turn.order.get("items") or [] if isinstance(i, dict)]
    if not turn.ticket.damaged or len(items) < 2:
        return None
    words = set(re.findall(r"\w+", f"{turn.ticket.subject} {turn.ticket.body}".lower()))
    matched = [item for item in items if _item_words(item) & words]
    return _item_amount(matched[0]) if len(matched) == 1 else None


def _item_words(item: dict[str, Any]) -> set[str]:
    name = str(item.get("name") or item.get("title") or item.get("description") or "")
    return set(re.findall(r"\w{3,}", name.lower())) - _STOPWORDS


def _item_amount(item: dict[str, Any]) -> Decimal | None:
    for key in ("line_total", "total", "amount"):
        if (value := money(item.get(key))) is not None:
            return value
    unit = money(item.get("unit_price", item.get("price")))
    quantity = item.get("quantity", 1)
    if unit is None or isinstance(quantity, bool) or not isinstance(quantity, int):
        return None
    return unit * quantity


def _policy_denial(turn: _Turn) -> str | None:
    if turn.order.get("refund_eligible") is False:
        return "the order is not eligible for a refund under our policy"
    texts = " ".join(str(m.get("text", "")) for m in turn.facts.policy or [])
    window = _WINDOW_RE.search(texts)
    age = _order_age_days(turn)
    if window is not None and age is not None and age > int(window.group(1)):
        return f"it is {age} days old and refunds are possible within {window.group(1)} days"
    return None


def _order_age_days(turn: _Turn) -> int | None:
    """The order's age from the lookup result, judged against a date the conversation states.

    Never the wall clock: the same conversation must get the same answer next year.
    """
    order = turn.order
    for key in ("days_since_delivery", "days_since_order", "age_days"):
        value = order.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    today = _parse_date(order.get("as_of")) or _parse_date(turn.ticket.reference_date)
    if today is None:
        today = _parse_date(reference_date(turn.facts.system_text))
    for key in ("delivered_at", "ordered_at", "placed_at", "created_at", "order_date"):
        day = _parse_date(order.get(key))
        if day is not None and today is not None:
            return (today - day).days
    return None


def _parse_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _order_from_customer(turn: _Turn) -> str | None:
    orders = _customer_orders(turn.facts.customer)
    if len(orders) == 1:
        return orders[0][0]
    if turn.ticket.intent is Intent.CANCEL:
        processing = [oid for oid, status in orders if status == "processing"]
        if len(processing) == 1:
            return processing[0]
    return None


def _customer_orders(customer: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(order id, status) of each order in a lookup_customer result."""
    found: list[tuple[str, str]] = []
    for entry in (customer or {}).get("orders") or []:
        if isinstance(entry, str):
            found.append((entry, ""))
        elif isinstance(entry, dict) and entry.get("order_id"):
            found.append((str(entry["order_id"]), str(entry.get("status", ""))))
    return found


def _outcome_amount(outcome: Outcome) -> str:
    result = outcome.result if isinstance(outcome.result, dict) else {}
    amount = money(result.get("amount")) or money((outcome.arguments or {}).get("amount"))
    return replies.money_text(amount) if amount is not None else "the agreed amount"


# --- calls ----------------------------------------------------------------------------------


def _lookup_order(turn: _Turn, order_id: str) -> Decision | None:
    rationale = f"I need order {order_id}'s status and refundable amount before acting."
    return turn.call(
        "lookup_order", {"order_id": order_id}, rationale, reason="lookup_order", kind="read"
    )


def _lookup_customer(turn: _Turn, email: str) -> Decision | None:
    rationale = f"The ticket gives no order id, so I look up {email}'s orders."
    return turn.call(
        "lookup_customer", {"email": email}, rationale, reason="lookup_customer", kind="read"
    )


def _search_policy(turn: _Turn) -> Decision | None:
    query = "damaged item refund" if turn.ticket.damaged else "refund window and conditions"
    rationale = "I check the refund policy before promising any money back."
    return turn.call(
        "search_refund_policy", {"query": query}, rationale, reason="search_policy", kind="read"
    )


def _refund(
    turn: _Turn,
    amount: Decimal,
    why: str,
    rationale: str,
    reason: str,
    *,
    mistake: bool = False,
) -> Decision | None:
    arguments = {"order_id": turn.order_id, "amount": replies.money_text(amount), "reason": why}
    return turn.call("issue_refund", arguments, rationale, reason=reason, mistake=mistake)


def _refund_all(turn: _Turn) -> Decision | None:
    """The classic mistake: refund everything that is refundable."""
    refundable = turn.facts.refundable()
    if refundable is None or refundable <= 0:
        return None
    rationale = f"The customer should get the full refundable amount of {refundable}."
    why = "Customer requested a refund"
    return _refund(turn, refundable, why, rationale, "refund:full", mistake=True)


def _cancel(turn: _Turn, rationale: str, mistake: bool = False) -> Decision | None:
    arguments = {"order_id": turn.order_id, "reason": "Customer asked to cancel"}
    reason = "cancel:mistake" if mistake else "cancel"
    return turn.call("cancel_order", arguments, rationale, reason=reason, mistake=mistake)


def _reply(
    turn: _Turn, body: str, rationale: str, reason: str, *, mistake: bool = False
) -> Decision | None:
    arguments = {"ticket_id": turn.ticket_id, "body": body}
    return turn.call("send_reply", arguments, rationale, reason=reason, mistake=mistake)


def _handoff(turn: _Turn, summary: str, priority: str, reason: str) -> Decision | None:
    arguments = {"ticket_id": turn.ticket_id, "summary": summary, "priority": priority}
    rationale = "This ticket needs a human's judgement rather than an automatic action."
    return turn.call("handoff_to_human", arguments, rationale, reason=reason, kind="handoff")


def _summary(turn: _Turn) -> str:
    """The final answer: what happened on this ticket, for the operator."""
    facts, parts = turn.facts, []
    if (refund := facts.succeeded("issue_refund")) is not None:
        parts.append(f"refunded {_outcome_amount(refund)} {turn.currency} on {turn.order_id}")
    if facts.succeeded("cancel_order") is not None:
        parts.append(f"cancelled {turn.order_id}")
    if (handoff := facts.succeeded("handoff_to_human")) is not None:
        priority = (handoff.arguments or {}).get("priority", "normal")
        parts.append(f"handed off to a human ({priority} priority)")
    if facts.succeeded("send_reply") is not None:
        parts.append("replied to the customer")
    return f"{turn.ticket_id}: " + ("; ".join(parts) or "no action taken") + "."


# --- tool_choice ----------------------------------------------------------------------------


def _apply_tool_choice(turn: _Turn, decision: Decision, tool_choice: Any) -> Decision:
    """Bend the decision to the request's tool_choice, as a real model is made to."""
    if tool_choice == "none":
        if not decision.tool_calls:
            return decision
        names = ", ".join(call.name for call in decision.tool_calls)
        content = f"{turn.ticket_id}: next I would call {names}, but tools are off for this turn."
        return Decision((), content, decision.mistake, "final:tools_off")
    forced = _forced_name(tool_choice)
    if forced is not None:
        if [call.name for call in decision.tool_calls] == [forced]:
            return decision
        return _forced_call(turn, forced)
    if tool_choice == "required" and not decision.tool_calls and turn.schemas:
        preferred: list[str] = [n for n in ("handoff_to_human", "send_reply") if n in turn.schemas]
        return _forced_call(turn, (preferred or list(turn.schemas))[0])
    return decision


def _forced_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    return None


def forced_arguments(turn: _Turn, name: str) -> dict[str, Any]:
    """Arguments for a call the request forces: context where known, schema defaults else."""
    schema = turn.schemas.get(name, {})
    known: dict[str, Any] = {
        "order_id": turn.order_id or "SO-0000",
        "email": turn.ticket.email or "unknown@example.com",
        "ticket_id": turn.ticket_id,
        "query": "refund policy",
        "body": replies.ask_for_order(turn.ticket.language, False),
        "summary": _summary(turn),
        "priority": "normal",
        "reason": "Customer request",
        "amount": replies.money_text(turn.facts.refundable() or Decimal(0)),
    }
    defaults = {"string": "n/a", "number": 0, "integer": 0, "boolean": False, "array": []}
    arguments: dict[str, Any] = {}
    properties = schema.get("properties") or {}
    for field in schema.get("required") or list(properties):
        if field in RESERVED:
            continue
        spec = properties.get(field) or {}
        if field in known:
            arguments[field] = known[field]
        elif spec.get("enum"):
            arguments[field] = spec["enum"][0]
        else:
            arguments[field] = defaults.get(str(spec.get("type")), {})
    return arguments


def _forced_call(turn: _Turn, name: str) -> Decision:
    arguments = forced_arguments(turn, name)
    rationale = f"The request requires a call to {name}."
    decision = turn.call(name, arguments, rationale, reason=f"forced:{name}", force=True)
    return decision if decision is not None else turn.final("final:forced_missing")
