"""The runs list scoped by queue: a reviewer's /runs/ against an operator's (every run).

What: the server time of the runs list fragment (the htmx refresh the page makes every
3 s) at page 1 and page 20, for a reviewer who may see 5 queues out of 50 (about 10,000
of 100,000 runs, each with one pending request), and for an operator, who sees every run
by role and so reads the list as everyone did before runs were scoped; and the queries
each costs. No budget of DESIGN.md covers this page; the operator's figure, measured in
the same minutes, is the baseline of the ratio.

How: the inbox benchmark's data (bench/inbox.py: one run, action and pending request per
row, ``VACUUM ANALYZE``), then ``--requests`` GETs per persona, alternating, timed through
Django's test client (the whole middleware stack), the first ``--warm-up`` dropped.

Run: ``.venv/bin/python bench/runs_list.py`` (``--pending`` to change the total).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import harness
import inbox

PLAN = (("page_1", {}), ("page_20", {"page": "20"}))


def queries(client: Any, params: dict[str, str]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get("/runs/", params, HTTP_HX_REQUEST="true")
    assert response.status_code == 200, response.status_code
    return len(captured.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=10)
    args = parser.parse_args()

    harness.prepare_database()
    harness.django_setup(AGENTDESK_ALLOWED_HOSTS="testserver")
    from django.contrib.auth import get_user_model
    from django.test import Client

    from agentdesk.roles import roles_sync

    inbox.seed(args.pending)
    operator = get_user_model().objects.create_user("bench-operator")
    operator.groups.add(roles_sync()["operator"])
    clients = {}
    for name, user in (("reviewer", inbox.reviewer()), ("operator", operator)):
        clients[name] = Client()
        clients[name].force_login(user)
    timings: dict[str, list[float]] = {}
    for index in range(args.warm_up + args.requests):
        for persona, client in clients.items():
            for page, params in PLAN:
                began = time.perf_counter()
                response = client.get("/runs/", params, HTTP_HX_REQUEST="true")
                elapsed_ms = (time.perf_counter() - began) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{persona} {page}: HTTP {response.status_code}")
                if index >= args.warm_up:
                    timings.setdefault(f"{persona}_{page}", []).append(elapsed_ms)
    result: dict[str, Any] = {"bench": "runs_list", "pending": args.pending}
    for name, values in timings.items():
        result[f"{name}_median_ms"] = round(harness.median(values), 1)
        result[f"{name}_p95_ms"] = round(harness.percentile(values, 95), 1)
    for page, _ in PLAN:
        result[f"ratio_{page}_median"] = round(
            result[f"reviewer_{page}_median_ms"] / result[f"operator_{page}_median_ms"], 2
        )
    result["queries"] = {name: queries(client, {}) for name, client in clients.items()}
    harness.emit(result)


if __name__ == "__main__":
    main()
