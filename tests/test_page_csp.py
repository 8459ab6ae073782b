"""The page's Content-Security-Policy lets audio come only from where plays are served."""

from __future__ import annotations

from config.settings import load_settings
from ingest.page import content_security_policy


def media_src(env: dict[str, str]) -> str:
    policy = content_security_policy(load_settings(env))
    [directive] = [d.strip() for d in policy.split(";") if d.strip().startswith("media-src")]
    return directive


def test_media_sources_follow_storage_and_serving() -> None:
    assert media_src({}) == "media-src 'self'"
    r2 = {"STORAGE": "s3", "S3_BUCKET": "b", "S3_ENDPOINT_URL": "https://acct.r2.example:443/x"}
    assert media_src(r2) == "media-src 'self' https://acct.r2.example:443"
    assert media_src({"STORAGE": "s3", "S3_BUCKET": "b"}) == (
        "media-src 'self' https://*.amazonaws.com"
    )
    assert media_src({**r2, "SERVE_S3_VIA": "proxy"}) == "media-src 'self'"
