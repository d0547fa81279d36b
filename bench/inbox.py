"""The reviewer's inbox at 100,000 pending requests (budget: <= 50 ms p95 server time).

What: the server time of the inbox page, and of its list fragment (the htmx re-fetch a
live update triggers), for a reviewer who may see 5 queues out of 50, with 100,000
pending requests spread evenly over the 50 queues (so about 10,000 visible); and the
number of SQL queries one page costs, at two page sizes, which must be the same.

How:

1. A fresh bench database; 50 queues; one run, one action and one pending approval
   request per row, created with ``bulk_create`` in batches (about a minute), then
   ``VACUUM ANALYZE`` (as autovacuum would have by then).
2. A reviewer with view and decide permissions (django-guardian) on 5 queues.
3. In this process, through Django's test client (the whole middleware stack: session,
   authentication, CSRF, templates), ``--requests`` GETs cycling through: the full page,
   the htmx list fragment, filtered by queue, by tool, by age, and page 20. Each is timed
   from the client's call to the rendered response: server time without the network.
4. Queries per page: the same list fragment counted with CaptureQueriesContext at page
   sizes 10 and 50 (the view's PAGE_SIZE set for the count).

Run: ``.venv/bin/python bench/inbox.py`` (``--pending`` to change the total). One JSON line.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

import harness

QUEUES = 50
VISIBLE = 5
BATCH = 5000
TOOLS = ("issue_refund", "cancel_order", "send_reply")


def seed(pending: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from reviews.models import ApprovalRequest, Queue
    from runs.models import Action, Run, RunState

    queues = Queue.objects.bulk_create(
        [Queue(slug=f"bench-{i:02d}", name=f"Bench queue {i:02d}") for i in range(QUEUES)]
    )
    now = timezone.now()
    made = 0
    while made < pending:
        size = min(BATCH, pending - made)
        runs = Run.objects.bulk_create(
            [
                Run(
                    agent_name="support",
                    input={"ticket_id": f"T-{(made + i) % 10000:04d}", "subject": "bench"},
                    state=RunState.WAITING_FOR_APPROVAL,
                    trace_id=f"bench{made + i:027d}",
                    prompt_version="bench",
                    model="gpt-4o-mini",
                    request_hash="bench",
                )
                for i in range(size)
            ]
        )
        actions = Action.objects.bulk_create(
            [
                Action(
                    run=run,
                    proposed_seq=1,
                    index=0,
                    tool_call_id=f"call_{made + i}",
                    tool=TOOLS[(made + i) % len(TOOLS)],
                    raw_arguments="{}",
                    arguments={"order_id": "SO-1002", "amount": "29.00"},
                    args_hash=f"{made + i:064d}",
                    idempotency_key=f"bench:{made + i}",
                )
                for i, run in enumerate(runs)
            ]
        )
        ApprovalRequest.objects.bulk_create(
            [
                ApprovalRequest(
                    queue=queues[(made + i) % QUEUES],
                    run=run,
                    action=action,
                    agent_name="support",
                    tool=action.tool,
                    risk="irreversible",
                    arguments={"order_id": "SO-1002", "amount": "29.00", "reason": "damaged"},
                    args_hash=action.args_hash,
                    rule="risk",
                    routing_reason="issue_refund is irreversible",
                    policy_version="pol-bench",
                    rationale="The teapot arrived broken.",
                    confidence=0.9,
                    context={"input": run.input, "history": [], "records": {}},
                    due_at=now + timedelta(minutes=(made + i) % 600 - 60),
                )
                for i, (run, action) in enumerate(zip(runs, actions, strict=True))
            ]
        )
        made += size
        harness.note(f"inbox: {made} pending requests")
    with connection.cursor() as cursor:
        # What autovacuum would have done by then: statistics, and the visibility map
        # that lets the count be an index-only scan.
        cursor.execute("VACUUM ANALYZE")


def reviewer() -> Any:
    from django.contrib.auth import get_user_model
    from guardian.shortcuts import assign_perm

    from agentdesk.roles import roles_sync
    from reviews.models import Queue

    user = get_user_model().objects.create_user("bench-reviewer", password="x")
    user.groups.add(roles_sync()["reviewer"])
    for queue in Queue.objects.filter(slug__startswith="bench-").order_by("slug")[:VISIBLE]:
        assign_perm("reviews.view_queue", user, queue)
        assign_perm("reviews.decide_queue", user, queue)
    return user


def requests_to_time() -> list[tuple[str, dict[str, str], dict[str, str]]]:
    from reviews.models import Queue

    queue = Queue.objects.filter(slug__startswith="bench-").order_by("slug").first()
    assert queue is not None
    htmx = {"HTTP_HX_REQUEST": "true"}
    return [
        ("page", {}, {}),
        ("list", {}, htmx),
        ("by_queue", {"queue": str(queue.pk)}, htmx),
        ("by_tool", {"tool": "issue_refund"}, htmx),
        ("by_age", {"older_than": "30"}, htmx),
        ("page_20", {"page": "20"}, htmx),
    ]


def queries_at(client: Any, page_size: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from reviews import views

    original = views.PAGE_SIZE
    views.PAGE_SIZE = page_size
    try:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("reviews:inbox"), HTTP_HX_REQUEST="true")
        assert response.status_code == 200, response.status_code
    finally:
        views.PAGE_SIZE = original
    return len(captured.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=20)
    args = parser.parse_args()

    harness.note("inbox: preparing the bench database")
    harness.prepare_database()
    harness.django_setup(AGENTDESK_ALLOWED_HOSTS="testserver")
    from django.test import Client
    from django.urls import reverse

    started = time.monotonic()
    seed(args.pending)
    harness.note(f"inbox: seeded in {time.monotonic() - started:.0f} s")
    client = Client()
    client.force_login(reviewer())
    url = reverse("reviews:inbox")
    plan = requests_to_time()
    timings: dict[str, list[float]] = {name: [] for name, _, _ in plan}
    for index in range(args.warm_up + args.requests):
        name, params, headers = plan[index % len(plan)]
        began = time.perf_counter()
        response = client.get(url, params, **headers)
        elapsed_ms = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {response.status_code}")
        if index >= args.warm_up:
            timings[name].append(elapsed_ms)
    every = [ms for values in timings.values() for ms in values]
    harness.emit(
        {
            "bench": "inbox",
            "p95_ms": round(harness.percentile(every, 95), 1),
            "queries": queries_at(client, 50),
            "pending": args.pending,
            "median_ms": round(harness.median(every), 1),
            "queries_at_page_size_10": queries_at(client, 10),
            "queues": QUEUES,
            "visible_queues": VISIBLE,
            "p95_ms_by_request": {
                name: round(harness.percentile(values, 95), 1) for name, values in timings.items()
            },
        }
    )


if __name__ == "__main__":
    main()
