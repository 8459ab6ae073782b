"""The recent-calls page in a real headless Chromium (Debian's ``chromium``, driven by
Playwright; never a downloaded browser), against real web and worker processes and the
Twilio simulator. Screenshots go to ``test-report/`` for the test report."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Response, sync_playwright

from tests.helpers import register
from tests.stack import ROOT, Stack, token
from twilio_sim import Fault, Simulator, media_bytes

B = "biz1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPORT_DIR = ROOT / "test-report"
WAIT_MS = 30_000
BIG_BYTES = 6 * 1024 * 1024  # ~6.5 min of audio: more than Chromium buffers ahead

QUEUE_SHOWN = """() => {
  const rows = [...document.querySelectorAll('li.call')];
  const by = (s) => rows.filter((r) => r.dataset.status === s);
  const queued = by('queued').map((r) => r.dataset.position).sort().join(',');
  return by('processing').length === 3 && queued === '1,2';
}"""
ALL_PLAYABLE = """(n) => {
  const audios = [...document.querySelectorAll('li.call audio')];
  return audios.length === n && audios.every((a) => a.readyState >= 2);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium (.ci/run does: apt-get install)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Page, name: str) -> Path:
    REPORT_DIR.mkdir(exist_ok=True)
    path = REPORT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def range_start(response: Response) -> int | None:
    header = response.request.headers.get("range") or ""
    match = re.fullmatch(r"bytes=(\d+)-\d*", header)
    return int(match.group(1)) if match else None


