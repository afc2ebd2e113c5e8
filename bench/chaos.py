"""`make chaos`: break the running product on purpose and prove that billing still comes out right.

python -m bench.chaos [--runs 20] [--seed N] [--chaos-seconds 90] [--quiet-seconds 300]
                      [--autotask 2] [--connectwise 2] [--customers 5] [--lines 40] [--rate 1.5]
                      [--profile chaos|test] [--fresh] [--keep-infra] [--no-results] [--json-out FILE]

Every run: fresh tenants of both PSAs are provisioned and mapped (bench/tenants.py); then for
``--chaos-seconds`` a seeded stream of marketplace changes goes in through the marketplace
simulator while a seeded schedule SIGKILLs and restarts services, stops or crashes RabbitMQ and
PostgreSQL, and injects vendor faults (429, 5xx, latency, timeouts, responses dropped after the
write); then a quiet period (bounded by ``--quiet-seconds``) lets the product converge, and the
invariants are checked and printed (bench/chaos_check.py, docs/chaos.md). A run with a broken
invariant makes the exit status 1. Results: bench/results/chaos-latest.{json,md}.

The suite runs its OWN PostgreSQL + RabbitMQ pair (profile "chaos": data in .run/chaos-infra, ports
7433/7673/17673/27673, node idsyncchaos@localhost, stack "chaos" at port offset +6000), never the
shared one, and stops that pair at the end (``--keep-infra`` leaves it running). Profile "test" is
the short form `make test` runs (tests/integration/test_chaos.py): names and ports derived from
IDSYNC_TEST_NAME / IDSYNC_TEST_PORT_OFFSET so two test sessions never meet.

Reproduce a run: ``python -m bench.chaos --runs 1 --seed <the run's seed>`` (same schedule, same
changes; the product's timing under them is the machine's).
"""
import argparse
import os
import signal
import sys
import time
import traceback

from common.secrets import ROOT

# the product under chaos: short sync interval, fast relays, a retry ladder a short outage fits in,
# posting backoffs that stay within a quiet period
CHAOS_ENV = {
    "IDSYNC_LOG_LEVEL": "INFO",
    "IDSYNC_SYNC_INTERVAL_MINUTES": "0.1",
    "IDSYNC_SYNC_SCHEDULE_SECONDS": "2",
    "IDSYNC_SYNC_POLL_SECONDS": "1",
    "IDSYNC_SYNC_THROTTLE_RETRY_SECONDS": "10",
    "IDSYNC_SYNC_STALE_SECONDS": "30",
    "IDSYNC_SYNC_MAX_WAIT_SECONDS": "10",
    "IDSYNC_SYNC_WAIT_BUDGET_SECONDS": "60",
    "IDSYNC_RETRY_BACKOFF": "[1, 3, 10, 30]",
    "IDSYNC_POSTING_BACKOFF": "[1, 15]",
    "IDSYNC_POSTING_MAX_ATTEMPTS": "10",
    "IDSYNC_POSTING_LEASE": "20",
    "IDSYNC_POSTING_SETTINGS_TTL": "5",
    "IDSYNC_AUTOTASK_TIMEOUT": "[2, 8]",
    "IDSYNC_CONNECTWISE_TIMEOUT": "[2, 8]",
    "IDSYNC_AUTOTASK_SLOT_WAIT": "5",
    "IDSYNC_CONNECTWISE_SLOT_WAIT": "5",
}


