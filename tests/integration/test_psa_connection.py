"""The demo tenants reach their PSA simulators through the gateway: credentials stored encrypted,
decrypted only inside the PSA service, and the PSA's records browsable for the mapping screens."""
import subprocess
import sys

import pytest
import requests

from common.secrets import ROOT
from common.topology import http_port


@pytest.fixture(scope="module")
def demo(stack):
    seeded = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    return stack


def session_for(stack, email):
    s = requests.Session()
    r = s.post(stack.url("gateway", "/api/v1/session"), timeout=10,
               json={"email": email, "password": stack.env["IDSYNC_DEMO_PASSWORD"]})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


@pytest.mark.parametrize("email, psa", [("admin@northwind.example", "autotask"), ("admin@contoso.example", "connectwise")])
def test_connection_and_browse(demo, email, psa):
    s = session_for(demo, email)
    ok = s.post(demo.url("gateway", "/api/v1/psa/test-connection"), timeout=30)
    assert ok.status_code == 200 and ok.json()["ok"] is True and ok.json()["psa"] == psa, ok.text
    companies = s.get(demo.url("gateway", "/api/v1/psa/company"), timeout=30).json()
    assert companies["psa"] == psa and companies["total"] >= 30
    contracts = s.get(demo.url("gateway", "/api/v1/psa/contract"), timeout=30).json()["items"]
    company_ids = {c["psa_id"] for c in companies["items"]}
    assert contracts and all(c["company_id"] in company_ids for c in contracts)
    services = s.get(demo.url("gateway", "/api/v1/psa/service"), timeout=30).json()["items"]
    assert any("365" in svc["name"] for svc in services)
    first = companies["items"][0]["name"]
    found = s.get(demo.url("gateway", "/api/v1/psa/company"), params={"search": first[:6]}, timeout=30).json()
    assert first in [c["name"] for c in found["items"]]
    assert s.get(demo.url("gateway", "/api/v1/psa/nonsense"), timeout=30).status_code == 404


def test_wrong_psa_credentials_are_reported_not_crashed(demo):
    s = session_for(demo, "admin@northwind.example")
    r = s.put(demo.url("gateway", "/api/v1/credentials/autotask"), timeout=10, json={
        "zone_url": f"http://127.0.0.1:{http_port('sim-autotask')}/atservicesrest/v1.0/",
        "api_user": "api@northwind.example", "secret": "wrong-secret", "integration_code": "NORTHWINDINTEGRATION"})
    assert r.status_code == 200
    try:
        bad = s.post(demo.url("gateway", "/api/v1/psa/test-connection"), timeout=30)
        assert bad.status_code == 200 and bad.json()["ok"] is False
        assert "refused" in bad.json()["message"]
    finally:  # put the demo credentials back for the other tests
        subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=demo.env, capture_output=True,
                       timeout=120, check=True)
