"""Filtered search of the audit log at 1,000,000 events (budget: <= 100 ms p95 server time).

What: the server time of the auditor's search page (audit.views.audit_list) over a
chained log of 1,000,000 events, for a mix of filters an auditor uses: none, an actor, an
object, a verb prefix, a trace id, a time range, combinations, a page deep in the log
(keyset on seq), and the htmx results fragment.

How:

1. A fresh bench database (harness.prepare_database). 1,000,000 events spread over a
   year: 60 actors, 14 verbs over runs, approval requests, queues and dead letters, one
   trace per run (about 8 events each). Every event is chained exactly as audit_record
   chains it: the hashes are computed in this process with audit.log.event_hash
   (one canonical form, no second implementation in SQL) and the rows are loaded with
   COPY, the trigger in place (inserts are allowed). Then VACUUM ANALYZE.
2. An auditor (the role's model permission audit.view_auditevent).
3. In this process, through Django's test client (session, authentication, templates),
   ``--requests`` GETs cycling through the filters below, each timed from the client's
   call to the rendered response.
4. With ``--verify``, also the time ``manage.py audit_verify``'s walk takes over the chain.

Run: ``.venv/bin/python bench/audit_search.py`` (``--events`` to change the size). One
JSON line.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import harness

ACTORS = [f"user{i:02d}" for i in range(50)] + ["worker"] * 8 + ["system"] * 2
VERBS = (
    ("run", "run.submitted"),
    ("run", "run.started"),
    ("run", "run.waiting_for_approval"),
    ("run", "run.resumed"),
    ("run", "run.succeeded"),
    ("run", "run.failed"),
    ("approval_request", "request.opened"),
    ("approval_request", "request.claimed"),
    ("approval_request", "request.approve"),
    ("approval_request", "request.reject"),
    ("approval_request", "request.escalated"),
    ("queue", "queue.changed"),
    ("queue", "queue.permission_granted"),
    ("dead_letter", "dead_letter.requeued"),
)
EVENTS_PER_TRACE = 8
START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_S = 365 * 24 * 3600


def _rows(events: int) -> Any:
    """The seed events in seq order, chained: (row for COPY, its hash)."""
    from audit.log import GENESIS_HASH, event_hash

    rng = random.Random(7)
    prev = GENESIS_HASH
    step_us = YEAR_S * 1_000_000 // events
    trace = ""
    run_id = ""
    for seq in range(1, events + 1):
        if seq % EVENTS_PER_TRACE == 1:
            trace = uuid.UUID(int=rng.getrandbits(128)).hex
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
        object_type, verb = VERBS[rng.randrange(len(VERBS))]
        object_id = run_id if object_type == "run" else str(rng.randrange(1, 200_000))
        actor = "worker" if object_type == "run" else ACTORS[rng.randrange(len(ACTORS))]
        created_at = START + timedelta(microseconds=seq * step_us)
        before = {"state": "pending"}
        after = {"state": verb.rsplit(".", 1)[1], "n": seq % 1000}
        fields = {
            "seq": seq,
            "created_at": created_at,
            "actor_id": None,
            "actor_label": actor,
            "verb": verb,
            "object_type": object_type,
            "object_id": object_id,
            "before": before,
            "after": after,
            "trace_id": trace,
            "prev_hash": prev,
        }
        digest = event_hash(**fields)
        yield fields, digest
        prev = digest


def seed(events: int) -> dict[str, Any]:
    """Load the chained events with COPY; return a few values to search for."""
    import json

    from django.db import connection

    samples: dict[str, Any] = {}
    columns = (
        "seq, created_at, actor_id, actor_label, verb, object_type, object_id, "
        "before, after, trace_id, prev_hash, hash"
    )
    connection.ensure_connection()
    with connection.cursor() as cursor:
        pg = cursor.cursor if hasattr(cursor, "cursor") else cursor
        with pg.copy(f"COPY agentdesk_auditevent ({columns}) FROM STDIN") as copy:
            for fields, digest in _rows(events):
                seq = fields["seq"]
                copy.write_row(
                    (
                        seq,
                        fields["created_at"],
                        None,
                        fields["actor_label"],
                        fields["verb"],
                        fields["object_type"],
                        fields["object_id"],
                        json.dumps(fields["before"]),
                        json.dumps(fields["after"]),
                        fields["trace_id"],
                        fields["prev_hash"],
                        digest,
                    )
                )
                if seq == events // 3:
                    samples["trace_id"] = fields["trace_id"]
                    samples["run_id"] = (
                        fields["object_id"] if fields["object_type"] == "run" else ""
                    )
                if (
                    not samples.get("run_id")
                    and seq > events // 3
                    and fields["object_type"] == "run"
                ):
                    samples["run_id"] = fields["object_id"]
                if seq % 100_000 == 0:
                    harness.note(f"audit_search: {seq} events")
    connection.commit() if not connection.get_autocommit() else None
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE agentdesk_auditevent")
    samples["middle"] = events // 2
    return samples


def auditor() -> Any:
    from django.contrib.auth import get_user_model

    from agentdesk.roles import roles_sync

    user = get_user_model().objects.create_user("bench-auditor", password="x")
    user.groups.add(roles_sync()["auditor"])
    return user


def requests_to_time(samples: dict[str, Any]) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    htmx = {"HTTP_HX_REQUEST": "true"}
    june = "2025-06-01T00:00"
    june_8 = "2025-06-08T00:00"
    july = "2025-07-01T00:00"
    return [
        ("newest", {}, {}),
        ("actor", {"actor": "user17"}, htmx),
        ("object", {"object_type": "run", "object_id": samples["run_id"]}, htmx),
        ("verb_prefix", {"verb": "request."}, htmx),
        ("rare_verb", {"verb": "dead_letter."}, htmx),
        ("trace", {"trace_id": samples["trace_id"]}, htmx),
        ("week_in_june", {"since": june, "until": june_8}, htmx),
        (
            "actor_verb_month",
            {"actor": "user03", "verb": "request.app", "since": june, "until": july},
            htmx,
        ),
        ("deep_page", {"before": str(samples["middle"])}, htmx),
        ("actor_deep_page", {"actor": "user42", "before": str(samples["middle"])}, htmx),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--verify", action="store_true", help="also time audit_verify")
    args = parser.parse_args()

    harness.note("audit_search: preparing the bench database")
    harness.prepare_database()
    harness.django_setup(AGENTDESK_ALLOWED_HOSTS="testserver")
    from django.test import Client
    from django.urls import reverse

    started = time.monotonic()
    samples = seed(args.events)
    seeded_s = time.monotonic() - started
    harness.note(f"audit_search: seeded in {seeded_s:.0f} s")
    client = Client()
    client.force_login(auditor())
    url = reverse("audit:list")
    plan = requests_to_time(samples)
    timings: dict[str, list[float]] = {name: [] for name, _, _ in plan}
    for index in range(args.warm_up + args.requests):
        name, params, headers = plan[index % len(plan)]
        began = time.perf_counter()
        response = client.get(url, params, **headers)
        elapsed_ms = (time.perf_counter() - began) * 1000
        if response.status_code != 200 or b"<tbody>" not in response.content:
            raise RuntimeError(f"{name}: HTTP {response.status_code}, or no rows")
        if index >= args.warm_up:
            timings[name].append(elapsed_ms)
    every = [ms for values in timings.values() for ms in values]
    result: dict[str, Any] = {
        "bench": "audit_search",
        "p95_ms": round(harness.percentile(every, 95), 1),
        "events": args.events,
        "median_ms": round(harness.median(every), 1),
        "seed_s": round(seeded_s),
        "p95_ms_by_request": {
            name: round(harness.percentile(values, 95), 1) for name, values in timings.items()
        },
    }
    if args.verify:
        from audit.log import audit_chain_verify

        began = time.perf_counter()
        verdict = audit_chain_verify()
        result["verify_s"] = round(time.perf_counter() - began, 1)
        result["verify_intact"] = verdict.as_dict()["intact"]
    harness.emit(result)


if __name__ == "__main__":
    main()
