"""The lifecycle's admin API through real processes: erase a call, ask the workers for
a backfill and follow it; admin tokens only, bad input is a clear 4xx."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from ingest.auth import issue_admin_token
from tests.helpers import play_until_stored, register
from tests.stack import JWT_SECRET, Stack, auth, wait_for
from twilio_sim import Simulator, past_calls

B = "biz-admin"


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_admin_token(JWT_SECRET, 600)}"}


def _call(method: str, url: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, url, timeout=10, **kw)


def test_erase_over_the_admin_api(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker(LIFECYCLE_INTERVAL_MS="100")
    rec = register(sim, web, B, 1)
    play_until_stored(web, B, rec.call_sid)
    url = f"{web}/api/admin/businesses/{B}/calls/{rec.call_sid}"
    assert _call("DELETE", url).status_code == 401
    assert _call("DELETE", url, headers=auth(B)).status_code == 403
    done = _call("DELETE", url, headers=_admin())
    assert done.status_code == 200, done.text
    assert done.json() == {
        "call_sid": rec.call_sid,
        "status": "erased",
        "already_erased": False,
        "recordings": [rec.recording_sid],
        "files_removed": 1,
    }
    assert not (stack.recordings_dir / f"{rec.call_sid}.mp3").exists()
    again = _call("DELETE", url, headers=_admin())
    assert again.status_code == 200 and again.json()["already_erased"] is True
    wait_for(lambda: sim.deletes(rec.recording_sid) == 1, "Twilio's copy deleted")
    unknown = _call(
        "DELETE", f"{web}/api/admin/businesses/{B}/calls/{'CA' + 'e' * 32}", headers=_admin()
    )
    assert unknown.status_code == 404
    bad = _call("DELETE", f"{web}/api/admin/businesses/{B}/calls/CA1", headers=_admin())
    assert bad.status_code == 400


def test_backfill_over_the_admin_api(stack: Stack, sim: Simulator) -> None:
    calls, recs = past_calls(B, 300, newest=datetime(2025, 4, 1, tzinfo=UTC))
    sim.add_calls(calls, recs)
    web = stack.start_web()
    stack.start_worker(LIFECYCLE_INTERVAL_MS="100")
    url = f"{web}/api/admin/businesses/{B}/backfill"
    assert _call("GET", url, headers=_admin()).status_code == 404
    for body, message in (
        ({"since": "2025-03-09", "until": "2025-03-01"}, "is after until"),
        ({"since": "yesterday"}, "since must be a date"),
        ({"numbers": "+15550000002"}, "numbers must be a list"),
        ({"numbers": ["555"]}, "E.164"),
        ({"download": "yes"}, "download must be true or false"),
    ):
        answer = _call("POST", url, headers=_admin(), json=body)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert _call("POST", url, headers=_admin(), content=b"[1]").status_code == 400
    assert _call("POST", url, headers=auth(B), json={}).status_code == 403
    asked = _call("POST", url, headers=_admin(), json={})
    assert asked.status_code == 202

    def done() -> bool:
        status = _call("GET", url, headers=_admin()).json()
        return bool(status["state"] == "done")

    wait_for(done, "the backfill to finish", 60)
    status = _call("GET", url, headers=_admin()).json()
    assert (status["calls_imported"], status["recordings_imported"]) == (300, 300)
    listed = _call("GET", f"{web}/api/calls?limit=200", headers=auth(B)).json()
    assert len(listed["calls"]) == 200 and listed["next"]
