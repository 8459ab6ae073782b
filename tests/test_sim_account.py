"""The simulator's account-level surface: several recordings per call, conference
recordings, the Calls and Recordings lists (paging, date filters) and DELETE."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from twilio_sim import SimRecording, Simulator, media_bytes, past_calls

BUSINESS = "biz-1"
NEWEST = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


def _client(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, auth=(sim.account_sid, sim.auth_token))


def _account(sim: Simulator) -> str:
    return f"/2010-04-01/Accounts/{sim.account_sid}"


def _all_pages(client: httpx.Client, first: str, key: str) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    url: str | None = first
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body[key]
        url = body["next_page_uri"]
        pages += 1
    return items, pages


def test_several_recordings_of_one_call_are_listed_and_served(simulator: Simulator) -> None:
    call = "CA" + "1" * 32
    dial = SimRecording(BUSINESS, call, "RE" + "1" * 32, size_bytes=3000, source="DialVerb")
    voicemail = SimRecording(BUSINESS, call, "RE" + "2" * 32, size_bytes=5000, channels=2)
    simulator.add_recording(dial)
    simulator.add_recording(voicemail)
    with _client(simulator) as client:
        listed = client.get(f"{_account(simulator)}/Calls/{call}/Recordings.json").json()
        by_sid = {r["sid"]: r for r in listed["recordings"]}
        assert set(by_sid) == {dial.recording_sid, voicemail.recording_sid}
        assert by_sid[dial.recording_sid]["source"] == "DialVerb"
        assert by_sid[voicemail.recording_sid]["channels"] == 2
        for rec in (dial, voicemail):
            media = client.get(f"{_account(simulator)}/Recordings/{rec.recording_sid}.mp3")
            assert media.content == media_bytes(rec)


def test_conference_recording_names_the_conference_and_no_call(simulator: Simulator) -> None:
    rec = SimRecording(BUSINESS, "", "RE" + "3" * 32, conference_sid="CF" + "3" * 32)
    simulator.add_recording(rec)
    with _client(simulator) as client:
        meta = client.get(f"{_account(simulator)}/Recordings/{rec.recording_sid}.json").json()
        assert (meta["call_sid"], meta["conference_sid"]) == (None, rec.conference_sid)
        listed = client.get(
            f"{_account(simulator)}/Recordings.json", params={"ConferenceSid": rec.conference_sid}
        ).json()
        assert [r["sid"] for r in listed["recordings"]] == [rec.recording_sid]


def test_account_calls_page_newest_first_through_next_page_uri(simulator: Simulator) -> None:
    calls, recs = past_calls(BUSINESS, 120, newest=NEWEST)
    simulator.add_calls(calls, recs)
    with _client(simulator) as client:
        items, pages = _all_pages(client, f"{_account(simulator)}/Calls.json?PageSize=50", "calls")
    assert pages == 3
    assert [c["sid"] for c in items] == [c.call_sid for c in calls]
    starts = [parsedate_to_datetime(c["start_time"]) for c in items]
    assert starts == sorted(starts, reverse=True)


def test_calls_between_two_dates(simulator: Simulator) -> None:
    # One call every 7 minutes for 1000 calls: about 4.9 days back from NEWEST.
    calls, recs = past_calls(BUSINESS, 1000, newest=NEWEST)
    simulator.add_calls(calls, recs)
    with _client(simulator) as client:
        query = "StartTime>=2025-03-08&StartTime<=2025-03-08&PageSize=1000"
        items, _ = _all_pages(client, f"{_account(simulator)}/Calls.json?{query}", "calls")
    expected = {c.call_sid for c in calls if c.start_time.date() == datetime(2025, 3, 8).date()}
    assert {c["sid"] for c in items} == expected
    assert len(expected) == 24 * 60 // 7 + 1


def test_calls_filtered_by_number(simulator: Simulator) -> None:
    calls, recs = past_calls(BUSINESS, 40, newest=NEWEST, numbers=("+15551110000", "+15552220000"))
    simulator.add_calls(calls, recs)
    with _client(simulator) as client:
        to = client.get(f"{_account(simulator)}/Calls.json", params={"To": "+15551110000"}).json()
        frm = client.get(
            f"{_account(simulator)}/Calls.json", params={"From": "+15551110000"}
        ).json()
    got = {c["sid"] for c in to["calls"]} | {c["sid"] for c in frm["calls"]}
    assert got == {c.call_sid for c in calls if "+15551110000" in (c.to, c.from_)}
    assert len(got) == 20


def test_recordings_list_pages_and_filters_by_creation_date(simulator: Simulator) -> None:
    calls, recs = past_calls(BUSINESS, 300, newest=NEWEST)
    simulator.add_calls(calls, recs)
    since = NEWEST - timedelta(hours=10)
    with _client(simulator) as client:
        query = f"PageSize=40&DateCreated>={since:%Y-%m-%dT%H:%M:%SZ}"
        url = f"{_account(simulator)}/Recordings.json?{query}"
        items, pages = _all_pages(client, url, "recordings")
    expected = [r.recording_sid for r in recs if r.created_at and r.created_at >= since]
    assert [r["sid"] for r in items] == expected
    assert pages == -(-len(expected) // 40)
    assert all(r["call_sid"] for r in items)


def test_bad_filters_are_400(simulator: Simulator) -> None:
    with _client(simulator) as client:
        bad_date = client.get(f"{_account(simulator)}/Calls.json?StartTime>=yesterday")
        bad_size = client.get(f"{_account(simulator)}/Recordings.json?PageSize=5000")
        bad_token = client.get(f"{_account(simulator)}/Calls.json?PageToken=nope")
    assert [r.status_code for r in (bad_date, bad_size, bad_token)] == [400, 400, 400]
    assert "StartTime>" in bad_date.json()["message"]


def test_delete_then_404(simulator: Simulator) -> None:
    rec = SimRecording(BUSINESS, "CA" + "4" * 32, "RE" + "4" * 32)
    simulator.add_recording(rec)
    seen: list[str] = []
    simulator.on_delete = lambda r: seen.append(r.recording_sid)
    path = f"{_account(simulator)}/Recordings/{rec.recording_sid}"
    with _client(simulator) as client:
        assert client.delete(f"{path}.json").status_code == 204
        assert client.get(f"{path}.json").status_code == 404
        assert client.get(f"{path}.mp3").status_code == 404
        assert client.delete(f"{path}.json").status_code == 404
        unauthenticated = httpx.delete(f"{simulator.base_url}{path}.json")
    assert unauthenticated.status_code == 401
    assert seen == [rec.recording_sid]
    assert simulator.deletes(rec.recording_sid) == 1
    assert simulator.deletes_not_found(rec.recording_sid) == 1
    assert not simulator.has_recording(rec.recording_sid)
