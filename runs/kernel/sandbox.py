"""The sandbox seam: what an eval or shadow run does where a live run would act.

A sandboxed run (``Run.is_sandbox``: an eval's example, a shadow of a candidate release)
goes through the same step kernel as a live one, so it is judged by the same policy and
served by the same gateway; it differs at three points, each asked here:

1. a write or irreversible tool is never called: its call is recorded like any other and
   answered by the tool's ``sandbox`` function, which reads and never writes, or by a
   plain acknowledgement (``sandbox_function``); read tools run for real, against the
   agent's data;
2. a call the policy sends to review is recorded with that verdict and goes on as if a
   person had approved it as proposed: no request reaches a reviewer's queue;
3. a run that would need a person (its fallback chain exhausted, a limit with
   ``on_exceeded=escalate``) stops in ``needs_human`` without opening a request.

And a money-moving call of a sandboxed run never counts towards a subject's sums (its
action keeps no subject), so a live customer's next refund is not judged against
refunds that never happened.

Whoever runs sandboxed runs learns that one has settled (ended, or stopped for a person)
through a listener it registers (``sandbox_settled_register``); the evals app scores its
examples that way. Called inside the settling step's transaction: a listener that does
more than a few writes should defer the work with ``transaction.on_commit``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agents.risk import Risk

if TYPE_CHECKING:
    from agents.definition import Tool, ToolContext, ToolFunction
    from runs.models import Run

SettledListener = Callable[["Run"], None]
_settled_listeners: list[SettledListener] = []


def sandbox_settled_register(listener: SettledListener) -> None:
    """Call ``listener`` with every sandboxed run that settles (idempotent per function)."""
    if listener not in _settled_listeners:
        _settled_listeners.append(listener)


def sandbox_settled(run: Run) -> None:
    """Tell the listeners that ``run`` has settled; nothing for a live run."""
    if not run.is_sandbox:
        return
    for listener in _settled_listeners:
        listener(run)


def sandbox_withholds(run: Run, tool: Tool) -> bool:
    """Whether this call is answered by the sandbox instead of the tool."""
    return run.is_sandbox and tool.risk != Risk.READ


def sandbox_function(tool: Tool) -> ToolFunction:
    """What answers a withheld call: the tool's own ``sandbox``, or an acknowledgement.

    Either way the result says ``"sandbox": true``, so the eval, a verifier and the run
    page can tell it from a real one.
    """
    own = tool.sandbox

    def answer(validated: Any, context: ToolContext) -> Mapping[str, Any]:
        if own is not None:
            return {**own(validated, context), "sandbox": True}
        return {
            "status": "accepted",
            "sandbox": True,
            "note": f"{tool.name} was not run (sandbox); its call was recorded.",
            "arguments": json.loads(validated.model_dump_json()),
        }

    return answer
