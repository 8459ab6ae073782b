"""The simulator's accounts: each with its own credentials, a parent's accepted for its
subaccounts and nobody else's, media only under its own account's path, region hosts,
the account resource, and the account-wide limit answering 429."""

from __future__ import annotations

import threading

import httpx

from tests.stack import wait_for
from twilio_sim import SimRecording, Simulator, media_bytes
from twilio_sim.accounts import CONCURRENT_HEADER


def media(sim: Simulator, account_sid: str, rec: SimRecording, auth: tuple[str, str],
          base: str | None = None) -> httpx.Response:  # fmt: skip
    url = f"{base or sim.base_url}/2010-04-01/Accounts/{account_sid}/Recordings/"
    return httpx.get(f"{url}{rec.recording_sid}.mp3", auth=auth, timeout=10)


def test_credentials_reach_only_their_own_account_or_their_children() -> None:
    with Simulator() as sim:
        main = (sim.account_sid, sim.auth_token)
        child = sim.add_account("child", subaccount=True, api_key=True)
        other = sim.add_account("other")
        rec = SimRecording("b", "CA" + "1" * 32, "RE" + "1" * 32, 4096, account_sid=child.sid)
        sim.add_recording(rec)
        [(key, secret)] = child.api_keys.items()
        assert media(sim, child.sid, rec, (child.sid, child.auth_token)).content == media_bytes(rec)
        assert media(sim, child.sid, rec, (key, secret)).status_code == 200
        assert media(sim, child.sid, rec, main).status_code == 200  # the parent's
        assert sim.credential_rejections() == 0
        # Another account's valid credentials: 404; nonsense: 401.
        assert media(sim, child.sid, rec, (other.sid, other.auth_token)).status_code == 404
        assert media(sim, child.sid, rec, (child.sid, "wrong")).status_code == 401
        # A child's credentials give nothing of its parent's; media only under its account.
        assert media(sim, sim.account_sid, rec, (child.sid, child.auth_token)).status_code == 404
        assert media(sim, sim.account_sid, rec, main).status_code == 404
        assert sim.credential_rejections(child.sid) == 2
        assert sim.credential_rejections(sim.account_sid) == 1


def test_account_resource_shows_a_subaccount_token_to_its_parent_only() -> None:
    with Simulator() as sim:
        child = sim.add_account("child", subaccount=True)
        other = sim.add_account("other")
        url = f"{sim.base_url}/2010-04-01/Accounts/{child.sid}.json"
        got = httpx.get(url, auth=(sim.account_sid, sim.auth_token), timeout=10)
        assert got.status_code == 200
        assert got.json()["auth_token"] == child.auth_token
        assert got.json()["owner_account_sid"] == sim.account_sid
        assert httpx.get(url, auth=(other.sid, other.auth_token), timeout=10).status_code == 404
        assert httpx.get(url, timeout=10).status_code == 401
        unknown = f"{sim.base_url}/2010-04-01/Accounts/AC{'9' * 32}.json"
        assert httpx.get(unknown, auth=(sim.account_sid, sim.auth_token)).status_code == 404


def test_region_accounts_live_on_their_own_host() -> None:
    with Simulator(regions=("ie1",)) as sim:
        ie = sim.add_account("dublin", region="ie1")
        rec = SimRecording("b", "CA" + "2" * 32, "RE" + "2" * 32, 4096, account_sid=ie.sid)
        sim.add_recording(rec)
        creds = (ie.sid, ie.auth_token)
        assert media(sim, ie.sid, rec, creds, sim.region_base_url("ie1")).status_code == 200
        assert media(sim, ie.sid, rec, creds).status_code == 401  # unknown on the US1 host


def test_limit_answers_429_with_and_without_retry_after() -> None:
    with Simulator() as sim:
        main = (sim.account_sid, sim.auth_token)
        rec = SimRecording("b", "CA" + "3" * 32, "RE" + "3" * 32, 4096)
        sim.add_recording(rec)
        sim.set_account_limit(sim.account_sid, 2, retry_after_s=1.5)
        sim.hold_media = True
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(media(sim, sim.account_sid, rec, main)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        wait_for(lambda: sim.account_current(sim.account_sid) == 2, "two held")
        refused = media(sim, sim.account_sid, rec, main)
        assert refused.status_code == 429
        assert refused.json()["code"] == 20429
        assert refused.headers["Retry-After"] == "1.5"
        assert refused.headers[CONCURRENT_HEADER] == "3"
        sim.set_account_limit(sim.account_sid, 2)
        assert "Retry-After" not in media(sim, sim.account_sid, rec, main).headers
        sim.hold_media = False
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200]
        assert all(a.headers[CONCURRENT_HEADER] in ("1", "2") for a in answers)
        assert sim.account_throttled(sim.account_sid) == 2
        assert sim.account_max_concurrent(sim.account_sid) == 3
        assert sim.account_current(sim.account_sid) == 0
