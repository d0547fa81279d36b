"""The model gateway's clients and its reading of replies (the calls themselves: test_simulator)."""

from __future__ import annotations

import threading

from runs import gateway


def test_each_thread_keeps_one_client_per_endpoint():
    first = gateway._client("http://127.0.0.1:1/v1", "sk-a")
    assert gateway._client("http://127.0.0.1:1/v1", "sk-a") is first
    assert gateway._client("http://127.0.0.1:2/v1", "sk-a") is not first
    assert gateway._client("http://127.0.0.1:1/v1", "sk-b") is not first

    other: list[object] = []
    thread = threading.Thread(
        target=lambda: other.append(gateway._client("http://127.0.0.1:1/v1", "sk-a"))
    )
    thread.start()
    thread.join()
    assert other[0] is not first
    assert str(other[0].base_url) == str(first.base_url) == "http://127.0.0.1:1/v1/"
