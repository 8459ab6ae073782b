"""Twilio's REST surface that callrec touches: recording media, metadata and per-call listing."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from twilio_sim.accounts import AccountBook, AccountLimit, account_resource
from twilio_sim.auth import TwilioAuth
from twilio_sim.cdn import CdnSigner
from twilio_sim.errors import fault_response, not_found, twilio_error
from twilio_sim.models import Fault, SimRecording
from twilio_sim.resources import API_VERSION, recording_json, recording_page
from twilio_sim.state import MediaSettings, SimState, Slot
from twilio_sim.streaming import ActiveResponses, CutOff, send_media

logger = logging.getLogger(__name__)


HOLD_POLL_S = 0.02


def _base_url(scope: Scope) -> str:
    url = Request(scope).url
    return f"{url.scheme}://{url.netloc}"


class RecordingResource:
    """GET .../Recordings/{RE}[.mp3|.json]: media (with scripted faults) or metadata."""

    def __init__(
        self,
        state: SimState,
        settings: MediaSettings,
        signer: CdnSigner,
        active: ActiveResponses,
        book: AccountBook,
    ) -> None:
        self.state = state
        self.settings = settings
        self.signer = signer
        self.active = active
        self.book = book

    def _filed(self, rec: SimRecording | None, scope: Scope) -> SimRecording | None:
        """``rec`` when it is filed under the path's account, else None (a 404)."""
        if rec is None:
            return None
        owner = rec.account_sid or self.book.main_sid
        return rec if owner == scope["path_params"].get("account_sid") else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name: str = scope["path_params"]["name"]
        if name.endswith(".json"):
            await self._metadata(name.removesuffix(".json"), scope, receive, send)
        elif name.endswith(".mp3") or "." not in name:
            await self._media(name.removesuffix(".mp3"), scope, receive, send)
        else:
            await not_found(scope["path"])(scope, receive, send)

    async def _metadata(self, sid: str, scope: Scope, receive: Receive, send: Send) -> None:
        rec = self._filed(self.state.get(sid), scope)
        response: Response = not_found(scope["path"])
        if rec is not None:
            response = JSONResponse(
                recording_json(
                    rec,
                    account_sid=rec.account_sid or self.book.main_sid,
                    base_url=_base_url(scope),
                    created=self.state.created_at(sid),
                )
            )
        await response(scope, receive, send)

    async def _media(self, sid: str, scope: Scope, receive: Receive, send: Send) -> None:
        rec, fault = self.state.begin_media_request(sid)
        if self._filed(rec, scope) is None or rec is None:
            await not_found(scope["path"])(scope, receive, send)
            return
        with self.state.in_flight(rec.business_id) as slot:
            cut = await self.active.run(
                receive, lambda: self._respond(rec, fault, slot, scope, receive, send)
            )
        if cut:
            raise CutOff(sid)

    async def _respond(
        self,
        rec: SimRecording,
        fault: Fault | None,
        slot: Slot,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        if self.settings.latency_s:
            await anyio.sleep(self.settings.latency_s)
        if self.settings.hold:
            # Polled, not an anyio.Event: tests flip it from their own thread. Released
            # requests go on one by one in arrival order, as they would have without it.
            with self.state.held() as my_turn:
                while self.settings.hold or not my_turn():  # noqa: ASYNC110
                    await anyio.sleep(HOLD_POLL_S)
        if fault is not None and fault.is_status:
            logger.debug("fault %s for %s", fault.kind, rec.recording_sid)
            slot.release()
            await fault_response(fault, scope["path"])(scope, receive, send)
            return False
        if self.settings.redirect_to_cdn:
            # Body faults ride along to the CDN, where the body is actually sent.
            ticket = self.state.issue_ticket(fault)
            location = self.signer.location(rec.recording_sid, ticket)
            slot.release()
            await RedirectResponse(location, status_code=302)(scope, receive, send)
            return False
        return await send_media(send, rec, self.settings, fault, self.state, slot)


def _list_endpoint(state: SimState, book: AccountBook) -> Route:
    async def list_call_recordings(request: Request) -> Response:
        call_sid = request.path_params["call_sid"]
        account_sid = request.path_params["account_sid"]
        base = _base_url(request.scope)
        recs = [
            recording_json(
                r, account_sid=account_sid, base_url=base, created=state.created_at(r.recording_sid)
            )
            for r in state.for_call(call_sid)
            if (r.account_sid or book.main_sid) == account_sid
        ]
        return JSONResponse(recording_page(recs, account_sid=account_sid, call_sid=call_sid))

    return Route("/Calls/{call_sid}/Recordings.json", list_call_recordings, methods=["GET"])


async def _twilio_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return not_found(request.url.path)
    return twilio_error(exc.status_code, message=exc.detail)


def build_api_app(
    state: SimState,
    settings: MediaSettings,
    signer: CdnSigner,
    active: ActiveResponses,
    *,
    book: AccountBook,
    region: str | None = None,
    extra_routes: Sequence[Route] = (),
) -> Starlette:
    """The REST API of one host: the default one (``region`` None) or a region's, which
    serves only the accounts of that region."""
    recordings = RecordingResource(state, settings, signer, active, book)
    account_routes = [
        *extra_routes,
        _list_endpoint(state, book),
        Route("/Recordings/{name}", recordings, methods=["GET"]),
    ]
    auth = Middleware(TwilioAuth, book=book, region=region)
    limit = Middleware(AccountLimit, book=book)
    return Starlette(
        routes=[
            Route(
                f"/{API_VERSION}/Accounts/{{account_sid}}.json",
                account_resource(book, region),
                methods=["GET"],
            ),
            Mount(
                f"/{API_VERSION}/Accounts/{{account_sid}}",
                routes=account_routes,
                middleware=[auth, limit],
            ),
        ],
        exception_handlers={HTTPException: _twilio_http_error},
    )
