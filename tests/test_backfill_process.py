"""``callrec backfill`` as a real process: 5,000 past calls over many pages, killed
(SIGKILL) mid-run, resumed by the same command, and a third run that adds nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import redis

from calls import keys
from calls.redis_values import text_map
from tests.stack import ROOT, Stack, wait_for
from twilio_sim import Simulator, past_calls

B = "biz-history"


def _backfill(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "callrec.cli", "backfill", "--business", B, *args],
        env=stack.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_backfill_survives_a_kill_and_a_second_run_adds_nothing(
    tmp_path: Path, redis_url: str, sim: Simulator
) -> None:
    calls, recs = past_calls(B, 5000, newest=datetime(2025, 6, 1, tzinfo=UTC))
    sim.add_calls(calls, recs)
    stack = Stack.around(sim, tmp=tmp_path, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    # 25 pages of calls then 25 of recordings; slow enough to be killed in the middle.
    sim.listing_delay_s = 0.05

    first = _backfill(stack, "--page-size", "200")

    def pages_done() -> int:
        return int(text_map(client.hgetall(keys.backfill(B))).get("pages", 0))

    wait_for(lambda: pages_done() >= 8 or first.poll() is not None, "eight pages")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    killed_at = text_map(client.hgetall(keys.backfill(B)))
    assert 0 < int(killed_at["calls_imported"]) < 5000

    sim.listing_delay_s = 0
    second = _backfill(stack, "--page-size", "200")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "imported 5000 calls and 5000 recordings" in out
    assert "resumed" in out
    assert "backfill" in err and "calls" in err  # the progress bar
    assert client.zcard(keys.calls_by_time(B)) == 5000
    assert not client.exists(keys.backfill(B))

    third = _backfill(stack)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert "imported 0 calls and 0 recordings" in out
    assert "5000 calls and 5000 recordings listed" in out
    client.close()


def test_bad_arguments_are_one_clear_line(tmp_path: Path, redis_url: str, sim: Simulator) -> None:
    stack = Stack.around(sim, tmp=tmp_path, redis_url=redis_url)
    wrong_order = _backfill(stack, "--since", "2025-03-09", "--until", "2025-03-01")
    _, err = wrong_order.communicate(timeout=60)
    assert wrong_order.returncode == 2
    assert err.strip() == "callrec backfill: since (2025-03-09) is after until (2025-03-01)"
    not_a_date = _backfill(stack, "--since", "March")
    _, err = not_a_date.communicate(timeout=60)
    assert not_a_date.returncode == 2
    assert "'March' is not a date (YYYY-MM-DD)" in err
