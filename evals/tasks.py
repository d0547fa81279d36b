"""Celery tasks: thin, take ids, safe to run twice (evals.runner records a result once)."""

from __future__ import annotations

from celery import shared_task

from evals import runner


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def eval_example(result_id: int) -> None:
    runner.eval_example_run(result_id=result_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def eval_task_score(result_id: int) -> None:
    runner.eval_task_score(result_id=result_id)
