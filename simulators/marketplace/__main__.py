"""python -m simulators.marketplace --port 8601 [--user u --password p --subscription-key k]
[--generate-customers 500 --generate-lines 5000] [--account name] [--seed-file seed.json] [limits...]"""
from __future__ import annotations

import sys

from .. import kit
from .app import create_app


def add_arguments(parser) -> None:
    parser.add_argument("--rate-limit-per-minute", type=int)
    parser.add_argument("--rate-window-seconds", type=float)
    parser.add_argument("--token-ttl-seconds", type=float)
    parser.add_argument("--max-limit", type=int)
    parser.add_argument("--money-as", choices=["string", "number"])
    parser.add_argument("--user", help="API user to create at start (with --password, --subscription-key)")
    parser.add_argument("--password")
    parser.add_argument("--subscription-key")
    parser.add_argument("--marketplace", default="us")
    parser.add_argument("--account", default="default", help="account of --user and of the generated customers")
    parser.add_argument("--generate-customers", type=int, default=0)
    parser.add_argument("--generate-lines", type=int, default=0)
    parser.add_argument("--generate-seed", type=int, default=1)


def configure(app, args) -> None:
    client = app.test_client()  # reuse the admin API so the CLI and tests share one path
    changes = {k: v for k, v in {
        "rate_limit_per_minute": args.rate_limit_per_minute, "rate_window_seconds": args.rate_window_seconds,
        "token_ttl_seconds": args.token_ttl_seconds, "max_limit": args.max_limit, "money_as": args.money_as,
    }.items() if v is not None}
    calls = []
    if changes:
        calls.append(("/_sim/config", changes))
    if args.user:
        calls.append(("/_sim/seed", {"credentials": [{
            "user": args.user, "password": args.password or "", "subscription_key": args.subscription_key or "",
            "marketplace": args.marketplace, "account": args.account}]}))
    if args.generate_customers or args.generate_lines:
        calls.append(("/_sim/generate", {"seed": args.generate_seed, "customers": args.generate_customers or 50,
                                         "lines": args.generate_lines or 200, "account": args.account}))
    for path, payload in calls:
        resp = client.post(path, json=payload)
        if resp.status_code >= 300:
            raise SystemExit(f"{path} failed: {resp.status_code} {resp.get_data(as_text=True)}")


if __name__ == "__main__":
    sys.exit(kit.main(create_app, 8601, add_arguments=add_arguments, configure=configure))
