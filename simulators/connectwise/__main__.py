"""python -m simulators.connectwise [--port 8603] [--companies N] [--rate-limit N] ..."""
import sys

from simulators import kit

from .app import create_app


def _add_arguments(parser):
    parser.add_argument("--company-id", default="demo", help="tenant generated at start")
    parser.add_argument("--public-key", default="public")
    parser.add_argument("--private-key", default="private")
    parser.add_argument("--companies", type=int, default=50,
                        help="customer companies to generate at start (0 = start empty)")
    parser.add_argument("--additions", type=int, default=None,
                        help="total additions to generate (default 1..6 per agreement)")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests/minute/company")
    parser.add_argument("--auth-failure-status", type=int, choices=(401, 404), default=None)
    parser.add_argument("--missing-client-id-status", type=int, choices=(400, 401), default=None)


def _configure(app, args):
    cw = app.extensions["connectwise"]
    changes = {k: v for k, v in (("rate_limit_per_minute", args.rate_limit),
                                 ("auth_failure_status", args.auth_failure_status),
                                 ("missing_client_id_status", args.missing_client_id_status))
               if v is not None}
    cw.base_config.update(changes)  # so /_sim/reset keeps the CLI's settings
    cw.configure(changes)
    if args.companies > 0:
        resp = app.test_client().post("/_sim/generate", json={
            "seed": args.seed, "companies": args.companies, "company_id": args.company_id,
            "additions": args.additions,
            "credentials": [{"public_key": args.public_key, "private_key": args.private_key}]})
        if resp.status_code != 200:
            raise SystemExit(f"generate failed: {resp.get_data(as_text=True)}")


if __name__ == "__main__":
    sys.exit(kit.main(create_app, 8603, add_arguments=_add_arguments, configure=_configure))
