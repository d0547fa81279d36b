"""What the simulated agent has learnt so far: its own past tool calls and their results.

The brain is stateless; every request carries the whole conversation, and this module folds
it into ``Facts``. Tool results are read the way the runtime writes them: a JSON object, an
error as ``{"error": {...}}``, a reviewer's rejection as ``{"status": "rejected",
"feedback": ...}``. Anything unparseable is kept as text and judged by its words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

RESERVED = frozenset({"rationale", "confidence"})
ACTING_TOOLS = frozenset({"issue_refund", "cancel_order"})
# Error classes that blame the call's arguments, not the world: a corrected call may succeed.
_ARGUMENT_ERRORS = frozenset({"tool_args_invalid", "tool_unknown"})
_FAILURE_WORDS = re.compile(r"\b(error|rejected|denied|blocked|failed)\b", re.IGNORECASE)
_IDENTITY_FIELDS = {"issue_refund": ("order_id", "amount"), "cancel_order": ("order_id",)}
_REJECTED = frozenset({"rejected", "blocked", "denied", "refused"})

Status = Literal["ok", "error", "rejected", "pending"]


@dataclass(frozen=True)
class Outcome:
    """One tool call the agent made, with what came back."""

    name: str
    arguments: dict[str, Any] | None
    result: Any
    status: Status
    feedback: str

    @property
    def failed(self) -> bool:
        """An error or a rejection; a pending call has not failed yet."""
        return self.status in ("error", "rejected")

    @property
    def error_code(self) -> str:
        """The tool error's code (``order_not_found``), or ``""``."""
        return str(self._error().get("code") or "")

    @property
    def bad_arguments(self) -> bool:
        """The call failed because of its own arguments (or tool name), so a fixed call may not.

        This is how the agent recovers from the malformed-JSON, unknown-tool and
        schema-invalid faults: the runtime reports them as argument errors.
        """
        if not self.failed:
            return False
        return self.arguments is None or self._error().get("class") in _ARGUMENT_ERRORS

    def _error(self) -> dict[str, Any]:
        error = self.result.get("error") if isinstance(self.result, dict) else None
        return error if isinstance(error, dict) else {}


@dataclass
class Facts:
    """The conversation folded into what the next decision needs."""

    outcomes: list[Outcome] = field(default_factory=list)
    # How many outcomes precede the customer's latest message: a reply before it does not
    # finish the conversation, the customer has spoken again.
    since_customer: int = 0
    assistant_turns: int = 0
    order: dict[str, Any] | None = None
    customer: dict[str, Any] | None = None
    policy: list[dict[str, Any]] | None = None
    customer_text: str = ""
    system_text: str = ""

    def succeeded(self, name: str) -> Outcome | None:
        """The last successful call of tool ``name``."""
        for outcome in reversed(self.outcomes):
            if outcome.name == name and outcome.status == "ok":
                return outcome
        return None

    def failed_call(self, name: str) -> Outcome | None:
        """The last failed call of tool ``name``."""
        for outcome in reversed(self.outcomes):
            if outcome.name == name and outcome.failed:
                return outcome
        return None

    def tried(self, name: str, arguments: dict[str, Any]) -> bool:
        """Whether the agent already made this call (reserved fields aside)."""
        wanted = call_signature(name, arguments)
        return any(
            o.arguments is not None and call_signature(o.name, o.arguments) == wanted
            for o in self.outcomes
        )

    def recent(self) -> list[Outcome]:
        """Outcomes since the customer last wrote."""
        return self.outcomes[self.since_customer :]

    def last(self) -> Outcome | None:
        """The most recent call that got a result."""
        done = [o for o in self.outcomes if o.status != "pending"]
        return done[-1] if done else None

    def refundable(self) -> Decimal | None:
        """The order's refundable amount from the lookup result, if known."""
        return money((self.order or {}).get("refundable_amount"))

    def order_total(self) -> Decimal | None:
        """The order's total from the lookup result, if known."""
        return money((self.order or {}).get("total"))


def read_history(messages: list[dict[str, Any]]) -> Facts:
    """Fold the request's messages into Facts."""
    facts = Facts()
    calls: dict[str, tuple[str, dict[str, Any] | None]] = {}
    results: dict[str, Any] = {}
    order: list[str] = []
    customer_parts: list[str] = []
    system_parts: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "user":
            customer_parts.append(text_of(message.get("content")))
            facts.since_customer = len(order)
        elif role in ("system", "developer"):
            system_parts.append(text_of(message.get("content")))
        elif role == "assistant":
            facts.assistant_turns += 1
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                calls[call.get("id", "")] = (function.get("name", ""), _parse_args(function))
                order.append(call.get("id", ""))
        elif role == "tool":
            results[message.get("tool_call_id", "")] = _parse_result(message.get("content"))
    facts.customer_text = "\n\n".join(customer_parts)
    facts.system_text = "\n\n".join(system_parts)
    for call_id in order:
        name, arguments = calls[call_id]
        facts.outcomes.append(_outcome(name, arguments, call_id in results, results.get(call_id)))
    _remember_lookups(facts)
    return facts


def call_signature(name: str, arguments: dict[str, Any]) -> str:
    """A call's identity for "don't repeat yourself": name plus canonical arguments.

    For side effects only the fields that matter count: refunding the same amount with
    other words for the reason is the same refund.
    """
    fields = _IDENTITY_FIELDS.get(name)
    core = {
        k: v for k, v in arguments.items() if k not in RESERVED and (fields is None or k in fields)
    }
    return name + ":" + json.dumps(core, sort_keys=True, separators=(",", ":"))


def text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def money(value: Any) -> Decimal | None:
    """A decimal amount from "84.00", 84 or 84.0; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def _parse_args(function: dict[str, Any]) -> dict[str, Any] | None:
    try:
        parsed = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _parse_result(content: Any) -> Any:
    text = text_of(content)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _outcome(name: str, arguments: dict[str, Any] | None, answered: bool, result: Any) -> Outcome:
    if not answered:
        return Outcome(name, arguments, None, "pending", "")
    if isinstance(result, dict):
        if "error" in result:
            error = result["error"]
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            return Outcome(name, arguments, result, "error", str(message))
        if str(result.get("status", "")).lower() in _REJECTED:
            feedback = result.get("feedback") or result.get("reason") or result.get("message")
            return Outcome(name, arguments, result, "rejected", str(feedback or ""))
    if isinstance(result, str) and _FAILURE_WORDS.search(result):
        return Outcome(name, arguments, result, "error", result)
    return Outcome(name, arguments, result, "ok", "")


def _remember_lookups(facts: Facts) -> None:
    # The latest successful result of each read wins; a nested {"order": {...}} is unwrapped.
    order = facts.succeeded("lookup_order")
    if order is not None and isinstance(order.result, dict):
        nested = order.result.get("order")
        facts.order = nested if isinstance(nested, dict) else order.result
    customer = facts.succeeded("lookup_customer")
    if customer is not None and isinstance(customer.result, dict):
        nested = customer.result.get("customer")
        facts.customer = dict(nested) if isinstance(nested, dict) else dict(customer.result)
        facts.customer.setdefault("orders", customer.result.get("orders") or [])
    policy = facts.succeeded("search_refund_policy")
    if policy is not None:
        matches = policy.result.get("matches") if isinstance(policy.result, dict) else None
        facts.policy = [m for m in matches if isinstance(m, dict)] if matches else []