def test_page_lists_calls_plays_five_with_live_queue_and_seeks(
    stack: Stack, sim: Simulator, browser: Browser
) -> None:
    # Access logs on, as under the Procfile: the token must still never reach them.
    web = stack.start_web(log_level="info", PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    recs = [register(sim, web, B, i) for i in range(5)]
    recs.append(register(sim, web, B, 5, size_bytes=BIG_BYTES))
    big = recs[5].call_sid
    sim.latency_s = 0.3
    secret = token(B)

    # Under the page's own Content-Security-Policy, it loads, lists and goes live.
    strict = browser.new_context()
    plain = strict.new_page()
    violations: list[str] = []
    plain.on("console", lambda m: violations.append(m.text) if "Policy" in m.text else None)
    plain.goto(f"{web}/?token={secret}")
    plain.locator("li.call").nth(5).wait_for(timeout=WAIT_MS)
    plain.locator("#live.on").wait_for(timeout=WAIT_MS)
    assert violations == []
    strict.close()

    # Playwright's wait_for_function evaluates strings, which that policy forbids.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    recording_answers: list[Response] = []
    page.on(
        "response",
        lambda r: recording_answers.append(r) if "/recording" in r.url else None,
    )
    page.goto(f"{web}/?token={secret}")
    page.wait_for_function("document.querySelectorAll('li.call').length === 6", timeout=WAIT_MS)
    page.wait_for_selector("#live.on", timeout=WAIT_MS)
    assert "token" not in page.url  # dropped from the address bar
    rows = page.locator("li.call")
    assert rows.nth(0).get_attribute("data-sid") == big  # newest first
    assert rows.nth(0).locator(".who").inner_text().startswith("+1555")
    assert [rows.nth(i).get_attribute("data-status") for i in range(6)] == ["available"] * 6
    shot(page, "page-1280-list")
    # Loading the page downloaded nothing.
    assert sim.total_downloads() == 0
    assert all(sim.media_requests(r.recording_sid) == 0 for r in recs)

    sim.hold_media = True  # the slot holders wait at Twilio: the queue stays put to be seen
    for i in range(5):
        rows.nth(i).get_by_role("button", name=re.compile("Play")).click()
    page.wait_for_function(QUEUE_SHOWN, timeout=WAIT_MS)
    queued_text = page.locator('li.call[data-status="queued"] .state').all_inner_texts()
    assert sorted(queued_text) == ["Queued · #1 in line", "Queued · #2 in line"]
    downloading = page.locator('li.call[data-status="processing"] .state').all_inner_texts()
    assert downloading == ["Downloading…"] * 3
    assert sim.current_concurrent(B) == 3
    shot(page, "page-1280-queue")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    shot(page, "page-390-queue")

    sim.hold_media = False
    page.wait_for_function(ALL_PLAYABLE, arg=5, timeout=WAIT_MS)
    # Each starts on its own once stored (the click was the gesture): time goes by.
    page.wait_for_function(
        "[...document.querySelectorAll('li.call audio')].every((a) => a.played.length > 0)",
        timeout=WAIT_MS,
    )
    assert rows.nth(5).get_attribute("data-status") == "available"  # never clicked
    assert rows.nth(5).locator("audio").count() == 0
    shot(page, "page-390-ready")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    # Seeking far ahead fetches from there: a Range request answered 206 from storage.
    page.set_viewport_size({"width": 1280, "height": 800})
    audio = f'li.call[data-sid="{big}"] audio'
    with page.expect_response(
        lambda r: big in r.url and r.status == 206 and (range_start(r) or 0) > BIG_BYTES // 2,
        timeout=WAIT_MS,
    ) as seek:
        page.eval_on_selector(audio, "(a) => { a.currentTime = a.duration - 5; }")
    assert seek.value.headers["content-range"].startswith(f"bytes {range_start(seek.value)}-")
    page.wait_for_function(
        f"(() => {{ const a = document.querySelector('{audio}'); "
        "return !a.seeking && a.readyState >= 2 && a.currentTime > a.duration / 2; })",
        timeout=WAIT_MS,
    )
    assert all(sim.downloads(r.recording_sid) == 1 for r in recs[1:])
    assert sim.downloads(recs[0].recording_sid) == 0
    assert sim.total_downloads() == 5

    # A failed download says so and offers a retry, which then plays.
    sim.set_faults(recs[0].recording_sid, [Fault.server_error(400)])  # not retryable
    last = rows.nth(5)
    last.get_by_role("button", name=re.compile("Play")).click()
    page.wait_for_function(
        "document.querySelectorAll('li.call')[5].dataset.status === 'failed'", timeout=WAIT_MS
    )
    assert last.locator(".state").inner_text() == "Failed"
    last.get_by_role("button", name=re.compile("Retry")).click()
    page.wait_for_function(
        "(() => { const a = document.querySelectorAll('li.call')[5].querySelector('audio');"
        " return a && a.readyState >= 2; })",
        timeout=WAIT_MS,
    )
    assert sim.downloads(recs[0].recording_sid) == 1
    shot(page, "page-1280-ready")
    assert all(a.status in (200, 202, 206) for a in recording_answers)
    context.close()
    stack.stop()
    web_log = stack.procs[0].log()
    assert "GET /api/events?token=[redacted]" in web_log  # access log was on, and redacted
    assert secret not in web_log and secret.split(".")[2] not in web_log


SIGNED_SECRET = "browser-signed-secret-" + "s" * 32
SEEK_TO = (0.95, 0.6, 0.8)  # of the duration


def test_signed_play_seeks_on_the_media_url_not_the_app(
    stack: Stack, sim: Simulator, browser: Browser
) -> None:
    """SERVE_VIA=signed in a real audio element: after the play's 302, where do its
    seeks go, and how many requests reach the token-checked play route per play?"""
    web = stack.start_web(
        SERVE_VIA="signed", SIGNED_URL_SECRET=SIGNED_SECRET, PREFETCH_ON_WEBHOOK="false"
    )
    rec = register(sim, web, B, 0, size_bytes=BIG_BYTES)
    stack.recordings_dir.mkdir(parents=True, exist_ok=True)
    (stack.recordings_dir / f"{rec.call_sid}.mp3").write_bytes(media_bytes(rec))
    play_path = f"/api/calls/{rec.call_sid}/recording"

    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r))
    page.goto(f"{web}/?token={token(B)}")
    page.locator("li.call").first.get_by_role("button", name=re.compile("Play")).click()
    audio = f'li.call[data-sid="{rec.call_sid}"] audio'
    page.wait_for_function(
        f"(() => {{ const a = document.querySelector('{audio}'); "
        "return a && a.readyState >= 2 && a.played.length > 0; })",
        timeout=WAIT_MS,
    )
    for fraction in SEEK_TO:
        page.eval_on_selector(audio, f"(a) => {{ a.currentTime = a.duration * {fraction}; }}")
        page.wait_for_function(
            f"(() => {{ const a = document.querySelector('{audio}'); return !a.seeking && "
            f"a.readyState >= 2 && a.currentTime >= a.duration * {fraction} - 1; }})",
            timeout=WAIT_MS,
        )
    media = [r for r in seen if urlsplit(r.url).path == f"/media/{rec.call_sid}.mp3"]
    plays = [r for r in seen if urlsplit(r.url).path == play_path]
    # One request of this play reaches the play route (the token and tenant check, then
    # the 302); every byte, and every seek, goes to the signed URL.
    assert len(plays) == 1, [r.url for r in plays]
    assert plays[0].redirected_to is not None
    assert urlsplit(plays[0].redirected_to.url).path == f"/media/{rec.call_sid}.mp3"
    seeks = [r for r in media if (range_start_of(r) or 0) > 0]
    # The first two land beyond anything buffered; the third may be buffered by then.
    assert len(seeks) >= 2
    assert all((resp := r.response()) is not None and resp.status == 206 for r in seeks)
    assert all("token" not in r.url for r in media)
    print(
        f"\nsigned play with {len(SEEK_TO)} seeks: {len(plays)} request(s) to the play route, "
        f"{len(media)} to the signed media URL ({len(seeks)} ranged past 0)"
    )
    context.close()


