"""``callrec dev --local-s3`` (what ``make dev-s3`` runs): the whole stack with
STORAGE=s3 against a local S3-compatible server, from one command."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.stack import start_dev, wait_for


def test_callrec_dev_local_s3_stores_in_the_bucket_and_redirects(tmp_path: Path) -> None:
    dev = start_dev(tmp_path, "--local-s3", "--demo-calls", "2")
    try:
        s3_url = re.search(
            r"local S3 \(moto, in memory\): (http://127\.0\.0\.1:\d+) ", dev.output()
        )
        assert s3_url, dev.output()
        base = dev.base_url
        params = {"token": dev.token}
        sid = httpx.get(f"{base}/api/calls", params=params).json()["calls"][0]["call_sid"]
        url = f"{base}/api/calls/{sid}/recording"
        cached = tmp_path / ".callrec-dev" / "s3-cache" / f"{sid}.mp3"

        def stored() -> bool:
            return httpx.get(url, params=params).status_code == 200

        wait_for(stored, "a demo recording to be stored")  # the local cache hit
        body = cached.read_bytes()
        assert body.startswith(b"ID3")
        cached.unlink()  # now only the bucket has it: the web redirects there
        r = httpx.get(url, params=params)
        assert r.status_code == 302
        assert r.headers["location"].startswith(f"{s3_url.group(1)}/callrec-dev/{sid}.mp3?")
        assert httpx.get(r.headers["location"]).content == body
    finally:
        assert dev.stop() == 0, dev.output()
