"""Businesses on their own Twilio accounts, through real web and worker processes:
a registered subaccount end to end, TWILIO_SUBACCOUNTS=auto without registration, a
region's own host, and a callback for another business's SID changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import call_sid, play, play_until_stored, rec_sid
from tests.stack import Stack, auth, wait_for
from tests.tenant_helpers import SECRETS_KEY, admin_headers, put_account, register_on
from twilio_sim import SimRecording, Simulator, media_bytes
from twilio_sim.webhooks import call_status_params, post_signed


@pytest.fixture
def regional_sim() -> Iterator[Simulator]:
    with Simulator(regions=("ie1",)) as simulator:
        yield simulator


def test_subaccount_business_end_to_end(tmp_path: Path, redis_url: str, sim: Simulator) -> None:
    sub = sim.add_account("tenant-a", subaccount=True)
    stack = Stack.around(sim, tmp=tmp_path, redis_url=redis_url, CALLREC_SECRETS_KEY=SECRETS_KEY)
    try:
        web = stack.start_web()
        stack.start_worker()
        answer = put_account(web, "sub-biz", sub)
        assert answer.status_code == 200, answer.text
        assert sub.auth_token not in answer.text
        rec = register_on(sim, web, "sub-biz", 1, sub.sid)
        body = play_until_stored(web, "sub-biz", rec.call_sid).content
        assert body == media_bytes(rec)
        # Fetched from the subaccount's own path with its own credentials.
        assert sim.account_requests(sub.sid) >= 1
        assert sim.account_requests(sim.account_sid) == 0
        assert sim.credential_rejections() == 0
        # The main account's token does not sign for the subaccount, and the main
        # account is not this business's once it has its own: both 403, nothing recorded.
        hooks = f"{web}/webhooks/twilio/sub-biz"
        forged = SimRecording("sub-biz", call_sid(2), rec_sid(2), account_sid=sub.sid)
        sim.add_recording(forged)
        sub.auth_token, real = sim.auth_token, sub.auth_token
        try:
            assert sim.send_recording_status(f"{hooks}/recording-status", forged) == 403
        finally:
            sub.auth_token = real
        assert (
            sim.send_call_status(
                f"{hooks}/call-status", call_sid=call_sid(3), account_sid=sim.account_sid
            )
            == 403
        )
        listed = httpx.get(f"{web}/api/calls", headers=auth("sub-biz"), timeout=10).json()
        assert [c["call_sid"] for c in listed["calls"]] == [rec.call_sid]
        secrets = [line for line in (tmp_path / "web0.log").read_text().splitlines()]
        assert not any(sub.auth_token in line for line in secrets)
    finally:
        stack.stop()


def test_subaccounts_auto_without_registration(
    tmp_path: Path, redis_url: str, sim: Simulator
) -> None:
    sub = sim.add_account("tenant-auto", subaccount=True)
    stranger = sim.add_account("not-a-child")  # a separate account, not a subaccount
    stack = Stack.around(sim, tmp=tmp_path, redis_url=redis_url, TWILIO_SUBACCOUNTS="auto")
    try:
        web = stack.start_web()
        stack.start_worker()
        rec = register_on(sim, web, "auto-biz", 1, sub.sid)
        assert play_until_stored(web, "auto-biz", rec.call_sid).content == media_bytes(rec)
        # The subaccount's path, reached with the parent's credentials.
        assert sim.account_requests(sub.sid) >= 1
        assert sim.credential_rejections(sub.sid) == 0
        # An account that is not a subaccount of the main one: 403, however signed,
        # and asked about once only (the negative answer is cached).
        hooks = f"{web}/webhooks/twilio/auto-biz"
        for _ in range(3):
            status = sim.send_call_status(
                f"{hooks}/call-status", call_sid=call_sid(5), account_sid=stranger.sid
            )
            assert status == 403
        assert sim.credential_rejections(stranger.sid) == 1
        # No AccountSid at all (signed with the main token, or the subaccount's): 403.
        for token in (sim.auth_token, sub.auth_token):
            params = call_status_params(account_sid="", call_sid=call_sid(6))
            del params["AccountSid"]
            assert post_signed(f"{hooks}/call-status", params, token) == 403
        listed = httpx.get(f"{web}/api/calls", headers=auth("auto-biz"), timeout=10).json()
        assert [c["call_sid"] for c in listed["calls"]] == [rec.call_sid]
    finally:
        stack.stop()


def test_region_account_is_fetched_from_its_own_host_only(
    tmp_path: Path, redis_url: str, regional_sim: Simulator
) -> None:
    sim = regional_sim
    dublin = sim.add_account("tenant-ie", region="ie1", api_key=True)
    [(key_sid, key_secret)] = dublin.api_keys.items()
    stack = Stack.around(
        sim,
        tmp=tmp_path,
        redis_url=redis_url,
        CALLREC_SECRETS_KEY=SECRETS_KEY,
        TWILIO_REGION_API_BASES=f"ie1={sim.region_base_url('ie1')}",
    )
    try:
        web = stack.start_web()
        stack.start_worker()
        answer = put_account(
            web, "ie-biz", dublin, api_key=key_sid, api_secret=key_secret, region="ie1"
        )
        assert answer.status_code == 200, answer.text
        assert key_secret not in answer.text and dublin.auth_token not in answer.text
        assert answer.json()["region"] == "ie1"
        rec = register_on(sim, web, "ie-biz", 1, dublin.sid)
        assert play_until_stored(web, "ie-biz", rec.call_sid).content == media_bytes(rec)
        assert sim.account_requests(dublin.sid) >= 1
        # The default host would have refused the region's account: nothing was refused.
        assert sim.credential_rejections() == 0
    finally:
        stack.stop()


def test_callback_for_another_business_sid_changes_nothing(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker()
    theirs = register_on(sim, web, "owner", 1, None)
    assert play_until_stored(web, "owner", theirs.call_sid).content == media_bytes(theirs)
    before = httpx.get(f"{web}/api/calls", headers=auth("owner"), timeout=10).json()
    hooks = f"{web}/webhooks/twilio/intruder"
    # Correctly signed (same main account), on the intruder's URL, the owner's CallSid.
    status = sim.send_call_status(
        f"{hooks}/call-status", call_sid=theirs.call_sid, call_status="failed", duration_s=1
    )
    assert status == 204
    assert sim.send_recording_status(f"{hooks}/recording-status", theirs) == 204
    # The intruder's own call carrying the owner's RecordingSid: nothing recorded either.
    own = SimRecording("intruder", call_sid(7), theirs.recording_sid)
    assert sim.send_call_status(f"{hooks}/call-status", call_sid=own.call_sid) == 204
    assert sim.send_recording_status(f"{hooks}/recording-status", own) == 204
    assert play(web, "intruder", theirs.call_sid).status_code == 404
    # Its own call has no recording of its own: asking Twilio finds none under its SID.
    wait_for(lambda: play(web, "intruder", own.call_sid).status_code == 404, "no recording")
    calls = httpx.get(f"{web}/api/calls", headers=auth("intruder"), timeout=10).json()["calls"]
    assert [c["call_sid"] for c in calls] == [own.call_sid]
    assert calls[0]["recording"]["status"] == "none"
    after = httpx.get(f"{web}/api/calls", headers=auth("owner"), timeout=10).json()
    assert after == before
    assert sim.downloads(theirs.recording_sid) == 1
    assert play(web, "owner", theirs.call_sid).content == media_bytes(theirs)


def test_admin_api_bad_input(stack: Stack, sim: Simulator) -> None:
    acct = sim.add_account("tenant-x", subaccount=True)
    web = stack.start_web()  # no CALLREC_SECRETS_KEY
    url = f"{web}/api/admin/businesses/b1/twilio-account"
    good = {"account_sid": acct.sid, "auth_token": acct.auth_token}
    no_key = httpx.put(url, json=good, headers=admin_headers(), timeout=10)
    assert no_key.status_code == 400 and "CALLREC_SECRETS_KEY" in no_key.text
    web = stack.start_web(CALLREC_SECRETS_KEY=SECRETS_KEY)
    url = f"{web}/api/admin/businesses/b1/twilio-account"
    cases = [
        ({**good, "account_sid": "AC123"}, "account_sid"),
        ({**good, "account_sid": "CA" + "0" * 32}, "account_sid"),
        ({**good, "auth_token": ""}, "auth_token"),
        ({"account_sid": acct.sid}, "auth_token"),
        ({**good, "api_key": "SKnope"}, "api_key"),
        ({**good, "api_key": "SK" + "1" * 32}, "api_secret"),
        ({**good, "region": "mars1"}, "region"),
        ({**good, "color": "red"}, "color"),
    ]
    for body, field in cases:
        r = httpx.put(url, json=body, headers=admin_headers(), timeout=10)
        assert r.status_code == 400 and field in r.json()["error"], (body, r.text)
    assert httpx.put(url, content=b"[1]", headers=admin_headers(), timeout=10).status_code == 400
    assert httpx.put(url, content=b"{", headers=admin_headers(), timeout=10).status_code == 400
    # A business token is refused on /api/admin; no token at all is 401.
    assert httpx.put(url, json=good, headers=auth("b1"), timeout=10).status_code == 403
    assert httpx.get(url, headers=auth("b1"), timeout=10).status_code == 403
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=admin_headers(), timeout=10).status_code == 404
    # An admin token is no business's token.
    assert httpx.get(f"{web}/api/calls", headers=admin_headers(), timeout=10).status_code == 401
    r = httpx.put(url, json=good, headers=admin_headers(), timeout=10)
    assert r.status_code == 200
    shown = httpx.get(url, headers=admin_headers(), timeout=10)
    assert shown.json() == {
        "business_id": "b1",
        "account_sid": acct.sid,
        "api_key": None,
        "region": None,
        "auth_token_set": True,
        "api_secret_set": False,
    }
    assert httpx.delete(url, headers=admin_headers(), timeout=10).status_code == 204
    assert httpx.get(url, headers=admin_headers(), timeout=10).status_code == 404


def test_child_call_of_an_unregistered_parent_finds_the_parent_legs_recording(
    stack: Stack, sim: Simulator
) -> None:
    web = stack.start_web()
    stack.start_worker()
    parent, child = call_sid(20), call_sid(21)
    # Twilio files a <Dial>'s recording under the parent leg, which callrec never heard of.
    rec = SimRecording("kids", parent, rec_sid(20))
    sim.add_recording(rec)
    hooks = f"{web}/webhooks/twilio/kids"
    status = sim.send_call_status(f"{hooks}/call-status", call_sid=child, parent_call_sid=parent)
    assert status == 204
    assert play_until_stored(web, "kids", child).content == media_bytes(rec)
    assert sim.listing_requests() == 2  # the child's own listing, then the parent's
    # A parent leg another business registered is not listed for this one.
    register_on(sim, web, "other", 30, None, recording_webhook=False)
    orphan = call_sid(31)
    hooks = f"{web}/webhooks/twilio/kids"
    assert (
        sim.send_call_status(f"{hooks}/call-status", call_sid=orphan, parent_call_sid=call_sid(30))
        == 204
    )
    sim.add_recording(SimRecording("other", call_sid(30), rec_sid(30)))
    wait_for(lambda: play(web, "kids", orphan).status_code == 404, "no recording for the child")
    assert sim.listing_requests() == 3
    assert sim.downloads(rec_sid(30)) == 0
