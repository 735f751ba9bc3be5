"""``astrid review`` (serve the scanning page) and ``astrid person`` (who may sign in to it)."""

from __future__ import annotations

import argparse
import getpass
import sys

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def review(args: argparse.Namespace) -> int:
    import uvicorn

    from astrid_assets import settings
    from astrid_assets.review.app import create_app

    app = create_app()
    print(f"astrid review: http://{args.host}:{args.port}/ on database {settings.redact_url(settings.database_url())}",
          flush=True)
    # proxy_headers off: the trusted-proxy check needs the peer's own address, not X-Forwarded-For's
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def person(args: argparse.Namespace) -> int:
    from astrid_assets import settings
    from astrid_assets.review.records import ReviewRecords

    if args.no_password:
        password = None
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            print("astrid person: the passwords differ; nothing was changed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if password is not None and len(password) < 8:
        print("astrid person: a password has at least 8 characters", file=sys.stderr)
        return 1
    try:
        ReviewRecords(settings.database_url()).add_person(args.name, password, args.role)
    except ValueError as error:
        print(f"astrid person: {error}", file=sys.stderr)
        return 1
    print(f"astrid person: {args.name} ({args.role}) can sign in" if password else
          f"astrid person: {args.name} ({args.role}) can be signed in by the trusted proxy only")
    return 0


def add_parsers(commands) -> None:
    """Register ``astrid review`` and ``astrid person`` on the CLI's subcommands."""
    parser = commands.add_parser("review", help="serve the scanning page (queue, candidates, overview) in a browser")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine "
                        "only; 0.0.0.0 behind a proxy)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.set_defaults(handler=review)
    parser = commands.add_parser("person", help="add a person who may sign in to the scanning page (or change one)")
    parser.add_argument("name")
    parser.add_argument("--role", choices=("labeller", "expert"), default="labeller")
    parser.add_argument("--no-password", action="store_true",
                        help="signed in by the trusted proxy only (ASTRID_REVIEW_USER_HEADER)")
    parser.set_defaults(handler=person)
