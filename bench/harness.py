"""A stack of the product for one benchmark or chaos run.

Like the test stack (tests/support/infra.py) but named apart: database and vhost ``idsync_<name>``,
pids and logs under ``.run/<name>/``, every port moved by ``offset``. Each run starts from an empty
database and vhost, so figures never depend on an earlier run.

    with BenchStack("bench", offset=3000, extra_env={...}) as stack:
        stack.url("gateway", "/api/v1/...")
"""
import contextlib
import os
import subprocess
import sys
import time

import requests
from sqlalchemy import create_engine

from common.secrets import ROOT, ensure_secrets
from common.topology import SERVICES, SIMULATORS
from tests.support import infra

PY = sys.executable
# faster relays and retries than production, so a run measures the product, not its poll intervals
BASE_ENV = {
    # no nightly PSA re-read in a measured run (it would add reads at whatever hour the run meets)
    "IDSYNC_RECONCILE_HOUR_UTC": "24",
    "IDSYNC_RETRY_BACKOFF": "[0.5, 2, 5]",
    "IDSYNC_OUTBOX_POLL": "0.1",
    "IDSYNC_LOG_LEVEL": "WARNING",
}


class BenchStack:
    def __init__(self, name="bench", offset=3000, extra_env=None, processes=None):
        self.name = os.environ.get("IDSYNC_BENCH_NAME", name)
        self.offset = int(os.environ.get("IDSYNC_BENCH_PORT_OFFSET", offset))
        self.processes = processes  # None = every process of `make up`
        self.env = dict(os.environ)
        self.env.update(ensure_secrets())
        self.env.update(BASE_ENV)
        self.env.update({
            "IDSYNC_DB_NAME": f"idsync_{self.name}",
            "IDSYNC_AMQP_VHOST": f"idsync_{self.name}",
            "IDSYNC_PORT_OFFSET": str(self.offset),
            "IDSYNC_STACK": self.name,
        })
        self.env.update(extra_env or {})
        self.amqp_uri = infra.amqp_uri(self.env)
        self._engines = {}

    # --- lifecycle --------------------------------------------------------------------------------
    def prepare(self):
        """Infrastructure up (idempotent), then an empty database and vhost for this run."""
        self._run(["scripts/infra.sh", "up"])
        self._run([PY, "-m", "common.dbsetup", "--database", self.env["IDSYNC_DB_NAME"], "--drop"])
        self._run(["scripts/infra.sh", "reset-test-vhost"], IDSYNC_TEST_NAME=self.name)

    def start(self, names=None):
        self._run([PY, "scripts/stack.py", "up", "--no-seed", *(names or self.processes or [])])

    def stop(self, names=None):
        self._run([PY, "scripts/stack.py", "down", *(names or [])], check=False)

    def __enter__(self):
        self.prepare()
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        for engine in self._engines.values():
            engine.dispose()

    def _run(self, cmd, check=True, **extra):
        done = subprocess.run(cmd, cwd=ROOT, env={**self.env, **extra}, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # --- access -----------------------------------------------------------------------------------
    def port(self, name):
        base = SERVICES[name][1] if name in SERVICES else SIMULATORS[name][1]
        return base + self.offset

    def url(self, name, path=""):
        return f"http://127.0.0.1:{self.port(name)}{path}"

    def engine(self, service):
        if service not in self._engines:
            self._engines[service] = create_engine(
                infra.db_uri(self.env, service), pool_size=2,
                connect_args={"options": f"-c search_path={service}"})
        return self._engines[service]

    def rpc(self, timeout=60):
        from nameko.standalone.rpc import ClusterRpcProxy

        return ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=timeout)

    def pid(self, name):
        path = ROOT / ".run" / self.name / "pids" / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def metrics(self, name):
        return requests.get(self.url(name, "/metrics"), timeout=10).text


def wait_for(predicate, timeout, interval=0.2, message="condition"):
    return infra.wait_for(predicate, timeout=timeout, interval=interval, message=message)


@contextlib.contextmanager
def stopwatch():
    """``with stopwatch() as t: ...``; ``t()`` is the seconds since entry (frozen at exit)."""
    start = time.perf_counter()
    end = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


class Deadline(Exception):
    """A bench's own time budget ran out (raised from SIGALRM, see ``alarm``)."""


def alarm(signum, frame):
    raise Deadline("the bench's time budget ran out")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
