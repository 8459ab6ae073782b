"""Property-based bad input against a running web process: malformed webhooks (signed
and unsigned), tokens, SIDs, cursors, Range headers (100+ ranges, 8 KB values) and
oversized bodies. Whatever comes in: never a 5xx, and the service keeps answering."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from tests.helpers import call_sid
from tests.stack import JWT_SECRET, Stack, auth, token
from twilio_sim import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimRecording, media_bytes
from twilio_sim.webhooks import call_status_params, post_signed

B = "fuzz"
STORED = SimRecording(B, call_sid(900), "RE" + "9" * 32, size_bytes=20_000)
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[str]:
    """One web process (no worker: a 202 leaves its request on the stream) with one
    recording stored on disk, for every example of the module."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    tmp = tmp_path_factory.mktemp("fuzz")
    stack = Stack(
        tmp=tmp,
        redis_url=redis_server_url,
        twilio_base="http://127.0.0.1:9",  # the web never talks to Twilio
        account_sid=DEMO_ACCOUNT_SID,
        auth_token=DEMO_AUTH_TOKEN,
    )
    try:
        url = stack.start_web(PREFETCH_ON_WEBHOOK="false")
        status = post_signed(
            f"{url}/webhooks/twilio/{B}/call-status",
            call_status_params(
                account_sid=DEMO_ACCOUNT_SID,
                call_sid=STORED.call_sid,
                duration_s=3,
                sequence_number=1,
            ),
            DEMO_AUTH_TOKEN,
        )
        assert status == 204
        Path(stack.recordings_dir).mkdir(parents=True, exist_ok=True)
        (stack.recordings_dir / f"{STORED.call_sid}.mp3").write_bytes(media_bytes(STORED))
        yield url
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert "Traceback" not in stack.procs[0].log(), stack.procs[0].log()
    finally:
        stack.stop()


def send(
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    data: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response | None:
    """The request as sent, or None when it is not something HTTP can carry (the client
    refuses it before any byte leaves)."""
    try:
        # As httpx would encode them (names ASCII), but values any latin-1 byte.
        raw = {k.encode("ascii"): v.encode("latin-1") for k, v in headers.items()}
        return httpx.request(method, url, headers=raw, timeout=10, data=data, params=params)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return None


def ok(response: httpx.Response | None, allowed: set[int]) -> None:
    if response is None:
        return
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in allowed, (response.status_code, response.text)


# Text that stays within what an HTTP client can put in a header (latin-1, no CR/LF).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=200,
)
sid_like = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"CA[0-9a-fA-F]{30,34}", fullmatch=True),
    st.just(call_sid(901)),
    st.just(STORED.call_sid),
)
form_value = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "0", "-1", "²", "1e9", "9" * 40, "completed", "absent"]),
    sid_like,
)
FIELDS = [
    "CallSid",
    "ParentCallSid",
    "CallStatus",
    "SequenceNumber",
    "Timestamp",
    "CallDuration",
    "RecordingSid",
    "RecordingStatus",
    "RecordingDuration",
    "From",
    "Direction",
]


@EXAMPLES
@given(
    hook=st.sampled_from(["call-status", "recording-status"]),
    business=st.one_of(st.just(B), st.text(max_size=80)),
    params=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=20)), form_value),
    signing=st.sampled_from(["valid", "none", "garbage"]),
)
def test_malformed_webhooks_are_4xx(
    web: str, hook: str, business: str, params: dict[str, str], signing: str
) -> None:
    path_business = quote(business, safe="") or "x"
    url = f"{web}/webhooks/twilio/{path_business}/{hook}"
    headers = {}
    if signing == "valid":
        headers["X-Twilio-Signature"] = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(
            url, params
        )
    elif signing == "garbage":
        headers["X-Twilio-Signature"] = "AAAA" + str(len(params))
    r = send("POST", url, headers, data=params)
    ok(r, {204, 400, 403, 404, 405})
    if r is not None and signing != "valid":
        assert r.status_code != 204


@EXAMPLES
@given(body=st.binary(max_size=2048), chunked=st.booleans(), big=st.booleans())
def test_raw_and_oversized_webhook_bodies(web: str, body: bytes, chunked: bool, big: bool) -> None:
    if big:
        body = body * (70_000 // max(len(body), 1) + 1) or b"x" * 70_000
    url = f"{web}/webhooks/twilio/{B}/recording-status"
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    r = httpx.post(
        url,
        content=content,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": "bm9wZQ==",
        },
        timeout=10,
    )
    ok(r, {400, 403, 413})
    if len(body) > 64 * 1024:
        assert r.status_code == 413


