"""Start one service process: green first, verify it, then run the nameko container.

python -m common.runner <service-name> [--config path]
Refuses to start when psycopg2 is not green (see common/green.py).
"""
from common import green  # noqa: F401  (monkey-patches before anything else imports sockets)

import argparse
import importlib
import logging
import os
import signal
import sys

import eventlet

from common.config import load_config
from common.logs import setup_logging
from common.secrets import ROOT
from common.topology import SERVICES, http_port

log = logging.getLogger("idsync.runner")


def service_class(name):
    module, cls = SERVICES[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def default_config_path(name):
    base = "gateway" if name == "gateway" else f"services/{name}"
    return str(ROOT / base / "config.yml")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    green.make_green()
    config = load_config(args.config or default_config_path(args.service))
    if os.environ.get("IDSYNC_PORT_OFFSET"):  # a second stack (tests) beside the dev one
        config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{http_port(args.service)}"
    setup_logging(os.environ.get("IDSYNC_PROCESS_NAME", args.service), config.get("LOG_LEVEL", "INFO"))

    from nameko.runners import ServiceRunner

    runner = ServiceRunner(config)
    runner.add_service(service_class(args.service))

    def stop(signum, frame):
        eventlet.spawn_n(runner.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    log.info("service %s started (max_workers=%s, http=%s)", args.service,
             config.get("max_workers"), config.get("WEB_SERVER_ADDRESS"))
    runner.wait()
    log.info("service %s stopped", args.service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
