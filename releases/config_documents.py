"""Configuration documents: the JSON a configuration version holds, as pydantic models.

A version's ``config`` is one ``ConfigDocument``: the policy (scope, review risks,
thresholds, rules, queues, foreign subjects, the sums window), ``limits``
(``LimitsDoc``), ``model_tiers`` (per task kind a list of ``RouteDoc``), the escalation
queue and the SLA. The models say what each field may hold; ``document_validate`` checks
a document against them and ``ConfigDocument.run_config`` turns a valid one into the
``RunConfig`` its runs use.

Every error at once. Validation does not stop at the first problem: every field's type
and range, every rule's CEL (it parses, it names only the variables a rule is given),
every endpoint alias, task kind and tool name is checked in one pass, and
``document_refusal`` adds the queues that do not exist. A bad document raises one
``ConfigRefused`` whose ``errors`` are ``(location, message)`` pairs, the location
naming the field as the JSON spells it, lists counted from 1: ``rules[2].when: unknown
variable 'ammount'``, ``model_tiers.decision[1].endpoint: ...``. The operator's form shows
each one next to its field.

Two readings (the validation ``context``'s ``strict``):

- strict, for a new version: limits above 0, exactly the agent's task kinds, endpoint
  aliases that are configured, tools the agent has, rules that name known variables;
- lenient, for a stored version read by a run: it is read as it was stored (version 1
  holds the code's limits unchecked, a deadline of 0 s included), a task kind the code
  has since added takes the code's tier, and an alias since removed from the environment
  is skipped at run time, so a deploy never makes a stored version unreadable.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agents.definition import Agent, Limits, ModelRoute, OnLimit, Risk
from policy.engine import (
    DEFAULT_SUMS_WINDOW_HOURS,
    FOREIGN_BLOCK,
    FOREIGN_CHOICES,
    SUMS_WINDOW_MAX_HOURS,
    Policy,
    PolicyInvalid,
    ReviewRule,
    compile_rule,
)

POLICY_FIELDS = (
    "scope",
    "review_risks",
    "thresholds",
    "rules",
    "queue",
    "tool_queues",
    "on_foreign_subject",
    "sums_window_hours",
)
RUNTIME_FIELDS = ("limits", "model_tiers", "escalation_queue", "sla_minutes")
CONFIG_FIELDS = (*POLICY_FIELDS, *RUNTIME_FIELDS)
RULE_FIELDS = ("name", "when", "tools", "queue", "approvals", "description")
LIMIT_FIELDS = (
    "max_steps",
    "max_tool_calls",
    "max_tokens",
    "max_cost_usd",
    "deadline_s",
    "on_exceeded",
)
ROUTE_FIELDS = ("model", "endpoint")
LIMIT_MAX = 1_000_000_000  # past this a "limit" is none, and a deadline overflows a date
MODEL_NAME_MAX = 100
SLA_MINUTES_MAX = 525_600  # a year
# What a rule's CEL may read: the activation policy.engine.policy_evaluate builds
# (tests/agentdesk/test_config_documents.py holds the two together), and CEL's own type
# names (``type(amount) == double``).
RULE_VARIABLES = (
    "args",
    "input",
    "tool",
    "risk",
    "confidence",
    "run",
    "subject",
    "amount",
    "facts",
    "sums",
)
_CEL_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"}
)
# CEL macros whose first argument names a variable bound inside them: list.all(x, x > 0).
_CEL_BINDING_MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})


# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigError:
    """One reason a document is refused: where (``rules[2].when``; "" for all of it), why."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigRefused(ValueError):
    """A configuration change that cannot be made: every reason, each where it applies.

    ``errors`` holds them all; ``str()`` is one per line, for a person.
    """

    def __init__(self, message: str = "", *, errors: Sequence[ConfigError] = ()) -> None:
        self.errors: tuple[ConfigError, ...] = tuple(errors) or (ConfigError("", message),)
        super().__init__("\n".join(str(error) for error in self.errors))


Loc = tuple[str | int, ...]


