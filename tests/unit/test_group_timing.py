"""Consumer-group timing of the workers: how long a silent member keeps its partitions, and how
often it says it lives."""

from __future__ import annotations

import pytest

from kernel.settings import Settings, heartbeat_interval


def test_a_member_heartbeats_a_quarter_of_its_session_at_most_every_three_seconds() -> None:
    assert heartbeat_interval(6.0) == 1.5  # three missed before the broker drops it
    assert heartbeat_interval(10.0) == 2.5
    assert heartbeat_interval(45.0) == 3.0  # the clients' default, kept for long sessions


def test_the_sinks_session_timeout_defaults_to_librdkafkas_and_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VUDSYNC_CONFIG", "/nonexistent/vudsync.toml")
    assert Settings().sink_session_timeout == 45.0
    monkeypatch.setenv("VUDSYNC_SINK_SESSION_TIMEOUT", "6")
    assert Settings().sink_session_timeout == 6.0
