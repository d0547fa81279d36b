"""The support agent's verifiers: deterministic checks of its calls and of its final answer.

Plain code over the shop's own records and what the run's calls did; never a model. Each
returns None when its check holds, else one sentence for the model and, if the model does
not fix it, for the person who gets the run.

1. ``refund_within_balance`` (a call): a refund must not exceed what the order's ledger
   still allows. The tool refuses such a refund too, but only when it runs: checked here,
   it never reaches the policy or a reviewer's queue.
2. ``claims_match_actions`` (the answer): a final answer that says money was refunded, an
   order cancelled, the customer answered or the ticket handed off, when no call of the
   run did so, is a false report to the shop's reviewers.
3. ``ticket_settled`` (the answer, the outcome check): a support run ends with a reply to
   the customer, a hand-off to a person, or the ticket noted as spam. Anything else leaves
   a customer without an answer, whatever the answer says.

The claim reading is keyword matching over English, as the simulator's is: crude, and
deterministic. A clause with a negation ("no refund was issued", "could not cancel") or
with "already" (a state found, not an act) claims nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from agents.definition import ActionDone, Verifier, VerifierContext, VerifierStage
from examples.support.models import Order, Refund
from examples.support.tools import format_money, refundable_amount

# A full stop ends a clause only before a space or the end: "29.00" is one amount.
_CLAUSES = re.compile(r"(?:[.!?:](?=\s|$)|[;\n])+")
_NEGATION = re.compile(
    r"\b(?:no|not|never|none|nothing|without|cannot|unable|failed|declined|refused|"
    r"already|would|could|should|will|pending|requested|asked|wants?)\b|n't\b",
    re.IGNORECASE,
)
_CLAIMS: dict[str, re.Pattern[str]] = {
    "refund": re.compile(
        r"\b(?:refunded|reimbursed|issued (?:a |the )?(?:full |partial )?refund|"
        r"refund (?:was|has been|is) (?:issued|made|processed|sent|done))\b",
        re.IGNORECASE,
    ),
    "cancel": re.compile(r"\b(?:cancell?ed|cancell?ation (?:was|has been) made)\b", re.I),
    "reply": re.compile(
        r"\b(?:replied|answered the customer|sent (?:a |the |my )?(?:reply|answer|email|"
        r"message)|(?:told|informed|emailed|wrote to) the customer)\b",
        re.IGNORECASE,
    ),
    "handoff": re.compile(
        r"\b(?:handed (?:it |the ticket |the case )?(?:off|over|on|to)|escalated|"
        r"passed (?:it |the ticket |the case )?(?:on )?to)\b",
        re.IGNORECASE,
    ),
}
_CLAIM_TOOLS = {
    "refund": ("issue_refund", "cancel_order"),  # a cancellation refunds the balance too
    "cancel": ("cancel_order",),
    "reply": ("send_reply",),
    "handoff": ("handoff_to_human",),
}
_WHAT = {
    "refund": "a refund",
    "cancel": "a cancellation",
    "reply": "a reply to the customer",
    "handoff": "a hand-off to a person",
}
_AMOUNT = re.compile(r"(?<![\w.,])(\d{1,7}[.,]\d{2})(?![\d])")
_SPAM = re.compile(r"\bspam\b", re.IGNORECASE)


def refund_within_balance(context: VerifierContext) -> str | None:
    """A refund of at most the order's refundable amount, read from the ledger now.

    A refund already recorded under the call's key is its own redo (its worker died after
    the effect): it is passed, and the tool returns the stored result.
    """
    if Refund.objects.filter(idempotency_key=context.idempotency_key).exists():
        return None
    order_id = str(context.arguments.get("order_id", ""))
    try:
        amount = Decimal(str(context.arguments.get("amount")))
    except InvalidOperation:
        return "the refund amount is not a number"
    order = Order.objects.select_related("customer").filter(order_id=order_id).first()
    if order is None:
        return f"there is no order {order_id}; look the order up before refunding"
    refundable = refundable_amount(order)
    if amount <= refundable:
        return None
    # Another customer's balance is theirs: the model is not told it.
    if order.customer.email.lower() != str(context.input.get("customer_email", "")).lower():
        return f"the refund of {format_money(amount)} exceeds what {order_id} allows"
    return (
        f"the refund of {format_money(amount)} exceeds the refundable amount of {order_id}, "
        f"{format_money(refundable)} {order.currency}"
    )


def _claims(answer: str) -> list[tuple[str, str]]:
    """(kind, clause) for each act the answer states as done, negated clauses left out."""
    found = []
    for clause in _CLAUSES.split(answer):
        if not clause.strip() or _NEGATION.search(clause):
            continue
        found += [(kind, clause) for kind, pattern in _CLAIMS.items() if pattern.search(clause)]
    return found


def _refunded_amounts(done: tuple[ActionDone, ...]) -> set[Decimal]:
    """Each refund the run made, and their sum, as the results state them."""
    amounts: list[Decimal] = []
    for action in done:
        result = action.result if isinstance(action.result, dict) else {}
        value = result.get("amount", result.get("refunded_amount"))
        try:
            amounts.append(Decimal(str(value)).quantize(Decimal("0.01")))
        except InvalidOperation:
            continue
    return {*amounts, sum(amounts, Decimal("0.00"))}


def claims_match_actions(context: VerifierContext) -> str | None:
    """Every act the final answer claims was done by a succeeded call of the run."""
    problems: list[str] = []
    for kind, clause in _claims(context.answer):
        done = context.succeeded(*_CLAIM_TOOLS[kind])
        if not done:
            problems.append(f"it reports {_WHAT[kind]}, but no call of this run made one")
            continue
        if kind == "refund":
            made = _refunded_amounts(done)
            for text in _AMOUNT.findall(clause):
                claimed = Decimal(text.replace(",", "."))
                if claimed not in made:
                    problems.append(
                        f"it reports a refund of {format_money(claimed)}, but the run "
                        f"refunded {', '.join(sorted(format_money(a) for a in made if a))}"
                    )
    if not problems:
        return None
    return "the final answer does not match what the run did: " + "; ".join(dict.fromkeys(problems))


def ticket_settled(context: VerifierContext) -> str | None:
    """The run replied to the customer, handed the ticket off, or noted it as spam."""
    if context.succeeded("send_reply", "handoff_to_human"):
        return None
    if _SPAM.search(context.answer):
        return None
    return (
        "the ticket is not settled: nothing was sent to the customer and nothing was "
        "handed to a person; reply with send_reply, hand off with handoff_to_human, or "
        "say that the ticket is spam"
    )


SUPPORT_VERIFIERS: tuple[Verifier, ...] = (
    Verifier(
        name="refund_within_balance",
        stage=VerifierStage.CALL,
        check=refund_within_balance,
        tools=("issue_refund",),
    ),
    Verifier(name="claims_match_actions", stage=VerifierStage.ANSWER, check=claims_match_actions),
    Verifier(name="ticket_settled", stage=VerifierStage.ANSWER, check=ticket_settled),
)
