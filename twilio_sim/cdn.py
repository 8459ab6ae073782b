"""The signed-URL CDN that Twilio's media endpoint may redirect to.

It sits on its own port, so it is a different origin: a client that forwards its Twilio
Authorization header across the redirect is refused, as S3-style presigned storage does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from twilio_sim.state import MediaSettings, SimState
from twilio_sim.streaming import ActiveResponses, CutOff, send_media

logger = logging.getLogger(__name__)

URL_TTL_S = 300


class CdnSigner:
    """Issues and checks the signed media locations; base_url is known once the CDN binds."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self.base_url = ""

    def _signature(self, recording_sid: str, ticket: str, expires: int) -> str:
        msg = f"{recording_sid}:{ticket}:{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def location(self, recording_sid: str, ticket: str) -> str:
        expires = int(time.time()) + URL_TTL_S
        sig = self._signature(recording_sid, ticket, expires)
        return (
            f"{self.base_url}/media/{recording_sid}.mp3"
            f"?ticket={ticket}&Expires={expires}&Signature={sig}"
        )

    def verify(self, recording_sid: str, query: QueryParams) -> bool:
        try:
            expires = int(query.get("Expires", ""))
        except ValueError:
            return False
        expected = self._signature(recording_sid, query.get("ticket", ""), expires)
        fresh = expires >= time.time()
        return fresh and hmac.compare_digest(expected, query.get("Signature", ""))


def _access_denied(message: str) -> Response:
    body = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
    return Response(body, status_code=403, media_type="application/xml")


class CdnMedia:
    """GET /media/{RE}.mp3?ticket&Expires&Signature."""

    def __init__(
        self, state: SimState, settings: MediaSettings, signer: CdnSigner, active: ActiveResponses
    ) -> None:
        self.state = state
        self.settings = settings
        self.signer = signer
        self.active = active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = scope["path_params"]["name"].removesuffix(".mp3")
        if "authorization" in Headers(scope=scope):
            await _access_denied("Only one auth mechanism allowed")(scope, receive, send)
            return
        if not self.signer.verify(sid, QueryParams(scope["query_string"])):
            logger.info("bad or expired CDN signature for %s", sid)
            await _access_denied("Request has expired or signature does not match")(
                scope, receive, send
            )
            return
        rec = self.state.get(sid)
        if rec is None:
            await Response("Not Found", status_code=404)(scope, receive, send)
            return
        fault = self.state.redeem_ticket(QueryParams(scope["query_string"]).get("ticket", ""))
        with self.state.in_flight(rec.business_id) as slot:
            cut = await self.active.run(
                receive, lambda: send_media(send, rec, self.settings, fault, self.state, slot)
            )
        if cut:
            raise CutOff(sid)


def build_cdn_app(
    state: SimState, settings: MediaSettings, signer: CdnSigner, active: ActiveResponses
) -> Starlette:
    media = CdnMedia(state, settings, signer, active)
    return Starlette(routes=[Route("/media/{name}", media, methods=["GET"])])
