from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from agentdesk.roles import DEMO_ACCOUNTS, demo_accounts_create
from evals.runner import eval_run_inline, eval_start
from examples.support.golden import AGENT, golden_dataset_ensure
from examples.support.seed import seed_shop
from releases.services import release_production
from runs.simulator import Simulator, SimulatorConfig


@contextmanager
def simulated_model() -> Iterator[None]:
    """The default endpoint answered by a model simulator in this process, meanwhile.

    The demo's first eval is the simulator's, always: seeding must not spend money on
    whatever model the environment names, and must not wait for ``manage.py demo`` to
    start one.
    """
    simulator = Simulator(SimulatorConfig()).start()
    endpoints = settings.AGENTDESK_LLM_ENDPOINTS
    saved = endpoints["default"]
    endpoints["default"] = {**saved, "base_url": simulator.base_url}
    try:
        yield
    finally:
        endpoints["default"] = saved
        simulator.stop()


class Command(BaseCommand):
    help = (
        "Create the role groups, the demo logins, the example shop's data and its gating "
        "dataset, with one eval of production on the model simulator. Idempotent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        demo_accounts_create()
        seed_shop()
        version = golden_dataset_ensure()
        if version is not None:
            self.stdout.write(
                f"Golden dataset {version.dataset}@{version.number}: "
                f"{len(version.examples)} examples, gating."
            )
            self._first_eval(version)
        self.stdout.write("Demo data ready. Logins:")
        for username, password, role in DEMO_ACCOUNTS:
            self.stdout.write(f"  {username:<9} / {password:<14} ({role or 'superuser'})")

    def _first_eval(self, version: Any) -> None:
        """One finished eval of production, so the eval pages and the gate have one.

        Only when the dataset was just made (a second seed changes nothing).
        """
        with simulated_model():
            evaluation = eval_start(
                release=release_production(agent_name=AGENT),
                dataset_version=version,
                user=None,
                queue=False,
            )
            evaluation = eval_run_inline(evaluation=evaluation)
        self.stdout.write(
            f"Eval {evaluation.pk} of production (the model simulator): "
            f"{evaluation.done}/{evaluation.total} examples, {evaluation.state}."
        )
