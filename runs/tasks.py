"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from runs import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_step(run_id: str, seq: int) -> None:
    services.run_step_execute(run_id=run_id, seq=seq, chain_s=settings.AGENTDESK_STEP_CHAIN_S)


@shared_task(ignore_result=True)
def recover_stalled_runs() -> int:
    return services.runs_recover_stalled()
