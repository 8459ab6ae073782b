"""``/metrics`` after real traffic (parsed with prometheus_client's own parser), the same
figures from every web process, ``/readyz`` without Redis, and ``LOG_FORMAT=json``."""

from __future__ import annotations

import json

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from callrec.embedded_redis import free_port
from calls import keys
from consumers.__main__ import EXIT_DRAINED
from tests.helpers import play, register
from tests.stack import Stack, token, wait_for
from twilio_sim import Fault, Simulator

B = "biz1"
C = "biz2"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(web: str) -> Samples:
    response = httpx.get(f"{web}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def stored(stack: Stack, sid: str) -> bool:
    return (stack.recordings_dir / f"{sid}.mp3").exists()


def test_metrics_after_real_traffic_are_deployment_wide(stack: Stack, sim: Simulator) -> None:
    webs = [stack.start_web(PREFETCH_ON_WEBHOOK="false") for _ in range(2)]
    stack.start_worker()
    assert httpx.get(f"{webs[0]}/readyz").json() == {"ok": True, "redis": "ok"}
    sizes = [40_000, 100_000, 300_000, 2_000_000]
    recs = [register(sim, webs[0], B, i, size_bytes=size) for i, size in enumerate(sizes)]
    theirs = register(sim, webs[0], C, 50, size_bytes=50_000)
    gone = register(sim, webs[0], B, 9, recording_webhook=False)
    hooks = f"{webs[0]}/webhooks/twilio/{B}/recording-status"
    assert sim.send_recording_status(hooks, gone, status="absent") == 204
    sim.set_faults(recs[0].recording_sid, [Fault.too_many(retry_after_s=0)])

    sim.hold_media = True
    for rec in recs:
        assert play(webs[1], B, rec.call_sid).status_code == 202
    assert play(webs[0], C, theirs.call_sid).status_code == 202
    assert play(webs[0], B, gone.call_sid).status_code == 404
    wait_for(lambda: sim.current_concurrent(B) == 3 and sim.current_concurrent(C) == 1, "holds")
    busy = scrape(webs[0])
    assert value(busy, "callrec_slots_in_use") == 4
    assert value(busy, "callrec_queued_requests") == 1
    assert value(busy, "callrec_business_slots_in_use", business_id=B) == 3
    assert value(busy, "callrec_business_slots_in_use", business_id=C) == 1
    assert value(busy, "callrec_business_queued_requests", business_id=B) == 1
    main = sim.account_sid
    assert value(busy, "callrec_twilio_permits_in_use") == 4
    assert value(busy, "callrec_twilio_account_permits_in_use", account_sid=main) == 4
    assert value(busy, "callrec_twilio_account_limit", account_sid=main) == 20

    sim.hold_media = False
    everyone = [*recs, theirs]
    wait_for(lambda: all(stored(stack, r.call_sid) for r in everyone), "all stored")
    for rec in everyone:
        business = C if rec is theirs else B
        assert play(webs[0], business, rec.call_sid).status_code == 200

    def settled() -> bool:
        m = scrape(webs[1])
        return (
            value(m, "callrec_stream_pending") == 0
            and value(m, "callrec_slots_in_use") == 0
            and value(m, "callrec_downloads_total", outcome="ok") == 5
        )

    wait_for(settled, "the stream to drain")
    m = scrape(webs[0])
    assert value(m, "callrec_play_requests_total", result="hit") == 5
    assert value(m, "callrec_play_requests_total", result="pending") == 5
    assert value(m, "callrec_play_requests_total", result="not_found") == 1
    assert value(m, "callrec_downloads_total", outcome="ok") == 5
    # The 429 was waited out inside its download: no retry, no attempt spent.
    assert value(m, "callrec_downloads_total", outcome="retry") == 0
    assert value(m, "callrec_downloads_total", outcome="failed") == 0
    assert value(m, "callrec_download_seconds_count") == 5
    assert value(m, "callrec_download_seconds_sum") > 0
    assert value(m, "callrec_download_bytes_count") == 5
    assert value(m, "callrec_download_bytes_sum") == sum(sizes) + 50_000
    assert value(m, "callrec_download_bytes_bucket", le="65536") == 2
    assert value(m, "callrec_download_bytes_bucket", le="1048576") == 4
    assert value(m, "callrec_download_bytes_bucket", le="+Inf") == 5
    assert value(m, "callrec_twilio_responses_total", status="429") == 1
    assert value(m, "callrec_twilio_account_throttled_total", account_sid=main) == 1
    assert value(m, "callrec_twilio_account_permits_in_use", account_sid=main) == 0
    assert value(m, "callrec_twilio_account_limit", account_sid=main) == 10  # halved
    assert value(m, "callrec_twilio_responses_total", status="200") == 5
    assert value(m, "callrec_queued_requests") == 0
    assert value(m, "callrec_dead_letters") == 0
    assert value(m, "callrec_stream_lag") == 0
    assert ("callrec_business_slots_in_use", frozenset({("business_id", B)})) not in m
    # Counted in Redis, not per process: both web processes report the same figures.
    assert scrape(webs[1]) == m


def test_readyz_fails_without_redis_and_metrics_answer_503(stack: Stack) -> None:
    down = stack.start_web(REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    ready = httpx.get(f"{down}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["redis"].startswith("unreachable")
    assert httpx.get(f"{down}/healthz").status_code == 200  # alive, just not ready
    assert httpx.get(f"{down}/metrics", timeout=10).status_code == 503


def test_json_logs_keep_the_contract_events_and_hide_tokens(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(log_level="info", LOG_FORMAT="json", PREFETCH_ON_WEBHOOK="false")
    worker = stack.start_worker(LOG_FORMAT="json")
    recs = [register(sim, web, B, i) for i in range(4)]
    secret = token(B)
    sim.hold_media = True
    for rec in recs:
        url = f"{web}/api/calls/{rec.call_sid}/recording?token={secret}"
        assert httpx.get(url).status_code == 202
    client = redis.Redis.from_url(stack.redis_url)
    wait_for(lambda: client.llen(keys.queue(B)) == 1, "the fourth to queue")
    sim.hold_media = False
    files = [stack.recordings_dir / f"{r.call_sid}.mp3" for r in recs]
    wait_for(lambda: all(f.exists() for f in files), "four stored")
    # A file is stored before its slot is released (and RECORDING_DONE logged).
    wait_for(lambda: client.scard(keys.slots(B)) == 0, "every slot released")
    client.close()
    assert stack.stop_workers() == [EXIT_DRAINED]  # its log is complete

    docs = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    events = [d for d in docs if "event" in d]
    by_event: dict[str, list[dict[str, str]]] = {}
    for d in events:
        by_event.setdefault(d["event"], []).append(d)
    assert {e["sid"] for e in by_event["RECORDING_ENQUEUE"]} == {r.call_sid for r in recs[:3]}
    assert all(
        e["business_id"] == B and e["active"] in ("1/3", "2/3", "3/3")
        for e in by_event["RECORDING_ENQUEUE"]
    )
    [queued] = by_event["RECORDING_QUEUED"]
    assert (queued["sid"], queued["active"], queued["queue_len"]) == (recs[3].call_sid, "3/3", "1")
    assert [e["sid"] for e in by_event["RECORDING_NEXT"]] == [recs[3].call_sid]
    assert len(by_event["RECORDING_DONE"]) == 4
    assert all(d["level"] == "INFO" and d["message"].startswith(d["event"]) for d in events)

    # The web's own and uvicorn's access lines are JSON too, with the token redacted.
    stack.stop()
    web_lines = [json.loads(line) for line in stack.procs[0].log().splitlines() if line.strip()]
    access = [d["message"] for d in web_lines if d["logger"] == "uvicorn.access"]
    assert sum("/recording?token=[redacted]" in a for a in access) == 4
    assert secret not in stack.procs[0].log()
