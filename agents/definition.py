"""Agents and tools, declared in Python by engineers.

An agent is a name, a system prompt template, the tools it may ever use and its default
limits. A tool is a callable with a pydantic input schema, a risk class, a timeout and a
declared idempotency behaviour. Both are plain frozen dataclasses so that a definition is
data: the runtime, the policy and the simulator read it, nothing mutates it.

Agents are registered by dotted path in the ``AGENTDESK_AGENTS`` setting; see
``agents.registry``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from string import Template
from typing import Any

from limits import RateLimitItem, parse
from pydantic import BaseModel

from agents.risk import Risk
from policy.engine import Policy

# Every tool's JSON schema, as the model sees it, carries these two extra properties: the
# model states why it makes the call and how sure it is. The runtime strips them before the
# arguments are validated against the tool's own schema, so a tool never sees them and may
# not declare fields with these names.
RATIONALE_FIELD = "rationale"
CONFIDENCE_FIELD = "confidence"
RESERVED_ARGUMENTS = frozenset({RATIONALE_FIELD, CONFIDENCE_FIELD})


def parse_rate_limit(text: str) -> RateLimitItem:
    """A rate limit such as "30/minute"; ValueError if it does not parse."""
    return parse(text)


class Idempotency(StrEnum):
    """What happens when the same call runs twice.

    SAFE: the call has no side effect (a lookup); repeating it is harmless.
    KEYED: the tool's backend records the effect under the action's idempotency key with a
    unique constraint and returns the stored result on a replay.
    """

    SAFE = "safe"
    KEYED = "keyed"


@dataclass(frozen=True)
class ToolContext:
    """What a tool is told about the call besides its arguments."""

    run_id: str
    trace_id: str
    idempotency_key: str
    input: Mapping[str, Any]


class ToolError(Exception):
    """A tool's own, expected failure (an unknown order, a refund over the balance).

    The runtime returns it to the model as a structured tool result so the agent can adapt;
    it is not a crash. ``code`` is a short machine-readable reason.
    """

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


ToolFunction = Callable[[Any, ToolContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    func: ToolFunction
    input_schema: type[BaseModel]
    risk: Risk
    idempotency: Idempotency
    timeout_s: float = 10.0
    # At most this many calls across all runs and workers, in the `limits` notation
    # ("30/minute", "5/second"); None for no limit. A call over the limit waits.
    rate_limit: str | None = None
    # The tool hands the case to a person (a hand-off). A call of it that cannot be made
    # must not leave the case with nobody: the runtime asks a person through the agent's
    # escalation queue instead (after one repair attempt for invalid arguments).
    reaches_person: bool = False
    # What a call would return, without its effect: the answer an eval's or a shadow's run
    # gets in place of a write (runs.kernel.sandbox). It may read the agent's data and
    # raise ToolError as ``func`` would (a refund over the balance), and must write
    # nothing. None: a plain acknowledgement with the arguments.
    sandbox: ToolFunction | None = None

    def __post_init__(self) -> None:
        if self.rate_limit is not None:
            try:
                parse_rate_limit(self.rate_limit)
            except ValueError as exc:
                raise ValueError(f"tool {self.name!r}: bad rate_limit: {exc}") from None
        clash = RESERVED_ARGUMENTS & set(self.input_schema.model_fields)
        if clash:
            raise ValueError(f"tool {self.name!r} declares reserved argument(s) {sorted(clash)}")
        if self.risk is not Risk.READ and self.idempotency is Idempotency.SAFE:
            raise ValueError(
                f"tool {self.name!r} has side effects ({self.risk}) and must be KEYED: "
                "its backend has to enforce the idempotency key"
            )

    def openai_schema(self) -> dict[str, Any]:
        """The tool as the Chat Completions API describes it, with the reserved fields."""
        parameters = self.input_schema.model_json_schema()
        properties = dict(parameters.get("properties", {}))
        properties[RATIONALE_FIELD] = {
            "type": "string",
            "description": "Why you are making this call, in one sentence.",
        }
        properties[CONFIDENCE_FIELD] = {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "How sure you are that this call is right, from 0 to 1.",
        }
        parameters["properties"] = properties
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }


class OnLimit(StrEnum):
    """What a run that reaches one of its limits does."""

    FAIL = "fail"  # end as failed with a budget_exceeded error
    ESCALATE = "escalate"  # park for a human with the same error


@dataclass(frozen=True)
class Limits:
    """Per-run limits as declared in code; a configuration version may set others."""

    max_steps: int = 30
    max_tool_calls: int = 15
    max_tokens: int = 60_000
    max_cost_usd: Decimal = Decimal("1.00")
    deadline_s: int = 900
    on_exceeded: OnLimit = OnLimit.FAIL


@dataclass(frozen=True)
class ModelRoute:
    """One link of a fallback chain: a model name at an endpoint alias.

    Endpoint aliases and their keys come from the environment (AGENTDESK_LLM_ENDPOINTS),
    never from code or the database.
    """

    model: str
    endpoint: str = "default"

    def __str__(self) -> str:
        return f"{self.model}@{self.endpoint}"


@dataclass(frozen=True)
class RuleReply:
    """What a deterministic rule-based fallback answers in place of a model.

    Either tool calls (name, arguments) or a final text; the runtime records it as a model
    step served by the "rule" link.
    """

    content: str = ""
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()


@dataclass(frozen=True)
class RuleContext:
    """What a rule-based fallback sees: the run's input and what has been done so far."""

    run_id: str
    input: Mapping[str, Any]
    tools_called: tuple[str, ...]
    error_class: str


