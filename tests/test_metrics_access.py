"""``/metrics`` behind the optional ``METRICS_TOKEN``, and plays counted by result, on the
web application in-process against the real test Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.app_client import web_app
from tests.helpers import call_sid
from tests.stack import auth, token

B = "biz1"
METRICS_TOKEN = "scrape-" + "s" * 32


def plays(response: httpx.Response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "callrec_play_requests_total"
    }


async def test_plays_of_an_unknown_call_count_as_not_found(redis_url: str, tmp_path: Path) -> None:
    async with web_app(redis_url, tmp_path) as web:
        unknown = call_sid(404)
        assert (
            await web.get(f"/api/calls/{unknown}/recording", headers=auth(B))
        ).status_code == 404
        assert (await web.get(f"/api/calls/{unknown}/download", headers=auth(B))).status_code == 404
        # Asking for a status is not a play; a path id that is not a SID is a 400.
        assert (
            await web.get(f"/api/calls/{unknown}/recording/status", headers=auth(B))
        ).status_code == 404
        assert (await web.get("/api/calls/CA123/recording", headers=auth(B))).status_code == 400
        assert plays(await web.get("/metrics")) == {"hit": 0, "pending": 0, "not_found": 2}


async def test_metrics_want_the_metrics_token_when_it_is_set(
    redis_url: str, tmp_path: Path
) -> None:
    async with web_app(redis_url, tmp_path, METRICS_TOKEN=METRICS_TOKEN) as web:
        refused = [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            {"Authorization": f"Bearer {token(B)}"},  # an API token is not a scraper's
        ]
        for headers in refused:
            answer = await web.get("/metrics", headers=headers)
            assert answer.status_code == 401, headers
            assert "METRICS_TOKEN" in answer.json()["error"]
        assert (await web.get("/metrics", params={"token": METRICS_TOKEN})).status_code == 401
        for scheme in ("Bearer", "bearer"):
            granted = await web.get(
                "/metrics", headers={"Authorization": f"{scheme} {METRICS_TOKEN}"}
            )
            assert plays(granted) == {"hit": 0, "pending": 0, "not_found": 0}


async def test_metrics_are_open_without_a_metrics_token(redis_url: str, tmp_path: Path) -> None:
    async with web_app(redis_url, tmp_path, METRICS_TOKEN="") as web:
        assert plays(await web.get("/metrics")) == {"hit": 0, "pending": 0, "not_found": 0}