def profile(name):
    """The run's names and ports. ``chaos``: make chaos; ``test``: the short run inside make test."""
    if name == "chaos":
        return {"name": "chaos", "offset": 6000, "infra_dir": str(ROOT / ".run" / "chaos-infra"),
                "pg": 7433, "amqp": 7673, "mgmt": 17673, "dist": 27673, "node": "idsyncchaos@localhost"}
    test = os.environ.get("IDSYNC_TEST_NAME", "test")
    offset = int(os.environ.get("IDSYNC_TEST_PORT_OFFSET", "1000"))
    k = (offset // 100) % 100
    return {"name": f"{test}chaos", "offset": offset + 300,
            "infra_dir": str(ROOT / ".run" / f"{test}chaos-infra"),
            "pg": 7400 + k, "amqp": 7600 + k, "mgmt": 17600 + k, "dist": 27600 + k,
            "node": f"idsync{test}chaos@localhost"}


def configure(prof):
    """Point this process (and every process it starts) at the run's own pair, before anything reads
    the ports (tests/support/infra.py and common/dbsetup.py read them at import)."""
    os.environ.update({
        "IDSYNC_INFRA_DIR": prof["infra_dir"], "IDSYNC_PG_PORT": str(prof["pg"]),
        "IDSYNC_AMQP_PORT": str(prof["amqp"]), "IDSYNC_MGMT_PORT": str(prof["mgmt"]),
        "IDSYNC_DIST_PORT": str(prof["dist"]), "IDSYNC_RMQ_NODE": prof["node"],
        "IDSYNC_BENCH_NAME": prof["name"], "IDSYNC_BENCH_PORT_OFFSET": str(prof["offset"]),
    })
    os.environ.pop("IDSYNC_PG_SOCKET", None)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=None, help="seed of the first run (default: from the clock)")
    p.add_argument("--chaos-seconds", type=float, default=90)
    p.add_argument("--quiet-seconds", type=float, default=300, help="hard deadline to converge after the chaos")
    p.add_argument("--autotask", type=int, default=2, help="Autotask tenants per run")
    p.add_argument("--connectwise", type=int, default=2, help="ConnectWise tenants per run")
    p.add_argument("--customers", type=int, default=5)
    p.add_argument("--lines", type=int, default=40, help="subscription lines per tenant at the start")
    p.add_argument("--rate", type=float, default=1.5, help="marketplace changes per second (all tenants)")
    p.add_argument("--cooldown", type=float, default=0.0,
                   help="seconds before a subscription is changed again (0: same-second changes happen, docs/chaos.md)")
    p.add_argument("--kills", type=int, default=None, help="service kills per run (default: ~1 per 30 s)")
    p.add_argument("--no-infra", action="store_true", help="no RabbitMQ/PostgreSQL outages")
    p.add_argument("--no-faults", action="store_true", help="no vendor faults")
    p.add_argument("--profile", choices=["chaos", "test"], default="chaos")
    p.add_argument("--fresh", action="store_true", help="a fresh database, vhost and processes for every run")
    p.add_argument("--keep-infra", action="store_true", help="leave the run's PostgreSQL + RabbitMQ running")
    p.add_argument("--no-results", action="store_true", help="do not write bench/results")
    p.add_argument("--json-out", help="also write the figures here (the test reads them)")
    p.add_argument("--setup-timeout", type=float, default=600, help="provisioning and mapping a run's tenants")
    p.add_argument("--confirm-seconds", type=float, default=8, help="a converged state must hold this long")
    p.add_argument("--fast-teardown", action="store_true", help="SIGKILL the stack at the end instead of stopping it")
    p.add_argument("--cleanup", action="store_true",
                   help="only stop the profile's stack and PostgreSQL + RabbitMQ (after a run that was killed)")
    p.add_argument("--rmq-modes", default="stop,kill", help="how RabbitMQ goes down: stop (shutdown), kill (SIGKILL); none: never")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    prof = profile(args.profile)
    configure(prof)
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    from bench.chaos_run import Suite  # noqa: E402 - only now: the ports are read at import

    def terminate(signum, frame):   # SIGTERM (a test's timeout) cleans up like Ctrl-C: stack and pair down
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)

    suite = Suite(args, prof, CHAOS_ENV)
    if args.cleanup:
        suite.teardown()
        return 0
    try:
        ok = suite.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        ok = False
    except Exception:  # noqa: BLE001 - print, clean up, fail
        traceback.print_exc()
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
