"""CLI: python -m simulators.autotask --port 8602 [--companies 500 --lines 1 5] [limit flags]."""
from __future__ import annotations

import argparse
import sys

from simulators import kit

from .app import create_app
from .generator import generate

DEFAULT_PORT = 8602


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--companies", type=int, default=0,
                        help="generate this many companies (a recurring contract each) at start")
    parser.add_argument("--lines", type=int, nargs=2, metavar=("MIN", "MAX"), default=(0, 0),
                        help="contract service lines per generated contract")
    parser.add_argument("--hourly-limit", type=int, default=10_000)
    parser.add_argument("--hourly-window", type=float, default=3600, help="seconds")
    parser.add_argument("--thread-limit", type=int, default=3)
    parser.add_argument("--latency-50", type=float, default=0.5, help="seconds added from 50%% used")
    parser.add_argument("--latency-75", type=float, default=1.0, help="seconds added from 75%% used")
    parser.add_argument("--today", default=None, help="pin the simulator date (YYYY-MM-DD)")


def _configure(app, args: argparse.Namespace) -> None:
    sim = app.extensions["autotask"]
    sim.set_config({"hourly_limit": args.hourly_limit, "hourly_window_seconds": args.hourly_window,
                    "thread_limit": args.thread_limit, "latency_50_seconds": args.latency_50,
                    "latency_75_seconds": args.latency_75, "today": args.today})
    if args.companies:
        generate(sim.store, {"seed": args.seed, "companies": args.companies,
                             "lines_per_contract": list(args.lines)})


if __name__ == "__main__":
    sys.exit(kit.main(create_app, DEFAULT_PORT, add_arguments=_add_arguments, configure=_configure))