RuleFallback = Callable[[RuleContext], RuleReply]


@dataclass(frozen=True)
class TaskContext:
    """What an agent's ``task_kind`` sees before a model step: cheap, deterministic facts.

    Never the model's words: the kind decides which model answers, and text a model (or a
    ticket) wrote must not be able to pick a weaker or a stronger one.
    """

    # The tools that returned a result so far, in order; a call refused before it ran
    # (invalid arguments, blocked, rejected by a reviewer) or that failed is not counted.
    tools_called: tuple[str, ...]
    input: Mapping[str, Any]
    # The model replies so far (not failed attempts, so a retry keeps its kind).
    model_steps: int


TaskKind = Callable[[TaskContext], str]
_TASK_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# What a reviewer needs to see besides the call: the records it touches (the order, the
# customer's refund history). Called by the worker when a call is routed to review, with
# the tool's name, the validated arguments and the run's input; returns JSON-able data.
ReviewContext = Callable[[str, Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]


class VerifierStage(StrEnum):
    """When a verifier runs."""

    CALL = "call"  # on a proposed call, after its arguments are validated, before the policy
    ANSWER = "answer"  # on a final answer, before the run may succeed


@dataclass(frozen=True)
class ActionDone:
    """One tool call of the run as a verifier sees it: what was asked, and what came of it."""

    tool: str
    arguments: Mapping[str, Any] | None
    status: str  # an ActionStatus value: "succeeded", "failed", "rejected", ...
    result: Any


@dataclass(frozen=True)
class VerifierContext:
    """What a verifier is given: the run's input and calls, and the call or answer to check.

    ``actions``: every call the run proposed before this one, in order, with its status;
    only ``succeeded`` ones had an effect. For a CALL verifier, ``tool`` and ``arguments``
    (validated, as JSON) are the proposed call; for an ANSWER verifier, ``answer`` is the
    final answer's text.
    """

    input: Mapping[str, Any]
    actions: tuple[ActionDone, ...]
    tool: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    # The call's idempotency key: a verifier that reads the data the call changes should
    # pass a call whose effect is already recorded under it (a redo replays the effect).
    idempotency_key: str = ""
    answer: str = ""

    def succeeded(self, *tools: str) -> tuple[ActionDone, ...]:
        """The calls of these tools that ran and succeeded, in order."""
        return tuple(a for a in self.actions if a.tool in tools and a.status == "succeeded")


# None when the check holds; otherwise one sentence saying what is wrong, for the model
# (CALL, ANSWER) and for the person who gets the run if the model does not fix it.
VerifierCheck = Callable[[VerifierContext], str | None]
_VERIFIER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Verifier:
    """A deterministic check of a proposed call or of a final answer against the data.

    Code, never a model: a verifier reads the call, the run's input, what the run's
    actions did and, if it needs to, the agent's own records (an order's balance). Its
    failure is ``verification_failed``: a call is refused before the policy and the
    model told why; an answer goes back to the model. After the agent's
    ``verification_attempts`` failures in a run, a person gets the run.
    """

    name: str
    stage: VerifierStage
    check: VerifierCheck
    # CALL verifiers: the tools whose calls it checks; empty for every call.
    tools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _VERIFIER_NAME.match(self.name):
            raise ValueError(f"bad verifier name {self.name!r} (lower-case letters, digits, _)")
        if self.stage is VerifierStage.ANSWER and self.tools:
            raise ValueError(f"verifier {self.name!r}: an answer verifier checks no tool")

    def applies_to(self, tool: str) -> bool:
        return self.stage is VerifierStage.CALL and (not self.tools or tool in self.tools)


@dataclass(frozen=True)
class Touch:
    """A record a call reaches, and the subject it belongs to (``owner``).

    ``owner`` is a subject key as the agent's ``subject`` gives it for a run (for the
    example, the customer's email); None when no such record exists (the tool itself will
    refuse the call).
    """

    kind: str  # "order", "ticket", "customer"
    id: str
    owner: str | None

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class CallFacts:
    """What the policy learns of a call before its verdict, looked up in the agent's data.

    Deterministic and the data's word, never the model's: the records the call reaches
    and who owns them, the money it moves (``amount``: a refund's amount, a cancellation's
    refunded balance; None for a call that moves none) and anything else rules may read
    and a reviewer should see (``facts``: the order's total, what was refunded so far).
    The first touch is the record the call acts on: sums "on the same record" use it.
    """

    touches: tuple[Touch, ...] = ()
    amount: Decimal | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


# The run's subject from its validated input (for the example: the sender's email), or
# None when the input names none. Every record a call reaches must belong to it.
SubjectOf = Callable[[Mapping[str, Any]], str | None]
# The facts of one call: (tool name, validated arguments, the run's input) -> CallFacts.
# Called by the worker before every verdict and on every reviewer's edit.
FactsLookup = Callable[[str, Mapping[str, Any], Mapping[str, Any]], CallFacts]


_DEMO_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class DemoInput:
    """A ready-made input the submit page offers (for the example: a seeded ticket).

    ``key`` names it in the page's address (``?demo=T-0007``); ``label`` is one line
    (the ticket's subject); ``input`` is what the form is filled with.
    """

    key: str
    label: str
    input: Mapping[str, Any]
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _DEMO_KEY.match(self.key):
            raise ValueError(f"bad demo input key {self.key!r} (letters, digits, _.:-, 1-64)")


# The demo inputs, read when the submit page is shown (they may come from the database).
DemoInputs = Callable[[], Sequence[DemoInput]]
# Called by the submit page with the validated input, in the submission's transaction,
# before the run is created; returns the input the run gets. It may write (the example
# files the ticket): a run refused after it rolls the write back.
PrepareInput = Callable[[BaseModel], Mapping[str, Any]]
# One line naming a run in lists and on its page, from its stored input: any JSON object
# (a run from before a schema change included), so it must not assume the schema's keys.
RunTitle = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    # A string.Template: ``$name`` placeholders are filled from ``prompt_context(input)``.
    # string.Template rather than str.format so braces in prompts need no escaping.
    system_prompt: str
    tools: tuple[Tool, ...]
    input_schema: type[BaseModel]
    # Turns the validated input into the first user message.
    render_input: Callable[[BaseModel], str]
    prompt_context: Callable[[BaseModel], Mapping[str, str]] = lambda _input: {}
    # The ``$names`` an operator's prompt version may use: the keys ``prompt_context``
    # always provides. None: those the code's ``system_prompt`` uses. A stored version
    # with any other placeholder is refused (``releases.prompts``), because
    # safe_substitute would send it to the model as literal "$name".
    prompt_placeholders: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)
    # The fallback chain, in order: the primary model, alternative models or endpoints,
    # an optional deterministic rule, then (if escalate_to_human) a human. A link is left
    # when its retries are spent, its breaker is open, or its output stays malformed.
    model: str = "gpt-4o-mini"
    endpoint: str = "default"
    fallback_models: tuple[ModelRoute, ...] = ()
    # Task kinds: each model step is one of these (``task_kind`` picks it; without one, the
    # first), and each kind has its own model tier, a primary and its fallbacks. Kinds
    # missing from ``model_tiers`` use ``model``, ``endpoint`` and ``fallback_models``.
    # Operators change the tiers in configuration versions (releases.configuration).
    task_kinds: tuple[str, ...] = ("default",)
    task_kind: TaskKind | None = None
    model_tiers: Mapping[str, tuple[ModelRoute, ...]] = field(default_factory=dict)
    rule_fallback: RuleFallback | None = None
    escalate_to_human: bool = True
    # Which calls run, wait for a person or are refused (policy.engine). The default
    # reviews every irreversible call in the "default" queue.
    policy: Policy = field(default_factory=Policy)
    # Whom a run acts for, and the facts of each call (``policy.engine``): a call that
    # reaches another subject's records never runs on the model's word, and rules read
    # sums of the money moved on the same record, run and subject. None: no subject, and
    # calls carry no facts (a sum is then over this run only, of nothing).
    subject: SubjectOf | None = None
    policy_facts: FactsLookup | None = None
    review_context: ReviewContext | None = None
    # Deterministic checks of proposed calls and of the final answer (``Verifier``), and
    # how many of their failures a run may have before a person gets it: the first goes
    # back to the model, by default, the second to the agent's escalation queue.
    verifiers: tuple[Verifier, ...] = ()
    verification_attempts: int = 2
    # What the pages show and do for this agent's runs: ready-made inputs and a hook on the
    # submit page (the API and the command submit the input as given), and a run's title
    # in the runs list and on its page. None: no demo inputs, no hook, no title.
    demo_inputs: DemoInputs | None = None
    prepare_input: PrepareInput | None = None
    run_title: RunTitle | None = None

    def __post_init__(self) -> None:
        names = [tool.name for tool in self.tools]
        if len(names) != len(set(names)):
            raise ValueError(f"agent {self.name!r} declares a tool twice: {names}")
        self._validate_verifiers(set(names))
        self.policy.validate_for(set(names))
        if self.prompt_placeholders is not None:
            undeclared = set(Template(self.system_prompt).get_identifiers()) - set(
                self.prompt_placeholders
            )
            if undeclared:
                raise ValueError(
                    f"agent {self.name!r}: system_prompt uses {sorted(undeclared)}, "
                    "which prompt_placeholders does not declare"
                )
        kinds = self.task_kinds
        if not kinds or len(kinds) != len(set(kinds)):
            raise ValueError(f"agent {self.name!r}: task_kinds must be distinct, at least one")
        for kind in kinds:
            if not _TASK_KIND_NAME.match(kind):
                raise ValueError(
                    f"agent {self.name!r}: bad task kind {kind!r} (lower-case letters, digits "
                    "and underscores, starting with a letter, at most 32)"
                )
        unknown = sorted(set(self.model_tiers) - set(kinds))
        if unknown:
            raise ValueError(f"agent {self.name!r}: model_tiers for unknown task kinds {unknown}")
        for kind, routes in self.model_tiers.items():
            if not routes:
                raise ValueError(f"agent {self.name!r}: the tier of {kind!r} has no model")

    def _validate_verifiers(self, tool_names: set[str]) -> None:
        verifier_names = [v.name for v in self.verifiers]
        if len(verifier_names) != len(set(verifier_names)):
            raise ValueError(f"agent {self.name!r} declares a verifier twice: {verifier_names}")
        for verifier in self.verifiers:
            unknown = sorted(set(verifier.tools) - tool_names)
            if unknown:
                raise ValueError(
                    f"agent {self.name!r}: verifier {verifier.name!r} checks unknown tools "
                    f"{unknown}"
                )
        if self.verification_attempts < 1:
            raise ValueError(f"agent {self.name!r}: verification_attempts must be at least 1")

    def verifiers_of(self, stage: VerifierStage, tool: str = "") -> tuple[Verifier, ...]:
        """The verifiers that check a call of ``tool`` (CALL) or the final answer (ANSWER)."""
        if stage is VerifierStage.ANSWER:
            return tuple(v for v in self.verifiers if v.stage is VerifierStage.ANSWER)
        return tuple(v for v in self.verifiers if v.applies_to(tool))

    @property
    def model_routes(self) -> tuple[ModelRoute, ...]:
        return (ModelRoute(self.model, self.endpoint), *self.fallback_models)

    @property
    def declared_tiers(self) -> dict[str, tuple[ModelRoute, ...]]:
        """Every task kind's models as declared in code, in the order of ``task_kinds``."""
        return {
            kind: tuple(self.model_tiers.get(kind, self.model_routes)) for kind in self.task_kinds
        }

    def choose_task_kind(self, context: TaskContext) -> str:
        """The kind of the next model step; ValueError if ``task_kind`` names an unknown one."""
        if self.task_kind is None:
            return self.task_kinds[0]
        kind = self.task_kind(context)
        if kind not in self.task_kinds:
            raise ValueError(
                f"agent {self.name!r}: task_kind returned {kind!r}, not one of {self.task_kinds}"
            )
        return kind

    def tool(self, name: str) -> Tool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def render_system_prompt(self, validated_input: BaseModel, template: str | None = None) -> str:
        """The system prompt for one input, from ``template`` (default: the code's)."""
        source = self.system_prompt if template is None else template
        return Template(source).safe_substitute(self.prompt_context(validated_input))

    @property
    def allowed_placeholders(self) -> frozenset[str]:
        """The ``$names`` a stored prompt version may use (see ``prompt_placeholders``)."""
        if self.prompt_placeholders is not None:
            return frozenset(self.prompt_placeholders)
        return frozenset(Template(self.system_prompt).get_identifiers())

    @property
    def prompt_version(self) -> str:
        """A short content hash of the code-declared prompt template and tool schemas.

        A fingerprint of the code only. Runs no longer record it: they record the stored
        prompt version the ``production`` label points at (``releases.prompts``,
        ``PromptVersion.ref``), which operators change without a deploy.
        """
        blob = json.dumps(
            {"prompt": self.system_prompt, "tools": [t.openai_schema() for t in self.tools]},
            sort_keys=True,
        )
        return "sha-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
