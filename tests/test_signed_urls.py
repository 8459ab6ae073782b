"""SERVE_VIA=signed: a play answers 302 to a short-lived signed /media/ URL, which the app
serves with no JWT and no Redis, and which nginx (deploy/nginx.conf, secure_link) checks
and serves itself. Real web processes, a real nginx, real files."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bench import procs
from callrec.embedded_redis import free_port
from config.settings import SettingsError, load_settings
from ingest.signed_urls import signature, signed_path, verify
from tests.helpers import register
from tests.stack import Stack, auth
from twilio_sim import SimRecording, Simulator, media_bytes

B = "biz-signed"
SECRET = "signed-url-secret-" + "k" * 32
SIZE = 300_000


def store(stack: Stack, rec: SimRecording) -> bytes:
    """The recording as a worker would have stored it."""
    data = media_bytes(rec)
    stack.recordings_dir.mkdir(parents=True, exist_ok=True)
    (stack.recordings_dir / f"{rec.call_sid}.mp3").write_bytes(data)
    return data


@pytest.fixture
def web(stack: Stack) -> str:
    return stack.start_web(
        SERVE_VIA="signed", SIGNED_URL_SECRET=SECRET, PREFETCH_ON_WEBHOOK="false"
    )


def redirect(web: str, sid: str, what: str = "recording") -> str:
    r = httpx.get(f"{web}/api/calls/{sid}/{what}", headers=auth(B), timeout=10)
    assert r.status_code == 302, (r.status_code, r.text)
    assert r.headers["cache-control"] == "no-store"
    location = r.headers["location"]
    assert location.startswith(f"/media/{sid}.mp3?")  # relative: any origin in front works
    return location


def test_play_redirects_to_a_signed_url_that_serves_ranges(
    stack: Stack, sim: Simulator, web: str
) -> None:
    rec = register(sim, web, B, 1, size_bytes=SIZE)
    data = store(stack, rec)
    before = int(time.time())
    location = redirect(web, rec.call_sid)
    query = parse_qs(urlsplit(location).query)
    assert before + 300 <= int(query["expires"][0]) <= int(time.time()) + 300  # the default TTL
    assert "token" not in location

    url = web + location
    r = httpx.get(url, headers={"Range": "bytes=1000-70999"}, timeout=10)
    assert r.status_code == 206
    assert r.content == data[1000:71000]
    assert r.headers["content-range"] == f"bytes 1000-70999/{SIZE}"
    assert r.headers["accept-ranges"] == "bytes"
    full = httpx.get(url, timeout=10)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "audio/mpeg"
    assert "content-disposition" not in full.headers
    head = httpx.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["content-length"] == str(SIZE)
    again = httpx.get(url, headers={"If-None-Match": full.headers["etag"]}, timeout=10)
    assert again.status_code == 304
    assert httpx.get(url, headers={"Range": f"bytes={SIZE}-"}, timeout=10).status_code == 416

    # A download carries its file name inside the signature.
    dl = redirect(web, rec.call_sid, "download")
    assert parse_qs(urlsplit(dl).query)["filename"] == [f"{rec.call_sid}.mp3"]
    got = httpx.get(web + dl, timeout=10)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-disposition"] == f'attachment; filename="{rec.call_sid}.mp3"'


def refusals(base: str, location: str, other_sid: str) -> dict[str, httpx.Response]:
    """What a URL that is not exactly one the app signed, still valid, gets."""
    path, _, query = location.partition("?")
    q = {k: v[0] for k, v in parse_qs(query).items()}
    sig = q["md5"]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    expired = int(time.time()) - 1
    own = path.removeprefix("/media/")
    cases = {
        "tampered signature": f"{path}?expires={q['expires']}&md5={flipped}",
        "longer lifetime": f"{path}?expires={int(q['expires']) + 3600}&md5={sig}",
        "another file": f"/media/{other_sid}.mp3?expires={q['expires']}&md5={sig}",
        "added filename": f"{location}&filename={own}",
        "no expires": f"{path}?md5={sig}",
        "no signature": f"{path}?expires={q['expires']}",
        "expired": signed_path(SECRET, name=own, expires=expired),
    }
    return {what: httpx.get(base + url, timeout=10) for what, url in cases.items()}


def test_tampered_expired_or_foreign_urls_are_403(stack: Stack, sim: Simulator, web: str) -> None:
    rec = register(sim, web, B, 2)
    other = register(sim, web, B, 3)
    store(stack, rec)
    store(stack, other)
    answers = refusals(web, redirect(web, rec.call_sid), other.call_sid)
    assert {what: r.status_code for what, r in answers.items()} == dict.fromkeys(answers, 403)
    assert all(r.json()["error"].startswith("signed media URL refused") for r in answers.values())


def test_signed_name_outside_recordings_is_never_served(stack: Stack, web: str) -> None:
    # Only a stored recording's name can be signed, and only that name is served.
    with pytest.raises(ValueError):
        signed_path(SECRET, name="../web0.log", expires=int(time.time()) + 60)
    expires = int(time.time()) + 60
    path = "/media/../web0.log"
    sig = signature(SECRET, path=path, expires=expires)
    for url in ("/media/..%2Fweb0.log", "/media/../web0.log", "/media/%2e%2e/web0.log"):
        r = httpx.get(f"{web}{url}?expires={expires}&md5={sig}", timeout=10)
        assert r.status_code in (403, 404), (url, r.status_code)  # no route, or refused
        assert "uvicorn" not in r.text
    unknown = signed_path(SECRET, name=f"CA{'9' * 32}.mp3", expires=expires)
    assert httpx.get(web + unknown, timeout=10).status_code == 404


def test_signed_route_needs_no_redis(stack: Stack, sim: Simulator, web: str) -> None:
    rec = register(sim, web, B, 4, size_bytes=SIZE)
    data = store(stack, rec)
    location = redirect(web, rec.call_sid)
    # A second web process whose Redis does not exist: the API is down, media is not.
    offline = stack.start_web(
        SERVE_VIA="signed",
        SIGNED_URL_SECRET=SECRET,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert httpx.get(f"{offline}/readyz", timeout=10).status_code == 503
    r = httpx.get(offline + location, headers={"Range": "bytes=5-99"}, timeout=10)
    assert r.status_code == 206 and r.content == data[5:100]


def test_plain_web_has_no_media_route(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    rec = register(sim, web, B, 5)
    store(stack, rec)
    url = signed_path(SECRET, name=f"{rec.call_sid}.mp3", expires=int(time.time()) + 60)
    assert httpx.get(web + url, timeout=10).status_code == 404


@pytest.fixture
def nginx_front(stack: Stack, web: str) -> Iterator[str]:
    """deploy/nginx.conf as shipped, in front of the signed web process."""
    port = free_port()
    block = procs.nginx_xaccel_block(
        port,
        int(web.rsplit(":", 1)[1]),
        stack.recordings_dir,
        stack.tmp / "nginx-signed-access.log",
        signed_url_secret=SECRET,
    )
    nginx = procs.start_nginx(stack, "nginx-signed", block, workers=1)
    yield f"http://127.0.0.1:{port}"
    nginx.popen.terminate()
    nginx.popen.wait(timeout=15)


def test_nginx_checks_and_serves_the_apps_signed_urls(
    stack: Stack, sim: Simulator, web: str, nginx_front: str
) -> None:
    rec = register(sim, web, B, 6, size_bytes=SIZE)
    other = register(sim, web, B, 7)
    data = store(stack, rec)
    store(stack, other)
    location = redirect(nginx_front, rec.call_sid)  # the play goes through nginx to the app
    for proc in stack.procs:  # from here on only nginx answers: no app behind it
        if proc.name.startswith("web"):
            proc.popen.terminate()
            proc.popen.wait(timeout=15)
    r = httpx.get(nginx_front + location, headers={"Range": "bytes=1000-70999"}, timeout=10)
    assert r.status_code == 206 and r.content == data[1000:71000]
    assert r.headers["content-range"] == f"bytes 1000-70999/{SIZE}"
    assert httpx.get(nginx_front + location, timeout=10).content == data
    answers = refusals(nginx_front, location, other.call_sid)
    assert {what: r.status_code for what, r in answers.items()} == dict.fromkeys(answers, 403)
    expires = int(time.time()) + 60
    sig = signature(SECRET, path="/media/../web0.log", expires=expires)
    for url in ("/media/..%2Fweb0.log", "/media/%2e%2e/web0.log", "/media/..%2F..%2Fetc/passwd"):
        r = httpx.get(f"{nginx_front}{url}?expires={expires}&md5={sig}", timeout=10)
        # nginx resolves ".." before choosing a location: these leave /media/ entirely
        # (to the app's location, stopped here), so no file is ever served.
        assert r.status_code >= 400, (url, r.status_code)


def test_nginx_serves_signed_downloads_as_attachments(
    stack: Stack, sim: Simulator, web: str, nginx_front: str
) -> None:
    rec = register(sim, web, B, 8)
    data = store(stack, rec)
    got = httpx.get(nginx_front + redirect(nginx_front, rec.call_sid, "download"), timeout=10)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-disposition"] == f'attachment; filename="{rec.call_sid}.mp3"'


def test_nginx_with_the_placeholder_left_in_serves_no_signed_url(
    stack: Stack, sim: Simulator, web: str
) -> None:
    rec = register(sim, web, B, 9)
    store(stack, rec)
    port = free_port()
    block = procs.nginx_xaccel_block(
        port, int(web.rsplit(":", 1)[1]), stack.recordings_dir, stack.tmp / "nginx-access.log"
    )
    procs.start_nginx(stack, "nginx-unset", block, workers=1)
    # Signed with the public placeholder, as anyone reading deploy/nginx.conf could.
    forged = signed_path(
        "CALLREC_SIGNED_URL_SECRET", name=f"{rec.call_sid}.mp3", expires=int(time.time()) + 60
    )
    assert httpx.get(f"http://127.0.0.1:{port}{forged}", timeout=10).status_code == 403


def test_nginx_signature_format_matches_openssl() -> None:
    # nginx's documented recipe for secure_link_md5 values, computed by openssl.
    openssl = shutil.which("openssl")
    assert openssl, "openssl is part of every Debian base"
    text = f"2147483647/media/CA{'0' * 32}.mp3 {SECRET}"
    raw = subprocess.run(
        [openssl, "md5", "-binary"], input=text.encode(), capture_output=True, check=True
    ).stdout
    expected = (
        subprocess.run([openssl, "base64"], input=raw, capture_output=True, check=True)
        .stdout.decode()
        .strip()
        .translate(str.maketrans("+/", "-_"))
        .rstrip("=")
    )
    ours = signature(SECRET, path=f"/media/CA{'0' * 32}.mp3", expires=2147483647)
    assert ours == expected


def test_verify_accepts_only_what_was_signed() -> None:
    name = f"CA{'1' * 32}.mp3"
    now = 1_800_000_000
    url = signed_path(SECRET, name=name, expires=now + 10)
    path, _, query = url.partition("?")
    q = {k: v[0] for k, v in parse_qs(query).items()}
    ok = verify(SECRET, path=path, expires=q["expires"], md5=q["md5"], filename=None, now_s=now)
    assert ok.name == name
    at_expiry = verify(
        SECRET, path=path, expires=q["expires"], md5=q["md5"], filename=None, now_s=now + 10
    )
    assert at_expiry.name == name  # nginx's rule: the second named is still valid
    late = verify(
        SECRET, path=path, expires=q["expires"], md5=q["md5"], filename=None, now_s=now + 11
    )
    assert (late.name, late.reason) == (None, "expired")
    other_key = verify(
        SECRET + "x", path=path, expires=q["expires"], md5=q["md5"], filename=None, now_s=now
    )
    assert (other_key.name, other_key.reason) == (None, "bad signature")
    huge = verify(SECRET, path=path, expires=q["expires"], md5="A" * 500, filename=None, now_s=now)
    assert huge.name is None


def test_signed_without_secret_fails_at_start_naming_it() -> None:
    with pytest.raises(SettingsError, match="SIGNED_URL_SECRET"):
        load_settings({"SERVE_VIA": "signed"})
    with pytest.raises(SettingsError, match="SIGNED_URL_SECRET must be at least 32"):
        load_settings({"SERVE_VIA": "signed", "SIGNED_URL_SECRET": "short"})
    with pytest.raises(SettingsError, match="SIGNED_URL_SECRET"):
        load_settings({"SERVE_VIA": "signed", "SIGNED_URL_SECRET": 'a"b c$d' * 8})
    with pytest.raises(SettingsError, match="SIGNED_URL_SECRET is still"):
        load_settings({"SERVE_VIA": "signed", "SIGNED_URL_SECRET": "CALLREC_SIGNED_" + "x" * 40})
    with pytest.raises(SettingsError, match="SIGNED_URL_TTL_SECONDS"):
        load_settings(
            {"SERVE_VIA": "signed", "SIGNED_URL_SECRET": SECRET, "SIGNED_URL_TTL_SECONDS": "0"}
        )
    s = load_settings({"SERVE_VIA": "signed", "SIGNED_URL_SECRET": SECRET})
    assert s.signed_urls is not None and s.signed_urls.ttl_s == 300
    assert load_settings({"SIGNED_URL_SECRET": SECRET}).signed_urls is None  # SERVE_VIA=app
