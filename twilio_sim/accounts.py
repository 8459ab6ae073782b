"""Several Twilio accounts in one simulator: accounts and subaccounts, each with its own
auth token (and optional API keys) and region; credentials checked the way Twilio does
(an account's own, or its parent's); the account resource (``GET /Accounts/{sid}.json``,
which shows a subaccount's auth token to its parent); and an account-wide concurrency
limit answering 429 above it, with per-account counters."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twilio_sim.errors import not_found, twilio_error, unauthorized
from twilio_sim.resources import API_VERSION

CONCURRENT_HEADER = "Twilio-Concurrent-Requests"


def make_sid(prefix: str, seed: str) -> str:
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:32]


@dataclass
class SimAccount:
    sid: str
    auth_token: str
    parent_sid: str | None = None
    region: str | None = None  # None: served by the default API host
    api_keys: dict[str, str] = field(default_factory=dict)  # SK sid -> secret
    friendly_name: str = ""

    def accepts(self, user: str, password: str) -> bool:
        if hmac.compare_digest(user.encode(), self.sid.encode()):
            return hmac.compare_digest(password.encode(), self.auth_token.encode())
        secret = self.api_keys.get(user)
        return secret is not None and hmac.compare_digest(password.encode(), secret.encode())

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "owner_account_sid": self.parent_sid or self.sid,
            "auth_token": self.auth_token,
            "friendly_name": self.friendly_name or self.sid,
            "status": "active",
            "type": "Full",
            "uri": f"/{API_VERSION}/Accounts/{self.sid}.json",
        }


@dataclass
class Limit:
    max_concurrent: int
    retry_after_s: float | None = None


class AccountBook:
    """Accounts, their limits and counters, behind one lock (short critical sections)."""

    def __init__(self, main: SimAccount) -> None:
        self._lock = threading.Lock()
        self.main_sid = main.sid
        self._accounts: dict[str, SimAccount] = {main.sid: main}
        self._limits: dict[str, Limit] = {}
        self._inflight: Counter[str] = Counter()
        self._max_inflight: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()  # requests refused for their credentials

    def add(self, account: SimAccount) -> SimAccount:
        with self._lock:
            if account.parent_sid is not None and account.parent_sid not in self._accounts:
                raise ValueError(f"unknown parent account {account.parent_sid}")
            self._accounts[account.sid] = account
        return account

    def get(self, sid: str) -> SimAccount | None:
        with self._lock:
            return self._accounts.get(sid)

    def authorize(self, user: str, password: str, target_sid: str, region: str | None) -> int:
        """200 when the credentials may act on ``target_sid`` through this region's host;
        401 when they authenticate nothing here, 404 when they belong to an account with no
        right to the target (Twilio hides other accounts' resources)."""
        with self._lock:
            target = self._accounts.get(target_sid)
            candidates = [target] if target is not None else []
            if target is not None and target.parent_sid:
                candidates.append(self._accounts[target.parent_sid])
            if target is not None and target.region == region:
                if any(c.accepts(user, password) for c in candidates):
                    return 200
            known = any(
                a.region == region and a.accepts(user, password) for a in self._accounts.values()
            )
            self._rejected[target_sid] += 1
            return 404 if known else 401

    def set_limit(self, sid: str, max_concurrent: int | None, retry_after_s: float | None) -> None:
        with self._lock:
            if max_concurrent is None:
                self._limits.pop(sid, None)
            else:
                self._limits[sid] = Limit(max_concurrent, retry_after_s)

    def enter(self, sid: str) -> tuple[bool, int, float | None]:
        """Count a request in; (admitted, requests counted now, Retry-After for a 429).
        Every request arriving counts while it is answered, a refused one too, as
        Twilio's own counter does."""
        with self._lock:
            self._requests[sid] += 1
            self._inflight[sid] += 1
            now = self._inflight[sid]
            self._max_inflight[sid] = max(self._max_inflight[sid], now)
            limit = self._limits.get(sid)
            if limit is not None and now > limit.max_concurrent:
                self._throttled[sid] += 1
                return False, now, limit.retry_after_s
            return True, now, None

    def leave(self, sid: str) -> None:
        with self._lock:
            self._inflight[sid] -= 1

    def max_concurrent(self, sid: str) -> int:
        with self._lock:
            return self._max_inflight[sid]

    def current(self, sid: str) -> int:
        with self._lock:
            return self._inflight[sid]

    def throttled(self, sid: str) -> int:
        with self._lock:
            return self._throttled[sid]

    def requests(self, sid: str) -> int:
        with self._lock:
            return self._requests[sid]

    def rejected(self, sid: str | None = None) -> int:
        with self._lock:
            return sum(self._rejected.values()) if sid is None else self._rejected[sid]

    def reset_counters(self) -> None:
        with self._lock:
            self._max_inflight = Counter({a: n for a, n in self._inflight.items() if n > 0})
            self._throttled.clear()
            self._requests.clear()
            self._rejected.clear()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return run


class AccountLimit:
    """Mounted under /Accounts/{account_sid} after authentication: counts the request
    against its account for as long as it is answered (released just before the last
    body bytes go out, so a client holding the whole answer never sees itself counted),
    429 above the account's limit, and ``Twilio-Concurrent-Requests`` on every answer."""

    def __init__(self, app: ASGIApp, *, book: AccountBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = scope["path_params"].get("account_sid", "")
        admitted, now, retry_after_s = self.book.enter(sid)
        leave = _once(lambda: self.book.leave(sid))
        try:
            if not admitted:
                headers = {CONCURRENT_HEADER: str(now)}
                if retry_after_s is not None:
                    headers["Retry-After"] = (
                        str(int(retry_after_s))
                        if float(retry_after_s).is_integer()
                        else f"{retry_after_s:g}"
                    )
                response = twilio_error(429, message="Too Many Requests", headers=headers)
                leave()
                await response(scope, receive, send)
                return

            async def counted_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableHeaders(scope=message).append(CONCURRENT_HEADER, str(now))
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    leave()
                await send(message)

            await self.app(scope, receive, counted_send)
        finally:
            leave()


def _credentials(scope: Scope) -> tuple[str, str] | None:
    from twilio_sim.auth import credentials

    return credentials(Headers(scope=scope).get("authorization", ""))


def account_resource(book: AccountBook, region: str | None) -> Callable[[Request], Any]:
    """GET /2010-04-01/Accounts/{sid}.json: the account, to itself or its parent."""

    async def fetch(request: Request) -> Response:
        sid = request.path_params["account_sid"]
        creds = _credentials(request.scope)
        if creds is None:
            return unauthorized()
        status = book.authorize(creds[0], creds[1], sid, region)
        if status == 401:
            return unauthorized()
        if status == 404:
            return not_found(request.url.path)
        account = book.get(sid)
        assert account is not None
        return JSONResponse(account.as_json())

    return fetch
