from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Evals"

    def ready(self) -> None:
        # The runtime tells whoever runs sandboxed runs that one settled, without knowing
        # of evals (runs.kernel.sandbox); the eval scores its task examples that way.
        from evals.gate import promotion_evidence
        from evals.runner import sandbox_run_settled
        from releases.gate import gate_check_register
        from runs.kernel.sandbox import sandbox_settled_register

        sandbox_settled_register(sandbox_run_settled)
        # And production takes a release only with a passing eval (releases.gate).
        gate_check_register(promotion_evidence)