def _error(message: str) -> PydanticCustomError:
    # The message goes in the context, not the template: a value shown in it may hold braces.
    return PydanticCustomError("config", "{message}", {"message": message})


def _bad() -> PydanticCustomError:
    """A value out of the field's bounds: the field's ``_says`` hint replaces this message."""
    return PydanticCustomError("config_bad", "is not valid here")


def _raise(errors: Iterable[tuple[Loc, str, Any]]) -> None:
    """Raise the (location, message, input) errors as one ValidationError, if there are any.

    Raised inside a validator, pydantic merges these into the document's errors under the
    field's location, beside the other fields' errors.
    """
    lines: list[InitErrorDetails] = [
        {"type": _error(message), "loc": loc, "input": value} for loc, message, value in errors
    ]
    if lines:
        raise ValidationError.from_exception_data("configuration", lines)


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "config":
        return str(error["ctx"]["message"])
    if error["type"] == "missing":
        return "is required"
    return str(error["msg"])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _says(hint: str) -> WrapValidator:
    """The field's own type and range errors become one message: ``must be <hint>, not <x>``.

    Errors a part of it already explains (an entry's own message) are kept where they are.
    """

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            kept = [
                (e["loc"], _message(e), e["input"]) for e in exc.errors() if e["type"] == "config"
            ]
            if len(kept) < exc.error_count():
                kept.insert(0, ((), f"must be {hint}, not {_shown(value)}", value))
            _raise(kept)
            raise  # unreachable: _raise raised

    return WrapValidator(validate)


