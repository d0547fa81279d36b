"""The inbox's websocket: per-queue groups, the same access rules as the pages.

Against the real ASGI application (origin check, session auth, routing) and the Redis
channel layer that production uses. ``transactional_db``: the consumer reads the
database from another thread, and broadcasts go out only when a transaction commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from agentdesk.asgi import application
from reviews import services
from reviews.broadcast import queue_changed
from reviews.models import ApprovalRequest, Queue
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db(transaction=True)

# A host of the default AGENTDESK_ALLOWED_HOSTS: the validator reads the list at import.
ORIGIN = (b"origin", b"http://localhost:8000")


@pytest.fixture
def people(transactional_db: None, settings: Any) -> dict[str, Any]:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")
    return {
        "reviewer_a": user_make("rita"),
        "viewer_a": user_make("vera"),
        "reviewer_b": user_make("bob"),
        "operator": user_make("otto", "operator"),
        "auditor": user_make("aude", "auditor"),
    }


@pytest.fixture
def queues(people: dict[str, Any]) -> tuple[Queue, Queue]:
    queue_a = queue_make("queue-a", deciders=(people["reviewer_a"],), viewers=(people["viewer_a"],))
    queue_b = queue_make("queue-b", deciders=(people["reviewer_b"],))
    return queue_a, queue_b


def _socket(queue_id: int, user: Any = None, origin: tuple[bytes, bytes] = ORIGIN) -> Any:
    """A communicator carrying the user's session cookie; build it outside the event loop."""
    headers = [origin]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/queues/{queue_id}/", headers=headers)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(scenario)()


@pytest.mark.parametrize("persona", ["reviewer_a", "viewer_a", "auditor"])
def test_a_person_who_sees_the_queue_is_told_what_changes(
    people: dict[str, Any], queues: tuple[Queue, Queue], persona: str
) -> None:
    queue_a, _ = queues
    request = request_make(queue=queue_a)

    def announce_opened() -> None:
        with transaction.atomic():
            queue_changed(queue_id=queue_a.pk, request_id=request.pk, event="opened")

    def approve() -> None:
        services.approval_approve(
            request_id=request.pk, user=people["reviewer_a"], seen_hash=request.args_hash
        )

    socket = _socket(queue_a.pk, people[persona])

    async def scenario() -> None:
        connected, _ = await socket.connect()
        assert connected
        assert await socket.receive_json_from(timeout=5) == {
            "event": "subscribed",
            "queue": queue_a.pk,
        }

        await sync_to_async(announce_opened)()
        assert await socket.receive_json_from(timeout=5) == {
            "event": "opened",
            "request": request.pk,
        }

        await sync_to_async(approve)()
        assert await socket.receive_json_from(timeout=5) == {
            "event": "decided",
            "request": request.pk,
        }
        await socket.disconnect()

    _run(scenario)
    assert ApprovalRequest.objects.get(pk=request.pk).state == "approved"


@pytest.mark.parametrize(
    ("persona", "code"),
    [("reviewer_b", 4404), ("operator", 4404), (None, 4401)],
)
def test_no_access_closes_the_socket(
    people: dict[str, Any], queues: tuple[Queue, Queue], persona: str | None, code: int
) -> None:
    queue_a, _ = queues
    request = request_make(queue=queue_a)

    def announce() -> None:
        with transaction.atomic():
            queue_changed(queue_id=queue_a.pk, request_id=request.pk, event="opened")

    socket = _socket(queue_a.pk, people[persona] if persona else None)

    async def scenario() -> None:
        await socket.connect()
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": code}
        await sync_to_async(announce)()
        assert await socket.receive_nothing(timeout=0.5)

    _run(scenario)


def test_a_queue_that_does_not_exist_is_4404(people: dict[str, Any]) -> None:
    socket = _socket(999_999, people["auditor"])

    async def scenario() -> None:
        await socket.connect()
        assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}

    _run(scenario)


def test_another_queues_events_do_not_arrive(
    people: dict[str, Any], queues: tuple[Queue, Queue]
) -> None:
    queue_a, queue_b = queues
    request = request_make(queue=queue_a)

    def announce() -> None:
        with transaction.atomic():
            queue_changed(queue_id=queue_a.pk, request_id=request.pk, event="opened")

    socket = _socket(queue_b.pk, people["reviewer_b"])

    async def scenario() -> None:
        connected, _ = await socket.connect()
        assert connected
        assert (await socket.receive_json_from(timeout=5))["event"] == "subscribed"
        await sync_to_async(announce)()
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()

    _run(scenario)


def test_a_foreign_origin_is_refused(people: dict[str, Any], queues: tuple[Queue, Queue]) -> None:
    queue_a, _ = queues

    socket = _socket(queue_a.pk, people["reviewer_a"], origin=(b"origin", b"http://evil.test"))

    async def scenario() -> None:
        connected, _ = await socket.connect()
        assert not connected

    _run(scenario)
