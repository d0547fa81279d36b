"""The heartbeat that keeps a live step's lease, so that only a dead worker's step expires.

A step holds a lease on its run (runs.kernel.stepping.claim). Before this module the lease had to
outlast the slowest step, 120 s, and a worker killed mid-step left its run for those 120 s
(a median of 123 s to recovery over 31 kills). Now the lease is short
(``AGENTDESK_STEP_LEASE_S``, 20 s by default) and renewed every
``AGENTDESK_STEP_HEARTBEAT_S`` (5 s) while the step runs, so:

- a slow step (a 60 s model call) keeps its lease for as long as it runs;
- a dead worker's lease stops being renewed and expires within one lease, and the
  stalled-run sweeper re-enqueues the step at its next sweep.

One daemon thread per process renews every lease its steps hold, in one UPDATE per beat,
whatever the number of steps (a threads-pool worker holds 150 at once): a thread per step
would be 150 threads and 150 UPDATEs. The thread is started by the first step a process
runs, and again in a forked child (a prefork pool child does not inherit threads).

A stuck step (a thread blocked for ever, a call without a timeout) must not hold its run
for ever either: a lease is renewed for at most ``AGENTDESK_STEP_MAX_S`` from its claim,
then left to expire like a dead worker's, and the step is redone elsewhere (the stuck
step's late commit, if it ever comes, finds the lease gone and records nothing).

The renewal writes only ``lease_expires_at``, where the lease token is still the one the
step holds: a lease that another worker took over after it expired is never renewed by
its old holder, and a commit racing a beat is serialized by the row lock (the beat does
not change the token the commit checks). The renewals are not audited: a lease is not a
change of state of the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from runs.models import Run

log = logging.getLogger(__name__)


@dataclass
class _Held:
    """One step task's run; its token is read on every beat (chained steps change it)."""

    run: Run
    token: uuid.UUID | None
    since: float  # time.monotonic() when ``token`` was first seen


class LeaseKeeper:
    """This process's leases and the thread that renews them."""

    def __init__(self, *, thread: bool = True) -> None:
        """``thread=False``: no heartbeat thread; the caller calls ``beat`` (tests)."""
        self._thread = thread
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._pid = 0
        self._wake = threading.Event()

    def hold(self, run: Run) -> int:
        """Renew ``run``'s lease (whatever token it holds) until ``release``; a handle."""
        handle = id(run)
        with self._lock:
            self._held[handle] = _Held(run=run, token=run.lease_token, since=time.monotonic())
            if self._thread and self._pid != os.getpid():  # the first step, or a fork's child
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="lease-heartbeat", daemon=True).start()
        return handle

    def release(self, handle: int) -> None:
        with self._lock:
            self._held.pop(handle, None)

    def _loop(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            self._wake.wait(settings.AGENTDESK_STEP_HEARTBEAT_S)
            try:
                self.beat()
            except Exception:  # the heartbeat must outlive any one failure
                log.exception("lease heartbeat failed")

    def beat(self) -> int:
        """Renew every live, young enough lease this process holds; how many rows matched.

        A database that does not answer renews nothing: the leases run out, as they must
        when nobody can record a step anyway.
        """
        now = time.monotonic()
        max_s = settings.AGENTDESK_STEP_MAX_S
        tokens: dict[str, uuid.UUID] = {}
        with self._lock:
            for held in self._held.values():
                token = held.run.lease_token  # one attribute read: safe against the step
                if token != held.token:
                    held.token, held.since = token, now
                if token is None:
                    continue
                if now - held.since > max_s:
                    log.warning(
                        "step of run %s has held its lease for %.0f s (over "
                        "AGENTDESK_STEP_MAX_S); no longer renewed",
                        held.run.pk,
                        now - held.since,
                    )
                    continue
                tokens[str(held.run.pk)] = token
        if not tokens:
            return 0
        expires = timezone.now() + timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S)
        try:
            # Tokens are unique (uuid4): matching on both sets is matching each pair.
            return Run.objects.filter(pk__in=tokens, lease_token__in=list(tokens.values())).update(
                lease_expires_at=expires
            )
        except DatabaseError as exc:
            log.warning("lease heartbeat could not renew %s lease(s): %s", len(tokens), exc)
            return 0
        finally:
            connection.close()  # this thread's connection, back to the pool


keeper = LeaseKeeper()


@contextmanager
def lease_kept(run: Run) -> Iterator[None]:
    """Keep ``run``'s lease alive while the block runs (a step task's steps)."""
    handle = keeper.hold(run)
    try:
        yield
    finally:
        keeper.release(handle)