def _also(check: Callable[[Any, ValidationInfo], list[tuple[Loc, str]]]) -> WrapValidator:
    """Validate the field, and report ``check``'s findings on the raw value beside its errors.

    For checks across entries (two rules with one name, task kinds missing) that must not
    wait until every entry is valid.
    """

    def validate(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        found = [(loc, message, value) for loc, message in check(value, info)]
        try:
            validated = handler(value)
        except ValidationError as exc:
            _raise([*((e["loc"], _message(e), e["input"]) for e in exc.errors()), *found])
            raise
        _raise(found)
        return validated

    return WrapValidator(validate)


def _strict(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("strict", True))


def _context(info: ValidationInfo, key: str) -> Any:
    return (info.context or {}).get(key)


# --- field types -------------------------------------------------------------------------------


def _slug(value: str) -> str:
    try:
        validate_slug(value)
    except DjangoValidationError:
        raise _bad() from None
    return value


def _slug_or_none(value: str | None) -> str | None:
    return _slug(value) if value is not None else None


def _slug_if_given(value: str | None) -> str | None:
    return _slug(value) if value else None  # a rule's queue: "" is none, as the form posts it


SLUG_HINT = "a queue slug (letters, digits, hyphens, underscores)"
Slug = Annotated[str, AfterValidator(_slug), _says(SLUG_HINT)]
OptionalSlug = Annotated[str | None, AfterValidator(_slug_or_none), _says(SLUG_HINT)]
RuleQueue = Annotated[str | None, AfterValidator(_slug_if_given), _says(SLUG_HINT)]
Threshold = Annotated[float, Field(ge=0, le=1), _says("a number between 0 and 1")]
Names = Annotated[list[str], _says("a list of tool names")]


def _unknown_tools(named: Callable[[Any], Collection[Any]]) -> Callable[..., list[tuple[Loc, str]]]:
    """A check that the tools a field names are the agent's (strict reading only)."""

    def check(value: Any, info: ValidationInfo) -> list[tuple[Loc, str]]:
        tools = _context(info, "tools")
        if not _strict(info) or tools is None:
            return []
        try:
            unknown = sorted({str(name) for name in named(value)} - set(tools))
        except TypeError:  # not a list or a mapping: the field's own check says so
            return []
        if not unknown:
            return []
        return [
            ((), f"names tools the agent does not have: {unknown}; its tools are {sorted(tools)}")
        ]

    return check


def _list_names(value: Any) -> Collection[Any]:
    if not isinstance(value, list):
        return ()
    return [v for v in value if isinstance(v, str)]


def _mapping_keys(value: Any) -> Collection[Any]:
    return list(value) if isinstance(value, Mapping) else ()


# --- the models --------------------------------------------------------------------------------


_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


class _Doc(BaseModel):
    """A part of a document: strict types (no "2" for 2), no fields it does not declare."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    # How the part is described when it is not an object at all.
    WHAT: ClassVar[str] = "an object"

    @model_validator(mode="wrap")
    @classmethod
    def _known_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            fields = ", ".join(cls.model_fields)
            errors = []
            for e in exc.errors():
                if e["type"] == "extra_forbidden":
                    message = f"is not a field here; the fields are {fields}"
                elif e["type"] in _NOT_AN_OBJECT and not e["loc"]:
                    message = f"must be {cls.WHAT}"
                else:
                    message = _message(e)
                errors.append((e["loc"], message, e["input"]))
            _raise(errors)
            raise


def _rule_name(value: str) -> str:
    if not value.strip():
        raise _error("a rule needs a name")
    return value.strip()


def cel_variables(expression: str) -> set[str]:
    """The free variables a parsed CEL expression reads (a macro's own variable excluded)."""
    tree = compile_rule(expression).ast
    bound: set[str] = set()
    read: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "ident":
            read.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and str(node.children[1]) in _CEL_BINDING_MACROS:
            arguments = node.children[-1]
            if len(node.children) < 3 or not getattr(arguments, "children", None):
                continue
            first = arguments.children[0]
            if hasattr(first, "iter_subtrees"):
                idents = [n for n in first.iter_subtrees() if n.data == "ident"]
                if len(idents) == 1:
                    bound.add(str(idents[0].children[0]))
    return read - bound


def _cel(value: str, info: ValidationInfo) -> str:
    try:
        compile_rule(value)
    except PolicyInvalid as exc:
        raise _error(str(exc).rstrip()) from None
    if _strict(info):
        unknown = sorted(cel_variables(value) - set(RULE_VARIABLES) - _CEL_TYPE_NAMES)
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            close = difflib.get_close_matches(unknown[0], RULE_VARIABLES, n=1)
            raise _error(
                f"unknown variable{'s' if len(unknown) > 1 else ''} {listed}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + "; a rule reads "
                + ", ".join(RULE_VARIABLES)
            )
    return value


class RuleDoc(_Doc):
    """One review rule: calls its CEL expression matches wait for a person (policy.ReviewRule)."""

    WHAT = "an object with a name and a CEL expression (when)"

    name: Annotated[str, _says("text"), AfterValidator(_rule_name)]
    when: Annotated[str, _says("a CEL expression, as text"), AfterValidator(_cel)]
    tools: Annotated[Names, _also(_unknown_tools(_list_names))] = []
    queue: RuleQueue = None
    approvals: Annotated[int, Field(ge=1), _says("a whole number of at least 1")] = 1
    description: Annotated[str, _says("text")] = ""

    def rule(self) -> ReviewRule:
        return ReviewRule(
            name=self.name,
            when=self.when,
            tools=tuple(self.tools),
            queue=self.queue,
            approvals=self.approvals,
            description=self.description,
        )


LIMIT_HINT = f"a whole number greater than 0 (at most {LIMIT_MAX})"
COST_HINT = 'an amount in USD greater than 0, as a decimal string such as "0.25"'


def _present(value: Any) -> Any:
    # A field left out is the agent's code value (the default, never validated); null is junk.
    if value is None:
        raise _bad()
    return value


def _above_zero_when_strict(value: Any, info: ValidationInfo) -> Any:
    if _strict(info) and value is not None and value <= 0:
        raise _bad()
    return value


def _decimal_text(value: Any) -> Any:
    """A decimal string ("0.25") as a Decimal; anything else is left to fail the type."""
    if isinstance(value, str) and len(value) <= 20:
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    if isinstance(value, Decimal):
        return value
    raise _bad()


WholeLimit = Annotated[
    Annotated[int, Field(ge=0, le=LIMIT_MAX)] | None,
    AfterValidator(_present),
    AfterValidator(_above_zero_when_strict),
    _says(LIMIT_HINT),
]


class LimitsDoc(_Doc):
    """The run's budget (agents.Limits); a field left out keeps the agent's code value."""

    WHAT = f"an object with the fields {', '.join(LIMIT_FIELDS)}"

    max_steps: WholeLimit = None
    max_tool_calls: WholeLimit = None
    max_tokens: WholeLimit = None
    max_cost_usd: Annotated[
        Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=LIMIT_MAX)] | None,
        BeforeValidator(_decimal_text),
        AfterValidator(_above_zero_when_strict),
        _says(COST_HINT),
    ] = None
    deadline_s: WholeLimit = None
    on_exceeded: Annotated[
        Annotated[OnLimit, Field(strict=False)] | None,  # "fail" is the member's value
        AfterValidator(_present),
        _says(f"one of {sorted(o.value for o in OnLimit)}"),
    ] = None

    def limits(self, default: Limits) -> Limits:
        given = {name: getattr(self, name) for name in LIMIT_FIELDS}
        return Limits(
            **{
                name: value if value is not None else getattr(default, name)
                for name, value in given.items()
            }
        )


