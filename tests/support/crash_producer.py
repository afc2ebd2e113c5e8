"""Commit a marketplace customer change (and its outbox event) as the marketplace role, then die
with SIGKILL before any relay could publish it. Usage: python -m tests.support.crash_producer TENANT CUSTOMER NAME"""
import os
import signal
import sys

from common import green

green.make_green()

from common.config import load_config  # noqa: E402
from common.db import Store, make_engine  # noqa: E402
from common.outbox import Outbox  # noqa: E402
from common.secrets import ROOT  # noqa: E402
from services.marketplace import models, snapshots  # noqa: E402


def main():
    tenant, customer, name = sys.argv[1:4]
    config = load_config(ROOT / "services" / "marketplace" / "config.yml")
    store = Store(make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=1))
    with store.transaction() as session:
        snapshots.apply_customer(session, Outbox("marketplace", models.outbox), tenant, {"id": customer, "name": name})
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
