"""Simulator: the in-process handle tests and `callrec dev` use to run and script fake Twilio."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from types import TracebackType

from twilio_sim.accounts import AccountBook, SimAccount, make_sid
from twilio_sim.api import build_api_app
from twilio_sim.cdn import CdnSigner, build_cdn_app
from twilio_sim.history import CallLog, SimCall
from twilio_sim.listing import DeletionLog, account_routes
from twilio_sim.models import (
    DEFAULT_FROM,
    DEFAULT_TO,
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    Fault,
    SimRecording,
    demo_recordings,
)
from twilio_sim.resources import recording_path
from twilio_sim.server import ServerThread
from twilio_sim.state import MediaSettings, SimState
from twilio_sim.streaming import ActiveResponses
from twilio_sim.webhooks import (
    call_status_params,
    conference_status_params,
    post_signed,
    recording_status_params,
)

logger = logging.getLogger(__name__)


class Simulator:
    """Twilio's media/listing API plus a signed-URL CDN, each on its own loopback port;
    with ``regions``, one more API host per region, serving only that region's accounts."""

    demo_recordings = staticmethod(demo_recordings)

    def __init__(
        self,
        account_sid: str = DEMO_ACCOUNT_SID,
        auth_token: str = DEMO_AUTH_TOKEN,
        *,
        regions: tuple[str, ...] = (),
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.regions = regions
        self.book = AccountBook(SimAccount(account_sid, auth_token, friendly_name="main"))
        self._region_urls: dict[str, str] = {}
        self._state = SimState()
        self._calls = CallLog()
        self._deletions = DeletionLog()
        self._settings = MediaSettings()
        self._signer = CdnSigner()
        self._active = ActiveResponses()
        self._servers: ServerThread | None = None
        self._base_url = ""

    # lifecycle

    def start(self) -> None:
        if self._servers is not None:
            raise RuntimeError("simulator already started")
        self._active = ActiveResponses()
        api_app = functools.partial(
            build_api_app, self._state, self._settings, self._signer, self._active, book=self.book
        )
        servers = ServerThread(
            [
                api_app(
                    extra_routes=account_routes(
                        self._state,
                        self._calls,
                        self._deletions,
                        self._settings,
                        account_sid=self.account_sid,
                    ),
                ),
                build_cdn_app(self._state, self._settings, self._signer, self._active),
                *(api_app(region=region) for region in self.regions),
            ],
            before_stop=self._active.abort_all,
        )
        servers.start()
        self._servers = servers
        self._base_url, self._signer.base_url, *region_urls = servers.urls()
        self._region_urls = dict(zip(self.regions, region_urls, strict=True))
        logger.info("twilio simulator on %s (cdn %s)", self._base_url, self._signer.base_url)

    def stop(self) -> None:
        if self._servers is not None:
            self._servers.stop()
            self._servers = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_running(self) -> None:
        if self._servers is None:
            raise RuntimeError("simulator is not running")

    @property
    def base_url(self) -> str:
        self._check_running()
        return self._base_url

    @property
    def cdn_base_url(self) -> str:
        self._check_running()
        return self._signer.base_url

    def region_base_url(self, region: str) -> str:
        """The API host of ``region`` (what TWILIO_REGION_API_BASES maps it to in tests)."""
        self._check_running()
        return self._region_urls[region]

    def recording_url(self, recording_sid: str, account_sid: str | None = None) -> str:
        """The RecordingUrl Twilio would send (no extension)."""
        return self.base_url + recording_path(account_sid or self.account_sid, recording_sid)

    # accounts (twilio_sim.accounts)

    def add_account(
        self,
        name: str,
        *,
        subaccount: bool = False,
        region: str | None = None,
        api_key: bool = False,
    ) -> SimAccount:
        """A new account (``subaccount``: of the main account), SIDs derived from ``name``."""
        if region is not None and region not in self.regions:
            raise ValueError(f"simulator has no {region} host (regions={self.regions})")
        seed = f"{self.account_sid}:{name}"
        account = SimAccount(
            make_sid("AC", seed),
            make_sid("", seed + ":token"),
            parent_sid=self.account_sid if subaccount else None,
            region=region,
            friendly_name=name,
        )
        if api_key:
            account.api_keys[make_sid("SK", seed + ":key")] = make_sid("", seed + ":secret")
        return self.book.add(account)

    def set_account_limit(
        self, account_sid: str, max_concurrent: int | None, *, retry_after_s: float | None = None
    ) -> None:
        """Above ``max_concurrent`` requests at once the account answers 429 (Twilio's
        20429), with ``Retry-After`` when given; None lifts the limit."""
        self.book.set_limit(account_sid, max_concurrent, retry_after_s)

    def account_max_concurrent(self, account_sid: str) -> int:
        """Most requests the account had at once (refused ones included)."""
        return self.book.max_concurrent(account_sid)

    def account_current(self, account_sid: str) -> int:
        return self.book.current(account_sid)

    def account_throttled(self, account_sid: str) -> int:
        """429s the account answered."""
        return self.book.throttled(account_sid)

    def account_requests(self, account_sid: str) -> int:
        return self.book.requests(account_sid)

    def credential_rejections(self, account_sid: str | None = None) -> int:
        """Requests refused (401/404) because their credentials may not act on the
        account in their path."""
        return self.book.rejected(account_sid)

    def _token(self, account_sid: str | None) -> tuple[str, str]:
        account = self.book.get(account_sid or self.account_sid)
        if account is None:
            raise ValueError(f"unknown account {account_sid}")
        return account.sid, account.auth_token

    # scripting

    def add_recording(self, rec: SimRecording) -> None:
        self._state.add(rec)

    def add_calls(self, calls: Sequence[SimCall], recordings: Sequence[SimRecording] = ()) -> None:
        """Past calls (the account-level Calls list) and their recordings."""
        self._calls.add_many(list(calls))
        self._state.add_many(list(recordings))

    def set_faults(self, recording_sid: str, faults: list[Fault]) -> None:
        self._state.set_faults(recording_sid, faults)

    @property
    def latency_s(self) -> float:
        return self._settings.latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        self._settings.latency_s = value

    @property
    def chunk_delay_s(self) -> float:
        return self._settings.chunk_delay_s

    @chunk_delay_s.setter
    def chunk_delay_s(self, value: float) -> None:
        self._settings.chunk_delay_s = value

    @property
    def chunk_size(self) -> int:
        return self._settings.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if value < 1:
            raise ValueError("chunk_size must be positive")
        self._settings.chunk_size = value

    @property
    def hold_media(self) -> bool:
        """While True, media requests wait before answering (see MediaSettings.hold)."""
        return self._settings.hold

    @hold_media.setter
    def hold_media(self, value: bool) -> None:
        self._settings.hold = value

    @property
    def listing_delay_s(self) -> float:
        """Added before each account-level Calls/Recordings page."""
        return self._settings.listing_delay_s

    @listing_delay_s.setter
    def listing_delay_s(self, value: float) -> None:
        self._settings.listing_delay_s = value

    @property
    def on_delete(self) -> Callable[[SimRecording], None] | None:
        """Called (in a worker thread) with each recording just before a DELETE removes it."""
        return self._deletions.on_delete

    @on_delete.setter
    def on_delete(self, hook: Callable[[SimRecording], None] | None) -> None:
        self._deletions.on_delete = hook

    @property
    def redirect_to_cdn(self) -> bool:
        return self._settings.redirect_to_cdn

    @redirect_to_cdn.setter
    def redirect_to_cdn(self, value: bool) -> None:
        self._settings.redirect_to_cdn = value

    # counters

    def downloads(self, recording_sid: str) -> int:
        return self._state.downloads(recording_sid)

    def completed_downloads(self, recording_sid: str) -> int:
        """Bodies sent in full (the last byte handed to the server), as a client would
        have received them unless it died at that very moment."""
        return self._state.completed_downloads(recording_sid)

    def total_downloads(self) -> int:
        return self._state.total_downloads()

    def media_requests(self, recording_sid: str) -> int:
        return self._state.media_requests(recording_sid)

    def max_concurrent(self, business_id: str) -> int:
        return self._state.max_concurrent(business_id)

    def current_concurrent(self, business_id: str) -> int:
        return self._state.current_concurrent(business_id)

    def order_started(self, business_id: str) -> list[str]:
        return self._state.order_started(business_id)

    def listing_requests(self) -> int:
        """Recordings and calls list requests (per call, and account-wide)."""
        return self._state.listing_requests() + self._calls.listing_requests()

    def first_media_request_times(self) -> dict[str, float]:
        """call_sid -> ``time.monotonic()`` of its first media request (this process's clock)."""
        return self._state.first_media_request_times()

    def fail_deletes(self, faults: list[Fault]) -> None:
        """The next DELETEs (of any recording) answer with these faults, in order."""
        self._deletions.fail_next(faults)

    def deletes(self, recording_sid: str) -> int:
        """Successful DELETEs of a recording (a second one is answered 404, not counted)."""
        return self._deletions.deletes(recording_sid)

    def total_deletes(self) -> int:
        return self._deletions.total()

    def deletes_not_found(self, recording_sid: str) -> int:
        return self._deletions.not_found(recording_sid)

    def has_recording(self, recording_sid: str) -> bool:
        return self._state.get(recording_sid) is not None

    def reset_counters(self) -> None:
        self._state.reset_counters()
        self._calls.reset_counters()
        self.book.reset_counters()

    # webhooks

    def send_call_status(
        self,
        url: str,
        *,
        call_sid: str,
        parent_call_sid: str = "",
        from_: str = DEFAULT_FROM,
        to: str = DEFAULT_TO,
        direction: str = "inbound",
        call_status: str = "completed",
        duration_s: int = 30,
        timestamp: str | None = None,
        sequence_number: int = 0,
        account_sid: str | None = None,
    ) -> int:
        """Signed with the auth token of ``account_sid`` (default: the main account)."""
        sid, token = self._token(account_sid)
        params = call_status_params(
            account_sid=sid,
            call_sid=call_sid,
            parent_call_sid=parent_call_sid,
            from_=from_,
            to=to,
            direction=direction,
            call_status=call_status,
            duration_s=duration_s,
            timestamp=timestamp,
            sequence_number=sequence_number,
        )
        return post_signed(url, params, token)

    def send_recording_status(
        self,
        url: str,
        rec: SimRecording,
        *,
        status: str = "completed",
        error_code: str = "",
        account_sid: str | None = None,
    ) -> int:
        """From the account the recording is filed under unless ``account_sid`` says
        otherwise (a test of a foreign AccountSid)."""
        sid, token = self._token(account_sid or rec.account_sid)
        params = recording_status_params(
            rec,
            account_sid=sid,
            base_url=self.base_url,
            status=status,
            error_code=error_code,
        )
        return post_signed(url, params, token)

    def send_conference_status(
        self,
        url: str,
        *,
        conference_sid: str,
        call_sid: str,
        event: str = "participant-join",
        sequence_number: int = 0,
        account_sid: str | None = None,
    ) -> int:
        sid, token = self._token(account_sid)
        params = conference_status_params(
            account_sid=sid,
            conference_sid=conference_sid,
            call_sid=call_sid,
            event=event,
            sequence_number=sequence_number,
        )
        return post_signed(url, params, token)
