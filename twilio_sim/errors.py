"""Twilio-shaped error responses, so callrec's error handling meets the real wire format."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from twilio_sim.models import Fault

_MESSAGES = {
    401: "Authenticate",
    404: "The requested resource was not found",
    429: "Too Many Requests",
}


def twilio_error(
    status: int, *, message: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    # Twilio's generic REST codes are 20000 + the HTTP status, except bad credentials.
    code = 20003 if status == 401 else 20000 + status
    body = {
        "code": code,
        "message": message or _MESSAGES.get(status, "Internal Server Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized() -> JSONResponse:
    return twilio_error(401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})


def not_found(path: str) -> JSONResponse:
    return twilio_error(404, message=f"The requested resource {path} was not found")


def _retry_after(seconds: float) -> str:
    # Whole seconds per RFC 9110; fractions are kept so tests can ask for sub-second waits.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def fault_response(fault: Fault, path: str) -> Response:
    if fault.kind == "not_found":
        return not_found(path)
    if fault.kind == "too_many":
        headers = None
        if fault.retry_after_s is not None:
            headers = {"Retry-After": _retry_after(fault.retry_after_s)}
        return twilio_error(429, headers=headers)
    return twilio_error(fault.status)
