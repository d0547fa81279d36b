"""What a golden example holds, and the checks that keep a dataset runnable.

Two kinds (``kind``):

- a **step** example (level 1, "given this state, the right call"): ``messages``, the
  conversation up to a decision point; ``expected_calls``, the tool calls that are right
  there (each argument with a match mode: ``exact``, ``tolerance`` for numbers,
  ``one_of``, ``any``); ``forbidden_tools``, calls that are wrong (a reviewer's rejection:
  no call of that tool, ``reason`` saying why); and ``expected_policy``, what the policy
  should make of the expected call (``execute``, ``review`` in a queue, ``block``);
- a **task** example (level 2, "given this ticket, the right outcome"): a run ``input``
  (the agent's input schema), the ``expected_calls`` as a set or, with ``ordered``, a
  sequence, ``forbidden_tools``, the ``end_state`` expected and a ``rubric`` for the
  final answer.

The documents are pydantic models (``extra="forbid"``: a misspelt key is an error, not a
silently ignored field). ``examples_checked`` validates a whole list against the agent's
code (its tools and their argument schemas, its input schema) and reports every error at
once, each naming where it is: ``examples[3].expected_calls[0].arguments.amount``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from agents.definition import Agent

MAX_EXAMPLES = 5_000


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgumentMatch(_Doc):
    """How an argument of a call is compared with the expected one."""

    mode: Literal["exact", "tolerance", "one_of", "any"] = "exact"
    value: Any = None  # exact, tolerance
    tolerance: float | None = Field(default=None, ge=0)  # tolerance: |actual - value| <= it
    options: list[Any] | None = None  # one_of

    @model_validator(mode="after")
    def _complete(self) -> ArgumentMatch:
        if self.mode == "tolerance":
            if self.tolerance is None:
                raise ValueError("a tolerance match needs a tolerance")
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ValueError("a tolerance match needs a number as its value")
        if self.mode == "one_of" and not self.options:
            raise ValueError("a one_of match needs at least one option")
        return self


class ExpectedCall(_Doc):
    tool: str = Field(min_length=1)
    arguments: dict[str, ArgumentMatch] = Field(default_factory=dict)


class PolicyOutcome(_Doc):
    """What the policy should make of the expected call."""

    outcome: Literal["execute", "review", "block"]
    queue: str | None = None  # review: the queue it should land in

    @model_validator(mode="after")
    def _queue_only_for_review(self) -> PolicyOutcome:
        if self.queue is not None and self.outcome != "review":
            raise ValueError("only a review outcome names a queue")
        return self


class Message(_Doc):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _Example(_Doc):
    id: str = Field(min_length=1, max_length=100)
    tags: list[str] = Field(default_factory=list)
    note: str = Field(default="", max_length=500)
    # Where it came from: {"candidate": 12, "run": "<uuid>"}, {"run": ...}, or {} by hand.
    source: dict[str, Any] = Field(default_factory=dict)
    expected_calls: list[ExpectedCall] = Field(default_factory=list)
    forbidden_tools: list[str] = Field(default_factory=list)
    reason: str = Field(default="", max_length=2_000)


class StepExample(_Example):
    kind: Literal["step"]
    messages: list[Message] = Field(min_length=1)
    expected_policy: PolicyOutcome | None = None
    # The run's input, when known: the release's own system prompt is rendered from it in
    # place of the conversation's first (system) message, and the policy judges the call
    # against its subject. Without it the stored system message is sent as it is.
    input: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> StepExample:
        if not self.expected_calls and not self.forbidden_tools:
            raise ValueError("a step example expects a call or forbids one")
        return self


class EndState(_Doc):
    """How the run should end: its state, and words its final answer must contain."""

    state: Literal["succeeded", "failed", "needs_human", "dead_lettered", "cancelled"] | None = None
    output_contains: list[str] = Field(default_factory=list)


class TaskExample(_Example):
    kind: Literal["task"]
    input: dict[str, Any]
    ordered: bool = False
    end_state: EndState = Field(default_factory=EndState)
    rubric: str = Field(default="", max_length=4_000)


Example = Annotated[StepExample | TaskExample, Field(discriminator="kind")]
_EXAMPLE = TypeAdapter(Example)


class ExamplesRefused(ValueError):
    """Examples that cannot be stored; ``errors`` lists every one, each with its place."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def _pydantic_errors(exc: ValidationError, where: str) -> list[str]:
    errors = []
    for error in exc.errors(include_url=False):
        # The discriminated union puts the kind first in the location: drop it.
        loc = [str(part) for part in error["loc"] if part not in ("step", "task")]
        path = where + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)
        errors.append(f"{path}: {error['msg']}")
    return errors


def _argument_errors(agent: Agent, call: ExpectedCall, where: str) -> list[str]:
    tools = {tool.name: tool for tool in agent.tools}
    tool = tools.get(call.tool)
    if tool is None:
        known = ", ".join(sorted(tools))
        return [f"{where}.tool: {agent.name} has no tool {call.tool!r} (its tools: {known})"]
    fields = tool.input_schema.model_fields
    errors = []
    for name, match in call.arguments.items():
        at = f"{where}.arguments.{name}"
        field = fields.get(name)
        if field is None:
            errors.append(f"{at}: {call.tool} has no argument {name!r}")
            continue
        values = {"exact": [match.value], "tolerance": [match.value], "one_of": match.options}
        # The field's type with its constraints (gt=0, max_length...), as the tool checks it.
        annotated: Any = Annotated[field.annotation or Any, *field.metadata]
        adapter: TypeAdapter[Any] = TypeAdapter(annotated)
        for value in values.get(match.mode) or []:
            try:
                adapter.validate_python(value, strict=False)
            except ValidationError as exc:
                errors.append(f"{at}: {value!r} is not a valid {name}: {exc.errors()[0]['msg']}")
    return errors


def _tool_errors(agent: Agent, names: Sequence[str], where: str) -> list[str]:
    known = {tool.name for tool in agent.tools}
    return [
        f"{where}[{i}]: {agent.name} has no tool {name!r}"
        for i, name in enumerate(names)
        if name not in known
    ]


def example_checked(agent: Agent, raw: Any, *, where: str) -> tuple[dict[str, Any], list[str]]:
    """One example's canonical JSON and its errors (none: it may be stored)."""
    try:
        example = _EXAMPLE.validate_python(raw)
    except ValidationError as exc:
        return {}, _pydantic_errors(exc, where)
    errors: list[str] = []
    for i, call in enumerate(example.expected_calls):
        errors += _argument_errors(agent, call, f"{where}.expected_calls[{i}]")
    errors += _tool_errors(agent, example.forbidden_tools, f"{where}.forbidden_tools")
    if example.input is not None:
        try:
            agent.input_schema.model_validate(example.input)
        except ValidationError as exc:
            errors += _pydantic_errors(exc, f"{where}.input")
    return example.model_dump(mode="json", exclude_defaults=False), errors


def examples_checked(agent: Agent, raws: Sequence[Any]) -> list[dict[str, Any]]:
    """Every example canonical, or ExamplesRefused listing every error of every example."""
    if len(raws) > MAX_EXAMPLES:
        raise ExamplesRefused([f"examples: {len(raws)} examples; the limit is {MAX_EXAMPLES}"])
    examples: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raws):
        example, found = example_checked(agent, raw, where=f"examples[{i}]")
        errors += found
        if example:
            first = seen.setdefault(example["id"], i)
            if first != i:
                errors.append(f"examples[{i}].id: {example['id']!r} is examples[{first}]'s id too")
            examples.append(example)
    if errors:
        raise ExamplesRefused(errors)
    return examples