def _tokens() -> st.SearchStrategy[str]:
    claims = st.fixed_dictionaries(
        {},
        optional={
            "business_id": st.one_of(
                st.just(B), st.text(max_size=70), st.integers(), st.lists(st.integers())
            ),
            "exp": st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=5)),
        },
    )
    signed = st.builds(
        lambda c, key: jwt.encode(c, key, algorithm="HS256"),
        claims,
        st.sampled_from([JWT_SECRET, "another-secret-of-enough-length-123456"]),
    )
    unsigned = st.builds(
        lambda c: (
            base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip("=")
            + "."
        ),
        claims,
    )
    return st.one_of(signed, unsigned, header_text, st.just(token(B)), st.just("x" * 5000))


@EXAMPLES
@given(
    tok=_tokens(),
    via=st.sampled_from(["bearer", "query", "scheme"]),
    sid=sid_like,
    route=st.sampled_from(["recording", "download", "recording/status", "list"]),
    limit=st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 500).map(str)),
    before=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.builds(
            lambda score, s: base64.urlsafe_b64encode(f"{score}:{s}".encode()).decode(),
            st.one_of(st.integers(), st.just(10**400), st.text(max_size=10)),
            st.text(max_size=10),
        ),
    ),
)
def test_tokens_sids_and_query_parameters(
    web: str, tok: str, via: str, sid: str, route: str, limit: str | None, before: str | None
) -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if via == "bearer":
        headers["Authorization"] = f"Bearer {tok}"
    elif via == "scheme":
        headers["Authorization"] = tok
    else:
        params["token"] = tok
    if route == "list":
        url = f"{web}/api/calls"
        if limit is not None:
            params["limit"] = limit
        if before is not None:
            params["before"] = before
    else:
        url = f"{web}/api/calls/{quote(sid, safe='') or 'x'}/{route}"
    ok(send("GET", url, headers, params=params), {200, 202, 400, 401, 404})


range_spec = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(-5, 30_000), st.integers(-5, 30_000)),
    st.builds(lambda a: f"{a}-", st.integers(0, 30_000)),
    st.builds(lambda a: f"-{a}", st.integers(0, 30_000)),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
)


@EXAMPLES
@given(
    unit=st.sampled_from(["bytes", "bytes", "Bytes", "items", ""]),
    specs=st.lists(range_spec, min_size=0, max_size=150),
    padding=st.sampled_from([0, 0, 8 * 1024]),
    if_range=st.one_of(st.none(), header_text),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_range_headers(
    web: str, unit: str, specs: list[str], padding: int, if_range: str | None, method: str
) -> None:
    value = f"{unit}=" + "," * padding + ",".join(specs)  # empty list elements are legal
    headers = {**auth(B), "Range": value}
    if if_range is not None:
        headers["If-Range"] = if_range
    r = send(method, f"{web}/api/calls/{STORED.call_sid}/recording", headers)
    ok(r, {200, 206, 416})
    if r is not None and r.status_code == 200 and method == "GET":
        assert r.content == media_bytes(STORED)


def test_huge_headers_and_many_ranges_then_still_answering(web: str) -> None:
    url = f"{web}/api/calls/{STORED.call_sid}/recording"
    many = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(150))
    r = httpx.get(url, headers={**auth(B), "Range": many}, timeout=10)
    ok(r, {200, 206, 416})
    r = httpx.get(url, headers={**auth(B), "X-Padding": "a" * 8192}, timeout=10)
    ok(r, {200, 431})
    r = httpx.get(url, headers={**auth(B), "Authorization": "Bearer " + "a" * 8192}, timeout=10)
    ok(r, {401, 431})
    r = httpx.get(url, headers={**auth(B), "Range": "bytes=0-9"}, timeout=10)
    assert r.status_code == 206 and r.content == media_bytes(STORED)[:10]


@EXAMPLES
@given(
    limit=st.one_of(
        st.none(), st.text(max_size=8), st.sampled_from(["²", "٣", "1e2", "0", "201", " 5"])
    ),
    before=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.builds(
            lambda score, s: base64.urlsafe_b64encode(f"{score}:{s}".encode()).decode(),
            st.one_of(st.integers(), st.just(10**400), st.just(2**60), st.text(max_size=10)),
            st.text(max_size=10),
        ),
    ),
)
def test_listing_query_parameters(web: str, limit: str | None, before: str | None) -> None:
    params = {k: v for k, v in (("limit", limit), ("before", before)) if v is not None}
    r = send("GET", f"{web}/api/calls", auth(B), params=params)
    ok(r, {200, 400})
