"""Start one service process: green first, verify it, then run the nameko container.

python -m common.runner <service-name> [--config path]
Refuses to start when psycopg2 is not green (see common/green.py).

Every RPC reply a service waits for has a deadline (IDSYNC_RPC_REPLY_TIMEOUT seconds, default 120;
0 = none): nameko waits forever, and a reply can be lost - a process that starts (or reconnects)
while the broker is away may publish a request before its reply queue is declared, and the answer
to it is then dropped as unroutable. Found by the chaos suite: a posting pass waited for ever on
gateway.tenant_credentials, renewing its leases, so no replica could post those lines again.
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


def bound_rpc_replies(seconds):
    """Make nameko's RpcReply.result() raise RpcTimeout after ``seconds`` instead of waiting forever."""
    from nameko import rpc as nameko_rpc
    from nameko.exceptions import RpcTimeout

    if seconds <= 0 or getattr(nameko_rpc.RpcReply, "_idsync_bounded", False):
        return
    wait_forever = nameko_rpc.RpcReply.result

    def result(self):
        if self.resp_body is None:
            # our own exception instance: an outer eventlet.Timeout of the caller is left alone
            with eventlet.Timeout(seconds, RpcTimeout(f"no RPC reply within {seconds:g}s (lost with a broker "
                                                      "restart?)")):
                self.resp_body = self.reply_event.wait()
        return wait_forever(self)

    nameko_rpc.RpcReply.result = result
    nameko_rpc.RpcReply._idsync_bounded = True


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
    bound_rpc_replies(float(os.environ.get("IDSYNC_RPC_REPLY_TIMEOUT", "120") or 0))
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