def _model_name(value: str) -> str:
    if not 1 <= len(value) <= MODEL_NAME_MAX or any(
        c.isspace() or c == "," or not c.isprintable() for c in value
    ):
        raise _bad()
    return value


def _endpoint(value: str, info: ValidationInfo) -> str:
    # Aliases only: the URL and key behind one are the environment's and are never shown.
    configured = _context(info, "endpoints")
    if _strict(info) and configured is not None and value not in configured:
        raise _error(
            f"the endpoint {value!r} is not configured; the configured endpoint aliases are "
            f"{sorted(configured)}"
        )
    return value


class RouteDoc(_Doc):
    """One link of a tier's fallback chain: a model name at an endpoint alias."""

    WHAT = "an object with a model and an endpoint"

    model: Annotated[
        str,
        AfterValidator(_model_name),
        _says(
            f"a name of 1 to {MODEL_NAME_MAX} characters without spaces or commas",
        ),
    ]
    endpoint: Annotated[str, _says("an endpoint alias"), AfterValidator(_endpoint)] = "default"

    def route(self) -> ModelRoute:
        return ModelRoute(self.model, self.endpoint)


def _distinct_routes(routes: list[RouteDoc]) -> list[RouteDoc]:
    if not routes:
        raise _error("has no models: a task kind needs at least one")
    seen: list[ModelRoute] = []
    for route in routes:
        if route.route() in seen:
            raise _error(f"lists {route.route()} twice")
        seen.append(route.route())
    return routes


Tier = Annotated[list[RouteDoc], _says("a list of models"), AfterValidator(_distinct_routes)]


def _task_kinds(value: Any, info: ValidationInfo) -> list[tuple[Loc, str]]:
    kinds = _context(info, "kinds")
    if not _strict(info) or kinds is None or not isinstance(value, Mapping):
        return []
    found: list[tuple[Loc, str]] = [
        ((str(kind),), f"the agent has no task kind {kind!r}; its task kinds are {list(kinds)}")
        for kind in value
        if kind not in kinds
    ]
    found += [
        ((kind,), "has no models: a task kind needs at least one")
        for kind in kinds
        if kind not in value
    ]
    return found