def range_start_of(request: Request) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-\d*", request.headers.get("range") or "")
    return int(match.group(1)) if match else None


def test_page_plays_each_recording_of_a_call_and_says_why_none(
    stack: Stack, sim: Simulator, browser: Browser
) -> None:
    from twilio_sim import SimRecording

    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    hooks = f"{web}/webhooks/twilio/{B}"
    both = register(sim, web, B, 40, recording_webhook=False)
    dial = SimRecording(B, both.call_sid, both.recording_sid, duration_s=14, source="DialVerb")
    voicemail = SimRecording(B, both.call_sid, "RE" + "7" * 32, duration_s=6)
    sim.add_recording(voicemail)
    for rec in (dial, voicemail):
        assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204
    silent = register(sim, web, B, 41, recording_webhook=False)
    silent_rec = SimRecording(B, silent.call_sid, silent.recording_sid, duration_s=3)
    assert (
        sim.send_recording_status(
            f"{hooks}/recording-status", silent_rec, status="absent", error_code="16102"
        )
        == 204
    )
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{web}/?token={token(B)}")
    row = page.locator(f'li.call[data-sid="{both.call_sid}"]')
    row.locator(".player").nth(1).wait_for(timeout=WAIT_MS)
    assert row.locator(".player .what").all_inner_texts() == ["Call · 0:14", "Voicemail · 0:06"]
    row.get_by_role("button", name=re.compile("Play voicemail")).click()
    voice_audio = row.locator(".player").nth(1).locator("audio")
    voice_audio.wait_for(timeout=WAIT_MS)
    src = voice_audio.get_attribute("src") or ""
    assert f"/recordings/{voicemail.recording_sid}?token=" in src
    assert row.locator(".player").nth(0).locator("audio").count() == 0
    page.wait_for_function(
        "(() => { const a = document.querySelector"
        f"('li.call[data-sid=\"{both.call_sid}\"] .player:nth-child(2) audio');"
        " return a && a.readyState >= 2; })()",
        timeout=WAIT_MS,
    )
    none = page.locator(f'li.call[data-sid="{silent.call_sid}"] .state')
    assert none.inner_text() == "No recording: silent"
    assert page.locator(f'li.call[data-sid="{silent.call_sid}"] button').is_hidden()
    shot(page, "page-several-recordings")
    assert sim.downloads(voicemail.recording_sid) == 1
    assert sim.downloads(dial.recording_sid) == 0  # never clicked, never fetched
    context.close()
