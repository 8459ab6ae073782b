"""What the container tests say when there is no Docker engine: one line, naming the fix."""

from __future__ import annotations

import pytest

from tests.images import DockerUnavailable, require_engine


def test_no_engine_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable) as raised:
        require_engine()
    message = str(raised.value)
    assert "\n" not in message
    assert "tests/docker-up.sh" in message and "-m 'not containers'" in message
