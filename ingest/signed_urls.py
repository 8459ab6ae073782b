"""Short-lived signed media URLs (``SERVE_VIA=signed``), in nginx's ``secure_link`` format.

A play that passed the token and tenant check is answered ``302`` to
``/media/<file>?expires=<unix s>&md5=<sig>`` (plus ``&filename=<call_sid>.mp3`` for a
download). nginx checks the URL itself with ``secure_link`` / ``secure_link_md5``
(``deploy/nginx.conf``) and serves the file with sendfile; without nginx, the app serves the
same URL (``ingest/signed_media.py``) after the same check, with no JWT and no Redis.

The signature is nginx's own: ``base64url(md5("<expires><path><filename> <secret>"))``,
unpadded. MD5 because it is the only digest nginx's stock ``secure_link`` module computes
(Debian's nginx has no HMAC variant). It is a secret-suffix MAC, not an HMAC; what makes it
fit here: the secret comes last, so MD5's length extension (which appends after the secret)
yields no valid signature; the signed text is always an integer, a path made of a strict
SID pattern and a file name the app chose, so the chosen-prefix collisions that break MD5
cannot be steered into anything the app would sign; and each URL lives
``SIGNED_URL_TTL_SECONDS``. The comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlencode

MEDIA_PREFIX = "/media/"
# What a signed URL may name: a stored recording's file, nothing with a path separator.
MEDIA_NAME = re.compile(r"(?:CA|RE)[0-9a-f]{32}\.mp3")
# Longest md5 we look at: 22 characters of unpadded base64 (a bit of slack for padding).
_MAX_SIG_CHARS = 32


def signature(secret: str, *, path: str, expires: int, filename: str = "") -> str:
    """nginx's ``secure_link_md5 "$secure_link_expires$uri$arg_filename <secret>"``."""
    digest = hashlib.md5(f"{expires}{path}{filename} {secret}".encode(), usedforsecurity=True)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def signed_path(secret: str, *, name: str, expires: int, filename: str = "") -> str:
    """The path and query of the signed URL of stored file ``name`` (relative, so it
    resolves against whatever origin the browser used: the app's, or nginx's in front)."""
    if not MEDIA_NAME.fullmatch(name):
        raise ValueError(f"not a stored recording's file name: {name!r}")
    path = MEDIA_PREFIX + name
    query = {
        "expires": str(expires),
        "md5": signature(secret, path=path, expires=expires, filename=filename),
    }
    if filename:
        query["filename"] = filename
    return f"{path}?{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """``name`` is set when the URL may be served; otherwise ``reason`` says why not."""

    name: str | None
    reason: str = ""


def verify(
    secret: str,
    *,
    path: str,
    expires: str | None,
    md5: str | None,
    filename: str | None,
    now_s: float,
) -> Verdict:
    """Whether ``path`` with these query values is a URL the app signed and still valid."""
    if not expires or not md5 or not expires.isascii() or not expires.isdigit():
        return Verdict(None, "missing or malformed expires/md5")
    if len(md5) > _MAX_SIG_CHARS:
        return Verdict(None, "malformed md5")
    name = path.removeprefix(MEDIA_PREFIX)
    if not path.startswith(MEDIA_PREFIX) or not MEDIA_NAME.fullmatch(name):
        return Verdict(None, "not a recording's file name")
    expected = signature(secret, path=path, expires=int(expires), filename=filename or "")
    if not hmac.compare_digest(expected.encode(), md5.encode("ascii", "replace")):
        return Verdict(None, "bad signature")
    # nginx's rule: valid up to and including the second ``expires`` names.
    if now_s > int(expires):
        return Verdict(None, "expired")
    if filename and not MEDIA_NAME.fullmatch(filename):
        return Verdict(None, "malformed filename")
    return Verdict(name)
