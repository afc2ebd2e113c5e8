"""The test stack: the project's own PostgreSQL and RabbitMQ (started by `make test`), a test
database and vhost, and every process started by scripts/stack.py on ports offset by 1000."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from common.secrets import ROOT, ensure_secrets

# A second developer (or helper) can run its own test stack beside another by exporting
# IDSYNC_TEST_NAME=test2 and IDSYNC_TEST_PORT_OFFSET=2000 (database and vhost must exist).
_NAME = os.environ.get("IDSYNC_TEST_NAME", "test")
TEST_ENV = {
    "IDSYNC_DB_NAME": f"idsync_{_NAME}",
    "IDSYNC_AMQP_VHOST": f"idsync_{_NAME}",
    "IDSYNC_PORT_OFFSET": os.environ.get("IDSYNC_TEST_PORT_OFFSET", "1000"),
    "IDSYNC_STACK": _NAME,
    "IDSYNC_RETRY_BACKOFF": "[0.2, 0.5]",
    "IDSYNC_OUTBOX_POLL": "0.1",
    "IDSYNC_LOG_LEVEL": "INFO",
    # the nightly PSA re-read never starts by itself in a test (tests call reconcile_now)
    "IDSYNC_RECONCILE_HOUR_UTC": "24",
}


PG_PORT = int(os.environ.get("IDSYNC_PG_PORT", "5433"))
AMQP_PORT = int(os.environ.get("IDSYNC_AMQP_PORT", "5673"))


def test_environment():
    env = dict(os.environ)
    env.update(ensure_secrets())
    env.update(TEST_ENV)
    return env


def reachable(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def amqp_uri(env):
    return f"amqp://idsync:{env['IDSYNC_AMQP_PASSWORD']}@127.0.0.1:{AMQP_PORT}/{env['IDSYNC_AMQP_VHOST']}"


def db_uri(env, service):
    return (f"postgresql://idsync_{service}:{env[f'IDSYNC_DB_PASSWORD_{service.upper()}']}"
            f"@127.0.0.1:{PG_PORT}/{env['IDSYNC_DB_NAME']}")


def stack(env, *args):
    return subprocess.run([sys.executable, "scripts/stack.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def wait_for(predicate, timeout=20.0, interval=0.1, message="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def metric_value(text, name, **labels):
    """Sum of a Prometheus sample with the given labels in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
