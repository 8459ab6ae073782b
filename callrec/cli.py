"""``callrec``: ``dev`` runs the stack locally; ``token`` prints an API token;
``status`` and ``dead-letters`` are the operator's views; ``check`` is the preflight;
``twilio-account`` registers a business's own Twilio account; ``secrets-key`` prints a
new CALLREC_SECRETS_KEY; ``backfill`` imports the past; ``erase`` forgets recordings for
good; ``keda-triggers`` prints the workers' autoscaler triggers for a Redis Cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date

from calls.errors import RedisTlsError
from config.settings import SettingsError, load_settings


def _token(args: argparse.Namespace) -> int:
    from ingest.auth import issue_admin_token, issue_token

    if bool(args.admin) == bool(args.business):
        print("callrec token: give either --business B or --admin", file=sys.stderr)
        return 2
    settings = load_settings(require=("CALLREC_JWT_SECRET",))
    assert settings.jwt_secret
    if args.admin:
        print(issue_admin_token(settings.jwt_secret, args.ttl))
    else:
        print(issue_token(settings.jwt_secret, args.business, args.ttl))
    return 0


def _business_arg(value: str) -> str:
    from calls.errors import BadRequest
    from calls.sids import business_id

    try:
        return business_id(value)
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _twilio_account(args: argparse.Namespace) -> int:
    from callrec import twilio_accounts

    settings = load_settings(require=("REDIS_URL",))
    if args.action == "set":
        # "-": read the secret from stdin, so it stays out of `ps` and shell history.
        stdin_lines = (
            iter(sys.stdin.read().splitlines())
            if "-"
            in (
                args.auth_token,
                args.api_secret,
            )
            else iter(())
        )
        fields = {
            "account_sid": args.account_sid,
            "auth_token": next(stdin_lines, "") if args.auth_token == "-" else args.auth_token,
            "api_key": args.api_key,
            "api_secret": next(stdin_lines, "") if args.api_secret == "-" else args.api_secret,
            "region": args.region,
        }
        return asyncio.run(twilio_accounts.set_account(settings, args.business, fields))
    if args.action == "show":
        return asyncio.run(twilio_accounts.show_account(settings, args.business))
    return asyncio.run(twilio_accounts.delete_account(settings, args.business))


def _secrets_key(args: argparse.Namespace) -> int:
    from callrec.twilio_accounts import print_new_key

    return print_new_key()


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


def _date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date (YYYY-MM-DD)") from None


def _backfill(args: argparse.Namespace) -> int:
    from callrec.lifecycle_cmds import run_backfill
    from calls.errors import BadRequest
    from lifecycle.backfill import BackfillRequest

    try:
        request = BackfillRequest(
            business_id=args.business,
            since=args.since,
            until=args.until,
            numbers=tuple(args.number or ()),
            download=args.download,
            page_size=args.page_size,
        )
    except BadRequest as exc:
        print(f"callrec backfill: {exc.detail}", file=sys.stderr)
        return 2
    settings = load_settings(require=("REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"))
    return run_backfill(settings, request)


def _erase(args: argparse.Namespace) -> int:
    from callrec.lifecycle_cmds import erase
    from calls import sids
    from calls.errors import BadRequest

    try:
        sids.business_id(args.business)
        call = sids.call_sid(args.call, what="--call") if args.call else None
    except BadRequest as exc:
        print(f"callrec erase: {exc.detail}", file=sys.stderr)
        return 2
    settings = load_settings(require=("REDIS_URL",))
    return asyncio.run(erase(settings, args.business, call))


def _keda_triggers(args: argparse.Namespace) -> int:
    from callrec.keda import render_patch

    if args.shards < 1:
        print("callrec keda-triggers: --shards must be at least 1", file=sys.stderr)
        return 2
    print(render_patch(args.shards), end="")
    return 0


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

    token = sub.add_parser("token", help="print an API token for a business (or an admin one)")
    token.add_argument("--business")
    token.add_argument("--admin", action="store_true", help="for /api/admin/... only")
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(func=_token)

    account = sub.add_parser("twilio-account", help="a business's own Twilio account")
    actions = account.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="register (or replace) it; secrets are encrypted")
    put.add_argument("--business", required=True, type=_business_arg)
    put.add_argument("--account-sid", required=True)
    put.add_argument("--auth-token", required=True, help="'-': read it from stdin")
    put.add_argument("--api-key", help="API key SID (SK...), used for REST requests")
    put.add_argument("--api-secret", help="'-': read it from stdin (after the auth token)")
    put.add_argument("--region", help="ie1 or au1 (default: the US1 host)")
    show = actions.add_parser("show", help="without secrets; every business when none given")
    show.add_argument("--business", type=_business_arg)
    drop = actions.add_parser("delete", help="back to the main account")
    drop.add_argument("--business", required=True, type=_business_arg)
    account.set_defaults(func=_twilio_account)

    key = sub.add_parser("secrets-key", help="print a new CALLREC_SECRETS_KEY (a Fernet key)")
    key.set_defaults(func=_secrets_key)

    status = sub.add_parser("status", help="slots, leases, queues, pending entries")
    status.add_argument("--business")
    status.set_defaults(func=_status)

    dead = sub.add_parser("dead-letters", help="list (or requeue) dead letters")
    dead.add_argument("--requeue", action="store_true", help="requeue them (all, or --id)")
    dead.add_argument("--id", help="only this dead-letter entry")
    dead.set_defaults(func=_dead_letters)

    fill = sub.add_parser(
        "backfill", help="import calls and recordings made before callrec (resumable)"
    )
    fill.add_argument("--business", required=True)
    fill.add_argument("--since", type=_date, help="first day (YYYY-MM-DD), inclusive")
    fill.add_argument("--until", type=_date, help="last day (YYYY-MM-DD), inclusive")
    fill.add_argument(
        "--number",
        action="append",
        metavar="+1555...",
        help="only calls to or from this number (repeatable); for a shared Twilio account",
    )
    fill.add_argument(
        "--download",
        action="store_true",
        help="also download them, through the slots, never ahead of users' plays",
    )
    fill.add_argument("--page-size", type=int, default=1000, help=argparse.SUPPRESS)
    fill.set_defaults(func=_backfill)

    erase = sub.add_parser(
        "erase", help="erase a call's recordings (or a whole business's), for good"
    )
    erase.add_argument("--business", required=True)
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--call", metavar="CA...", help="this call")
    which.add_argument("--all", action="store_true", help="every call of the business")
    erase.set_defaults(func=_erase)

    keda = sub.add_parser(
        "keda-triggers",
        help="print the workers' KEDA ScaledObject patch for a Redis Cluster with N streams",
    )
    keda.add_argument(
        "--shards", type=int, required=True, help="EVENT_STREAM_SHARDS of the deployment"
    )
    keda.set_defaults(func=_keda_triggers)

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
