"""Give the local vendor simulators the demo tenants' accounts and realistic data (idempotent).

The simulators keep their data in memory: after a restart they are empty and are seeded again;
while they run, a second `make up` leaves them (and whatever a person changed) alone.

Each demo MSP is its own reseller account in the simulated marketplace, with customers of its
own (the vendor shows an API app only its account's data), and its PSA mirrors those customers.
Northwind, the default demo, is the simulator's "default" account, so a customer added by hand
(POST /_sim/customers without an account) shows up in Northwind's marketplace.
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


PSA_ONLY_COMPANIES = ("Harborview Veterinary Clinic", "Quillon Architecture Studio", "Bramblewood Bakery",
                      "Oxbow River Outfitters", "Tamarack Dental Partners", "Windrose Charter School")


# tenant slug -> (marketplace account, generator seed); seeds chosen so no customer name or domain
# is in both MSPs' books
MARKET_ACCOUNTS = {"northwind": ("default", 7), "contoso": ("contoso", 9)}


def market_account(tenant, number=1):
    return MARKET_ACCOUNTS.get(tenant["slug"], (tenant["slug"], 100 + number))


def _market_state(account):
    r = requests.get(_sim("sim-marketplace", "/_sim/state"), params={"account": account}, timeout=30)
    r.raise_for_status()
    return r.json()


def _market_catalogue(account):
    """The customers of one marketplace account and the (shared) products."""
    state = _market_state(account)
    return state["customers"], state["products"]


def psa_side(customers, products):
    """The demo MSP's PSA as a person would find it: most marketplace customers there under the
    same name (the mapping screen suggests them), some under a slightly different one (a fuzzy
    suggestion with its score), a few missing (they stay red until someone acts)."""
    companies = []
    for n, c in enumerate(sorted(customers, key=lambda c: str(c["id"]))):
        if n % 9 == 4:
            continue  # not in the PSA yet
        name = c["name"]
        if n % 5 == 2:  # typed differently in the PSA
            name = name.replace("LLC", "L.L.C.").replace("Inc.", "Incorporated").replace(" & ", " and ")
            if name == c["name"]:
                name = name + " Group"
        companies.append({"name": name, "web": (c.get("domain") or None)})
    # and customers the MSP bills for other work, who buy nothing on the marketplace
    companies += [{"name": name, "web": None} for name in PSA_ONLY_COMPANIES]
    services, seen = [], set()
    for p in sorted(products, key=lambda p: p["mpn"]):
        if p["name"] in seen:
            continue
        seen.add(p["name"])
        services.append({"name": p["name"], "unitPrice": str(p.get("unitPrice") or "10.00"),
                         "unitCost": str(p.get("unitCost") or "8.50")})
    return companies, services


def _autotask_doc(ci, tenant, creds, companies, services):
    db = {"ci": ci, "name": tenant["name"], "credentials": [{
        "username": creds["api_user"], "secret": creds["secret"], "integration_code": creds["integration_code"]}],
        "companies": [], "contracts": [], "services": []}
    for n, c in enumerate(companies, start=1):
        db["companies"].append({"id": 1000 + n, "companyName": c["name"], "companyType": 1, "isActive": True,
                                "webAddress": c["web"]})
        db["contracts"].append({"id": 5000 + n, "companyID": 1000 + n, "contractName": f"{c['name']} - Microsoft 365",
                                "contractType": 7, "status": 1, "startDate": "2026-01-01T00:00:00.000"})
    for n, svc in enumerate(services, start=1):
        db["services"].append({"id": 300 + n, "name": svc["name"], "unitPrice": svc["unitPrice"],
                               "unitCost": svc["unitCost"], "isActive": True})
    return {"append": True, "databases": [db]}


def _connectwise_doc(tenant, creds, companies, services):
    entry = {"company_id": creds["company_id"], "name": tenant["name"], "credentials": [{
        "public_key": creds["public_key"], "private_key": creds["private_key"], "client_id": creds["client_id"]}],
        "companies": [], "agreements": [], "catalog": []}
    for n, c in enumerate(companies, start=1):
        ident = f"DEMO{n:04d}"
        entry["companies"].append({"identifier": ident, "name": c["name"],
                                   "website": c["web"]})
        entry["agreements"].append({"name": f"{c['name']} - Microsoft 365", "company": ident, "type": {"id": 2},
                                    "startDate": "2026-01-01T00:00:00Z", "noEndingDateFlag": True,
                                    "billingCycle": {"id": 1}, "agreementStatus": "Active"})
    for n, svc in enumerate(services, start=1):
        entry["catalog"].append({"identifier": f"M365-{n:03d}", "description": svc["name"],
                                 "price": float(svc["unitPrice"]), "cost": float(svc["unitCost"]),
                                 "recurringFlag": True})
    return {"companies_sets": [entry]}


def seed(tenants, size=40):
    for number, t in enumerate(tenants, start=1):  # in order: the same ids every time
        mp = t["credentials"]["marketplace"]
        account, data_seed = market_account(t, number)
        if not any(c["user"] == mp["api_user"] for c in _market_state(account)["credentials"]):
            _post("sim-marketplace", "/_sim/generate", {
                "seed": data_seed, "customers": size, "lines": size * 4, "account": account,
                "credentials": [{"user": mp["api_user"], "password": mp["password"],
                                 "subscription_key": mp["subscription_key"], "marketplace": mp["marketplace"]}]})
    for number, t in enumerate(tenants, start=1):
        companies, services = psa_side(*_market_catalogue(market_account(t, number)[0]))
        creds = t["credentials"]
        if "autotask" in creds and not _has("sim-autotask", creds["autotask"]["api_user"]):
            # each Autotask customer is its own database: the demo MSP's
            _post("sim-autotask", "/_sim/seed", _autotask_doc(700000 + number, t, creds["autotask"], companies, services))
        if "connectwise" in creds and not _has("sim-connectwise", creds["connectwise"]["public_key"]):
            _post("sim-connectwise", "/_sim/seed", _connectwise_doc(t, creds["connectwise"], companies, services))
