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
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from guardian.shortcuts import assign_perm, remove_perm

from agentdesk.asgi import application
from reviews import access, services
from reviews.broadcast import queue_changed
from reviews.models import ApprovalRequest, Queue
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db(transaction=True)

# The origin of the default AGENTDESK_BASE_URL: the validator reads the list at import.
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture
def people(transactional_db: None, settings: Any) -> dict[str, Any]:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")
    return {
        "reviewer_a": user_make("rita"),
        "viewer_a": user_make("vera"),
        "reviewer_b": user_make("bob"),
        "operator": user_make("otto", "operator"),
        "auditor": user_make("aude", "auditor"),
        "outsider": user_make("oscar", None),
    }


@pytest.fixture
def queues(people: dict[str, Any]) -> tuple[Queue, Queue]:
    queue_a = queue_make("queue-a", deciders=(people["reviewer_a"],), viewers=(people["viewer_a"],))
    queue_b = queue_make("queue-b", deciders=(people["reviewer_b"],))
    return queue_a, queue_b


def _socket(
    queue_id: int,
    user: Any = None,
    origin: tuple[bytes, bytes] | None = ORIGIN,
    client: Client | None = None,
) -> Any:
    """A communicator carrying the user's (or the client's) session cookie.

    Build it outside the event loop. ``origin`` None: no Origin header at all.
    """
    headers = [origin] if origin is not None else []
    if user is not None:
        client = Client()
        client.force_login(user)
    if client is not None:
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
    [("reviewer_b", 4404), ("operator", 4404), ("outsider", 4404), (None, 4401)],
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


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.test",
        # The right host on another port, or another scheme: another origin, another site.
        b"http://127.0.0.1:9999",
        b"https://127.0.0.1:8000",
        b"ws://127.0.0.1:8000",
        # An allowed host name, but not the origin people open AgentDesk at.
        b"http://localhost:8000",
        b"http://localhost:1234",
        b"http://127.0.0.1:8000.evil.test",
        b"null",
        None,
    ],
)
def test_invariant_9_an_origin_other_than_the_sites_own_is_refused(
    people: dict[str, Any], queues: tuple[Queue, Queue], origin: bytes | None
) -> None:
    queue_a, _ = queues

    socket = _socket(
        queue_a.pk, people["reviewer_a"], origin=(b"origin", origin) if origin else None
    )

    async def scenario() -> None:
        connected, _ = await socket.connect()
        assert not connected

    _run(scenario)


def test_the_sites_own_origin_with_its_default_port_spelled_out_is_the_same_origin(
    people: dict[str, Any], queues: tuple[Queue, Queue], settings: Any
) -> None:
    assert settings.AGENTDESK_WEBSOCKET_ORIGINS == ["http://127.0.0.1:8000"]
    socket = _socket(
        queues[0].pk, people["reviewer_a"], origin=(b"origin", b"HTTP://127.0.0.1:8000")
    )

    async def scenario() -> None:
        connected, _ = await socket.connect()
        assert connected
        assert (await socket.receive_json_from(timeout=5))["event"] == "subscribed"
        await socket.disconnect()

    _run(scenario)


# --- access re-checked on every event (invariant 9 on websockets) ---------------------------


def _announce(queue: Queue, request: ApprovalRequest) -> None:
    with transaction.atomic():
        queue_changed(queue_id=queue.pk, request_id=request.pk, event="opened")


def _subscribed(socket: Any, queue: Queue) -> Awaitable[None]:
    async def connect() -> None:
        connected, _ = await socket.connect()
        assert connected
        assert await socket.receive_json_from(timeout=5) == {
            "event": "subscribed",
            "queue": queue.pk,
        }

    return connect()


@pytest.mark.parametrize("grant", ["user", "group"])
def test_invariant_9_an_open_socket_is_closed_when_access_is_revoked(
    people: dict[str, Any], queues: tuple[Queue, Queue], grant: str
) -> None:
    """Two sockets on queue A; Vera's view is revoked while both are open: she is closed
    with 4404 before the next event, which Rita still receives."""
    queue_a, _ = queues
    request = request_make(queue=queue_a)
    vera = people["viewer_a"]
    if grant == "group":  # access through a group, revoked by taking her out of it
        remove_perm("reviews.view_queue", vera, queue_a)
        group = Group.objects.create(name="a-viewers")
        assign_perm("reviews.view_queue", group, queue_a)
        vera.groups.add(group)
    revoked = _socket(queue_a.pk, vera)
    kept = _socket(queue_a.pk, people["reviewer_a"])

    def revoke() -> None:
        if grant == "group":
            vera.groups.remove(group)
        else:
            admin = get_user_model().objects.create_superuser("ada", "ada@example.com", None)
            access.queue_permission_set(
                actor=admin, queue=queue_a, principal=vera, level="view", granted=False
            )

    async def scenario() -> None:
        await _subscribed(revoked, queue_a)
        await _subscribed(kept, queue_a)
        await sync_to_async(revoke)()
        await sync_to_async(_announce)(queue_a, request)

        assert await revoked.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
        assert await kept.receive_json_from(timeout=5) == {"event": "opened", "request": request.pk}
        # Closed for good: a later event reaches the one left, and nothing more the other.
        await sync_to_async(_announce)(queue_a, request)
        assert await kept.receive_json_from(timeout=5) == {"event": "opened", "request": request.pk}
        assert await revoked.receive_nothing(timeout=0.5)
        await kept.disconnect()

    _run(scenario)


@pytest.mark.parametrize("ending", ["logout", "deactivated", "password_changed"])
def test_invariant_9_an_open_socket_is_closed_when_its_session_ends(
    people: dict[str, Any], queues: tuple[Queue, Queue], ending: str
) -> None:
    queue_a, _ = queues
    request = request_make(queue=queue_a)
    rita = people["reviewer_a"]
    client = Client()
    client.force_login(rita)
    socket = _socket(queue_a.pk, client=client)

    def end() -> None:
        if ending == "logout":
            assert client.post("/logout/").status_code == 302
        elif ending == "deactivated":
            type(rita).objects.filter(pk=rita.pk).update(is_active=False)
        else:  # the session's hash no longer matches: every session of hers is void
            rita.set_password("a-new-password")
            rita.save(update_fields=["password"])

    async def scenario() -> None:
        await _subscribed(socket, queue_a)
        await sync_to_async(end)()
        await sync_to_async(_announce)(queue_a, request)

        assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}

    _run(scenario)


def test_a_new_socket_after_logout_is_refused(
    people: dict[str, Any], queues: tuple[Queue, Queue]
) -> None:
    client = Client()
    client.force_login(people["reviewer_a"])
    client.post("/logout/")
    socket = WebsocketCommunicator(
        application,
        f"/ws/queues/{queues[0].pk}/",
        headers=[ORIGIN, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())],
    )

    async def scenario() -> None:
        await socket.connect()
        assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}

    _run(scenario)
