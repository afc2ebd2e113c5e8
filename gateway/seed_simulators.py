"""Give the local vendor simulators the demo tenants' accounts and realistic data (idempotent).

The simulators keep their data in memory: after a restart they are empty and are seeded again;
while they run, a second `make up` leaves them (and whatever a person changed) alone.
"""
import json

import requests

from common.topology import http_port


def _sim(name, path):
    return f"http://127.0.0.1:{http_port(name)}{path}"


def _has(name, marker):
    r = requests.get(_sim(name, "/_sim/state"), timeout=30)
    r.raise_for_status()
    return marker in json.dumps(r.json())


def _post(name, path, body):
    r = requests.post(_sim(name, path), json=body, timeout=120)
    if r.status_code >= 400:
        raise RuntimeError(f"{name} {path} refused the demo seed: {r.status_code} {r.text[:300]}")
    return r.json()


def seed(tenants, size=40):
    market_creds = [{"user": t["credentials"]["marketplace"]["api_user"],
                     "password": t["credentials"]["marketplace"]["password"],
                     "subscription_key": t["credentials"]["marketplace"]["subscription_key"],
                     "marketplace": t["credentials"]["marketplace"]["marketplace"]} for t in tenants]
    if not _has("sim-marketplace", market_creds[0]["user"]):
        _post("sim-marketplace", "/_sim/generate", {"seed": 7, "customers": size, "lines": size * 4,
                                                    "credentials": market_creds})
    for number, t in enumerate(tenants, start=1):
        creds = t["credentials"]
        if "autotask" in creds and not _has("sim-autotask", creds["autotask"]["api_user"]):
            # each Autotask customer is its own database: create the demo's, then fill it
            ci = 700000 + number
            _post("sim-autotask", "/_sim/seed", {"append": True, "databases": [{
                "ci": ci, "name": t["name"],
                "credentials": [{"username": creds["autotask"]["api_user"], "secret": creds["autotask"]["secret"],
                                 "integration_code": creds["autotask"]["integration_code"]}]}]})
            _post("sim-autotask", "/_sim/generate", {"seed": 7, "companies": size, "lines_per_contract": 0,
                                                     "database": ci})
        if "connectwise" in creds and not _has("sim-connectwise", creds["connectwise"]["public_key"]):
            cw = creds["connectwise"]
            _post("sim-connectwise", "/_sim/generate", {
                "seed": 7, "companies": size, "company_id": cw["company_id"], "name": t["name"], "additions": 0,
                "credentials": [{"public_key": cw["public_key"], "private_key": cw["private_key"],
                                 "client_id": cw["client_id"]}]})