def _unique_rule_names(value: Any, info: ValidationInfo) -> list[tuple[Loc, str]]:
    if not isinstance(value, list):
        return []
    first: dict[str, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, rule in enumerate(value):
        name = rule.get("name") if isinstance(rule, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            continue
        if name.strip() in first:
            found.append(
                (
                    (index, "name"),
                    f"rule names must be unique: rules[{first[name.strip()] + 1}] is also named "
                    f"{name.strip()!r}",
                )
            )
        else:
            first[name.strip()] = index
    return found


def _foreign(value: str) -> str:
    if value not in FOREIGN_CHOICES:
        raise _bad()
    return value


class ConfigDocument(_Doc):
    """A whole configuration version: the policy, then what else decides a run.

    A runtime section left out (a version stored before it existed) is the agent's code's.
    """

    WHAT = "an object"

    scope: Annotated[
        Annotated[list[str], Field()] | None,
        _says("a list of tool names, or null for every tool the agent has"),
        _also(_unknown_tools(_list_names)),
    ] = None
    review_risks: Annotated[
        list[Annotated[Risk, Field(strict=False)]],
        _says(f"a list of {sorted(risk.value for risk in Risk)}"),
    ] = [Risk.IRREVERSIBLE]
    thresholds: Annotated[
        dict[str, Threshold],
        _says("an object of tool names and numbers between 0 and 1"),
        _also(_unknown_tools(_mapping_keys)),
    ] = {}
    rules: Annotated[list[RuleDoc], _says("a list of rules"), _also(_unique_rule_names)] = []
    queue: Slug
    tool_queues: Annotated[
        dict[str, Slug],
        _says("an object of tool names and queue slugs"),
        _also(_unknown_tools(_mapping_keys)),
    ] = {}
    on_foreign_subject: Annotated[
        str, AfterValidator(_foreign), _says(f"one of {list(FOREIGN_CHOICES)}")
    ] = FOREIGN_BLOCK
    sums_window_hours: Annotated[
        int,
        Field(ge=1, le=SUMS_WINDOW_MAX_HOURS),
        _says(f"a whole number of hours from 1 to {SUMS_WINDOW_MAX_HOURS}"),
    ] = DEFAULT_SUMS_WINDOW_HOURS
    limits: LimitsDoc | None = None
    model_tiers: Annotated[
        dict[str, Tier] | None,
        _says("an object of each task kind and a list of models"),
        _also(_task_kinds),
    ] = None
    escalation_queue: OptionalSlug = None
    sla_minutes: Annotated[
        Annotated[int, Field(ge=1, le=SLA_MINUTES_MAX)] | None,
        _says(
            f"a whole number of minutes from 1 to {SLA_MINUTES_MAX}, or null for the queue's "
            "own SLA"
        ),
    ] = None

    def policy(self) -> Policy:
        return Policy(  # __post_init__ checks again what the fields checked
            scope=frozenset(self.scope) if self.scope is not None else None,
            review_risks=frozenset(self.review_risks),
            thresholds=dict(self.thresholds),
            rules=tuple(rule.rule() for rule in self.rules),
            queue=self.queue,
            tool_queues=dict(self.tool_queues),
            on_foreign_subject=self.on_foreign_subject,
            sums_window_hours=self.sums_window_hours,
        )

    def run_config(self, agent: Agent, *, policy: Policy | None = None) -> RunConfig:
        """What the document decides about the agent's runs; left-out sections are the code's.

        ``policy``: the one already built from this document (kept per content hash).
        """
        policy = policy or self.policy()
        tiers = dict(agent.declared_tiers)
        for kind, routes in (self.model_tiers or {}).items():
            tiers[kind] = tuple(route.route() for route in routes)
        return RunConfig(
            policy=policy,
            limits=self.limits.limits(agent.limits) if self.limits is not None else agent.limits,
            tiers=tiers if self.model_tiers is not None else agent.declared_tiers,
            escalation_queue=self.escalation_queue or policy.queue,
            sla_minutes=self.sla_minutes,
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything a version decides about a run: ``config_for_run`` gives a run its own."""

    policy: Policy
    limits: Limits
    # Per task kind: the primary model, then its fallbacks in order.
    tiers: Mapping[str, tuple[ModelRoute, ...]]
    escalation_queue: str
    sla_minutes: int | None  # None: the queue's own SLA

    def tier(self, kind: str) -> tuple[ModelRoute, ...]:
        return self.tiers[kind]


# --- validation --------------------------------------------------------------------------------


def location(loc: Loc) -> str:
    """A pydantic location as the JSON spells it, lists from 1: ``rules[2].when``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part + 1}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _errors(exc: ValidationError) -> list[ConfigError]:
    errors = []
    for e in exc.errors():
        message = _message(e)
        if not e["loc"] and e["type"] == "config" and message == "must be an object":
            message = "a configuration must be an object"
        errors.append(ConfigError(location(e["loc"]), message))
    return errors


def document_validate(config: Any, *, strict: bool, agent: Agent | None = None) -> ConfigDocument:
    """``config`` as a ConfigDocument; ConfigRefused with every error if it is not one.

    ``agent`` (strict only): also check the tools, task kinds and endpoints it names.
    """
    context: dict[str, Any] = {"strict": strict}
    if agent is not None:
        context |= {
            "tools": frozenset(tool.name for tool in agent.tools),
            "kinds": tuple(agent.task_kinds),
            "endpoints": frozenset(settings.AGENTDESK_LLM_ENDPOINTS),
        }
    try:
        return ConfigDocument.model_validate(config, context=context)
    except ValidationError as exc:
        raise ConfigRefused(errors=_errors(exc)) from None


def _queues_named(config: Any) -> list[tuple[str, str]]:
    """Every queue slug a document names, with its location, as far as it has a shape."""
    if not isinstance(config, Mapping):
        return []
    named: list[tuple[str, Any]] = [("queue", config.get("queue"))]
    tool_queues = config.get("tool_queues")
    if isinstance(tool_queues, Mapping):
        named += [(f"tool_queues.{tool}", slug) for tool, slug in tool_queues.items()]
    rules = config.get("rules")
    if isinstance(rules, list):
        named += [
            (f"rules[{i + 1}].queue", rule.get("queue"))
            for i, rule in enumerate(rules)
            if isinstance(rule, Mapping)
        ]
    named.append(("escalation_queue", config.get("escalation_queue")))
    return [(where, slug) for where, slug in named if isinstance(slug, str) and slug]


QueuesExisting = Callable[[Collection[str]], Collection[str]]

MISSING_QUEUE = (
    "the queue {slug!r} does not exist; name an existing queue, or have an admin create it "
    "first (Queues, or the admin): a request sent to a queue nobody reviews would wait unseen"
)


def document_refusal(
    config: Any, agent: Agent, *, queues_existing: QueuesExisting
) -> tuple[ConfigDocument | None, list[ConfigError]]:
    """A proposed document checked whole, strictly: the document, or every error in it.

    The queues it names are looked up (in one query) even when other fields are wrong,
    so an operator sees a misspelt queue in the same round as a rule that does not parse.
    """
    try:
        document: ConfigDocument | None = document_validate(config, strict=True, agent=agent)
        errors: list[ConfigError] = []
    except ConfigRefused as refused:
        document, errors = None, list(refused.errors)
    flagged = {error.location for error in errors}
    named = [(where, slug) for where, slug in _queues_named(config) if where not in flagged]
    if named:
        existing = set(queues_existing({slug for _, slug in named}))
        errors += [
            ConfigError(where, MISSING_QUEUE.format(slug=slug))
            for where, slug in named
            if slug not in existing
        ]
    return (document if not errors else None), errors


def run_config_checked(config: Any, agent: Agent, *, queues_existing: QueuesExisting) -> RunConfig:
    """A new version's RunConfig; ConfigRefused carrying every error if anything is wrong."""
    document, errors = document_refusal(config, agent, queues_existing=queues_existing)
    if document is None:
        raise ConfigRefused(errors=errors)
    return document.run_config(agent)


def run_config_stored(config: Any, agent: Agent, *, policy: Policy | None = None) -> RunConfig:
    """A stored version's RunConfig, read leniently; PolicyInvalid if its JSON is junk."""
    return policy_document(config).run_config(agent, policy=policy)


def policy_document(config: Any) -> ConfigDocument:
    """A stored version's document, read leniently; PolicyInvalid (every error) on junk."""
    try:
        return document_validate(config, strict=False)
    except ConfigRefused as refused:
        raise PolicyInvalid(str(refused)) from None
