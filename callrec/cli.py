"""``callrec``: ``dev`` runs the stack locally; ``token`` prints an API token;
``status`` and ``dead-letters`` are the operator's views; ``check`` is the preflight."""

from __future__ import annotations

import argparse
import asyncio
import sys

from calls.errors import RedisTlsError
from config.settings import SettingsError, load_settings


def _token(args: argparse.Namespace) -> int:
    from ingest.auth import issue_token

    settings = load_settings(require=("CALLREC_JWT_SECRET",))
    assert settings.jwt_secret
    print(issue_token(settings.jwt_secret, args.business, args.ttl))
    return 0


def _dev(args: argparse.Namespace) -> int:
    try:
        from callrec.dev import run_dev
    except ModuleNotFoundError as exc:
        # The production image and `pip install -r requirements.txt` leave the dev parts out.
        print(f"callrec dev: not in this install ({exc}); use a checkout with `make dev`")
        return 2

    return run_dev(
        port=args.port, workers=args.workers, demo_calls=args.demo_calls, local_s3=args.local_s3
    )


def _status(args: argparse.Namespace) -> int:
    from callrec.operator import print_status

    settings = load_settings(require=("REDIS_URL",))
    return asyncio.run(print_status(settings, args.business))


def _dead_letters(args: argparse.Namespace) -> int:
    from callrec.operator import dead_letters

    settings = load_settings(require=("REDIS_URL",))
    return asyncio.run(dead_letters(settings, requeue=args.requeue, entry_id=args.id))


def _check(args: argparse.Namespace) -> int:
    from callrec.preflight import print_checks

    return print_checks(load_settings())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run web + worker locally (embedded Redis, simulator)")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--workers", type=int, default=1)
    dev.add_argument("--demo-calls", type=int, default=8)
    dev.add_argument(
        "--local-s3",
        action="store_true",
        help="STORAGE=s3 against a local S3-compatible server (moto) with a fresh bucket",
    )
    dev.set_defaults(func=_dev)

    token = sub.add_parser("token", help="print an API token for a business")
    token.add_argument("--business", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(func=_token)

    status = sub.add_parser("status", help="slots, leases, queues, pending entries")
    status.add_argument("--business")
    status.set_defaults(func=_status)

    dead = sub.add_parser("dead-letters", help="list (or requeue) dead letters")
    dead.add_argument("--requeue", action="store_true", help="requeue them (all, or --id)")
    dead.add_argument("--id", help="only this dead-letter entry")
    dead.set_defaults(func=_dead_letters)

    check = sub.add_parser(
        "check", help="preflight: Redis, storage, public URL, Twilio credentials (exit 1 on FAIL)"
    )
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (SettingsError, RedisTlsError) as exc:
        print(f"callrec {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
