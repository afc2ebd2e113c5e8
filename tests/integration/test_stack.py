"""What `make up` promises: every process healthy, metrics served, the portal signs a person in."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import requests

from common.secrets import ROOT
from common.topology import SERVICES, SIMULATORS
from tests.support import infra
from tests.support.infra import get_json


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_healthy_and_serves_metrics(stack, name):
    status, body = get_json(stack.url(name, "/health"))
    assert status == 200 and body["checks"] == {"database": "ok", "broker": "ok"}
    with urllib.request.urlopen(stack.url(name, "/metrics"), timeout=5) as r:
        text = r.read().decode()
    assert r.status == 200 and "python_gc_objects_collected_total" in text


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_every_simulator_is_up(stack, name):
    status, body = get_json(stack.url(name, "/_sim/health"))
    assert status == 200 and body["status"] == "ok"


def test_status_lists_every_process_healthy(stack):
    out = subprocess.run([sys.executable, "scripts/stack.py", "status"], cwd=ROOT, env=stack.env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert len(re.findall(r"\bhealthy\b", out.stdout)) == len(SERVICES) + len(SIMULATORS)


def test_demo_seed_then_portal_sign_in_through_the_form(stack):
    seeded = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    password = stack.env["IDSYNC_DEMO_PASSWORD"]
    assert f"admin@northwind.example / {password}" in seeded.stdout
    s = requests.Session()
    form = s.get(stack.url("gateway", "/login"), timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    bad = s.post(stack.url("gateway", "/login"), data={"email": "admin@northwind.example", "password": password,
                                                       "csrf_token": "forged"}, timeout=10)
    assert bad.status_code == 400
    form = s.get(stack.url("gateway", "/login"), timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    home = s.post(stack.url("gateway", "/login"), timeout=10,
                  data={"email": "admin@northwind.example", "password": password, "csrf_token": csrf})
    assert home.status_code == 200 and "Northwind IT Services" in home.text
    assert "System status" in home.text
    # seeding twice changes nothing and fails nothing
    again = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr


def test_the_keeper_starts_again_a_killed_service_and_leaves_one_stopped_on_purpose(stack):
    env = stack.env
    keeper_log = ROOT / ".run" / env["IDSYNC_STACK"] / "logs" / "keeper.jsonl"
    seen_before = len(keeper_log.read_text().splitlines()) if keeper_log.exists() else 0
    infra.stack(env, "up", "--no-seed", "--keep")      # as `make up` does, on the running test stack
    try:
        assert re.search(r"^keeper\s+on\s+pid \d+", infra.stack(env, "status"), re.M)
        killed = json.loads(infra.stack(env, "json-status"))["migration"]
        os.killpg(killed, signal.SIGKILL)
        deadline, now = time.time() + 90, None
        while time.time() < deadline:
            now = json.loads(infra.stack(env, "json-status"))["migration"]
            if now and now != killed and _healthy(stack.url("migration", "/health")):
                break
            time.sleep(0.5)
        assert now and now != killed, "the keeper did not start the killed service again"
        events = [json.loads(line) for line in keeper_log.read_text().splitlines()[seen_before:]]
        assert [(e["event"], e["process"]) for e in events if e.get("process") == "migration"] == [
            ("process_exited", "migration"), ("process_restarted", "migration")]

        infra.stack(env, "down", "migration")            # stopped on purpose: stays stopped
        time.sleep(3)
        assert json.loads(infra.stack(env, "json-status"))["migration"] is None
    finally:
        infra.stack(env, "unkeep")
        infra.stack(env, "up", "--no-seed", "migration")
    assert re.search(r"^keeper\s+off", infra.stack(env, "status"), re.M)


def _healthy(url):
    try:
        return get_json(url)[0] == 200
    except OSError:   # not listening yet
        return False
