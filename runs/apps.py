from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # The step kernel enqueues through runs.kernel.transitions, which must not import the task
        # (the task runs the kernel): the task's sender is registered there instead. Looked
        # up when it sends, so a test that replaces ``run_step.apply_async`` is obeyed.
        from runs.kernel.transitions import step_sender_register
        from runs.tasks import run_step

        def send(run_id: str, seq: int, countdown_s: float) -> None:
            run_step.apply_async((run_id, seq), countdown=countdown_s)

        step_sender_register(send)
