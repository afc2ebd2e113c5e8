"""Issue 5 end to end, the way a billing manager does it: through the gateway's JSON API, sync the
demo tenant's marketplace, map a customer, its products and lines, and see the desired-line
events with the right quantity, price and effective date."""
import datetime as dt
import subprocess
import sys
import time

from decimal import Decimal

import pytest
import requests
from sqlalchemy import select

from common.secrets import ROOT
from gateway.seed_demo import tenant_id
from services.mapping import models as mapping_models
from tests.support.infra import wait_for


@pytest.fixture(scope="module")
def billing(stack):
    seeded = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    s = requests.Session()
    r = s.post(stack.url("gateway", "/api/v1/session"), timeout=10,
               json={"email": "admin@northwind.example", "password": stack.env["IDSYNC_DEMO_PASSWORD"]})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    s.base = stack.url("gateway", "")
    # auto posting: every change goes straight out (other tests may have left another mode)
    assert s.patch(s.base + "/api/v1/settings/billing", json={"posting_mode": "auto"}, timeout=30).status_code == 200
    return s


def api(s, method, path, **kw):
    r = s.request(method, s.base + path, timeout=60, **kw)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
    return r.json()


def desired_events(engines, tenant, contract_id):
    t = mapping_models.outbox
    with engines("mapping").connect() as conn:
        rows = conn.execute(select(t.c.payload, t.c.sent_at).where(
            t.c.tenant_id == tenant, t.c.event_type == "autotask_line_desired")).all()
    return [(r.payload, r.sent_at) for r in rows if r.payload["contract_id"] == contract_id]


def test_sync_map_and_desired_lines_through_the_gateway(billing, stack, engines):
    s = billing
    run = api(s, "POST", "/api/v1/sync", json={"full": True})
    done = wait_for(lambda: api(s, "GET", f"/api/v1/sync/runs/{run['run_id']}")["outcome"] in ("ok", "partial"),
                    timeout=120, interval=1, message="the sync run to finish")
    assert done
    customers = wait_for(lambda: api(s, "GET", "/api/v1/mapping/customers", params={"per_page": 200})["items"],
                         timeout=60, interval=1, message="customers to reach mapping")
    refreshed = api(s, "POST", "/api/v1/mapping/references/refresh")
    assert refreshed["company"] >= 30 and refreshed["contract"] >= 30 and refreshed["service"] >= 10

    # a customer with active lines; map it to a PSA company that has one recurring contract
    lines_by_customer = {}
    for line in api(s, "GET", "/api/v1/mapping/lines", params={"per_page": 200})["items"]:
        if line["line_status"] == "active" and line["quantity"] > 0:
            lines_by_customer.setdefault(line["customer_id"], []).append(line)
    customer_id, lines = max(lines_by_customer.items(), key=lambda kv: len(kv[1]))
    companies = api(s, "GET", "/api/v1/psa/company")["items"]
    contracts = api(s, "GET", "/api/v1/psa/contract")["items"]
    # a contract no earlier test has billed into, so every event on it is ours
    used = {d["contract_id"] for d in api(s, "GET", "/api/v1/desired-lines", params={"per_page": 200})["items"]}
    contract = next(c for c in contracts if c["active"] and c["psa_id"] not in used)
    company = contract["company_id"]
    api(s, "PUT", f"/api/v1/mapping/customers/{customer_id}", json={"psa_company_id": company})
    assert company in {c["psa_id"] for c in companies}

    # every product of those lines: one PSA service, a fixed price
    service = next(x for x in api(s, "GET", "/api/v1/psa/service")["items"] if x["active"])
    mpns = sorted({line["mpn"] for line in lines})
    for mpn in mpns:
        api(s, "PUT", f"/api/v1/mapping/products/{mpn}",
            json={"psa_service_id": service["psa_id"], "price_rule": "fixed", "fixed_price": "9.99"})
    before_link = desired_events(engines, tenant_id("northwind"), contract["psa_id"])
    assert before_link == []  # nothing flows while the contract link is missing
    for line in lines:
        api(s, "PUT", f"/api/v1/mapping/lines/{line['subscription_id']}/{line['mpn']}",
            json={"psa_contract_id": contract["psa_id"]})

    expected_quantity = sum(line["quantity"] for line in lines)
    def latest_published():
        events = [e[0] for e in desired_events(engines, tenant_id("northwind"), contract["psa_id"]) if e[1]]
        return max(events, key=lambda p: p["desired_version"]) if events else None

    # each link adds its line: the versions grow until the last link's event carries every line
    latest = wait_for(lambda: (lambda p: p if p and len(p["lines"]) == len(lines) else None)(latest_published()),
                      timeout=30, message="the desired-line event carrying every linked line")
    assert latest["service_id"] == service["psa_id"] and latest["company_id"] == company
    assert latest["quantity"] == expected_quantity
    assert Decimal(latest["unit_price"]) == Decimal("9.99")
    # the lines waited for their link: they flow with the day they were seen in the marketplace
    seen_days = {dt.datetime.fromisoformat(line["seen_at"].replace("Z", "+00:00")).date() for line in lines}
    assert dt.date.fromisoformat(latest["effective_date"]) in seen_days
    lines_now = api(s, "GET", "/api/v1/mapping/lines", params={"customer_id": customer_id, "per_page": 200})["items"]
    assert all(line["billable"] for line in lines_now if line["line_status"] == "active")
    desired = api(s, "GET", "/api/v1/desired-lines", params={"per_page": 200})["items"]
    assert any(d["contract_id"] == contract["psa_id"] and int(d["quantity"]) == expected_quantity for d in desired)

    # ...and the Autotask service posts it: the ledger shows the operations posted, and the
    # simulated Autotask contract holds the desired number of units
    def posted():
        rows = api(s, "GET", "/api/v1/postings", params={"contract_id": contract["psa_id"], "per_page": 200})["items"]
        adjusted = [r for r in rows if r["operation"] == "adjust" and r["state"] == "posted"]
        return rows if adjusted and sum(r["unit_change"] or 0 for r in adjusted) == expected_quantity else None

    ledger = wait_for(posted, timeout=60, interval=1, message="the ledger to show the posted units")
    assert {r["state"] for r in ledger} == {"posted"}
    # the line was new to Autotask: its first adjustment created the ContractService, one write
    assert not any(r["operation"] == "add_service" for r in ledger)
    assert api(s, "GET", "/api/v1/postings/failures")["total"] == 0

    # a user of another tenant sees none of it. (Each demo MSP is its own account in the simulated
    # marketplace, so Contoso's syncs never even bring Northwind's customers, subscriptions or lines.)
    other = requests.Session()
    r = other.post(stack.url("gateway", "/api/v1/session"), timeout=10,
                   json={"email": "admin@contoso.example", "password": stack.env["IDSYNC_DEMO_PASSWORD"]})
    assert r.status_code == 200, r.text
    other.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    theirs = other.get(stack.url("gateway", "/api/v1/mapping/lines"), params={"customer_id": customer_id},
                       timeout=30).json()["items"]
    assert theirs == []
    assert other.get(stack.url("gateway", "/api/v1/desired-lines"), timeout=30).json()["total"] == 0
    for search in (customer_id, lines[0]["customer_name"]):
        found = other.get(stack.url("gateway", "/api/v1/mapping/customers"), params={"search": search},
                          timeout=30).json()["items"]
        assert all(c["customer_id"] != customer_id and c["status"] != "mapped" for c in found)


def test_a_desired_state_lost_on_the_way_to_autotask_is_found_and_posted_by_the_reconciliation(
        billing, stack, engines):
    """Chaos finding 6: a LineDesired event that never reaches the Autotask service (here: its queue
    purged while the service is down). Re-reading the PSA cannot see it - the posting schedule is
    what missed it - so the reconciliation compares schedule versions with the mapping service and
    has it send the line again."""
    from kombu import Connection

    from tests.support import infra

    s = billing
    tenant = tenant_id("northwind")
    desired = [d for d in api(s, "GET", "/api/v1/desired-lines", params={"per_page": 200})["items"]
               if int(d["quantity"]) > 0]
    assert desired, "the test before this one maps and posts a contract line"
    line = desired[0]
    contract, service = line["contract_id"], line["service_id"]
    # every product billed on that service (one price per contract line, or it is a price conflict)
    mpns = [x["mpn"] for x in api(s, "GET", "/api/v1/mapping/products", params={"per_page": 200})["items"]
            if x.get("psa_service_id") == service]
    assert mpns

    def price_posted(price):
        rows = api(s, "GET", "/api/v1/postings", params={"contract_id": contract, "per_page": 200})["items"]
        return [r for r in rows if r["state"] == "posted" and r["service_id"] == service
                and r["unit_price"] is not None and Decimal(str(r["unit_price"])) == Decimal(price)]

    queue = "evt-mapping-autotask_line_desired--autotask.on_line_desired"
    infra.stack(stack.env, "down", "autotask")
    try:
        for mpn in mpns:
            api(s, "PUT", f"/api/v1/mapping/products/{mpn}",
                json={"psa_service_id": service, "price_rule": "fixed", "fixed_price": "12.34"})
        wait_for(lambda: any(p["unit_price"] == "12.34" and sent for p, sent in desired_events(engines, tenant, contract)),
                 timeout=30, message="the new price sent by the mapping service")
        with Connection(stack.amqp_uri) as conn:     # ...and lost before the Autotask service took it
            from kombu import Queue

            Queue(queue, no_declare=True)(conn.channel()).purge()
    finally:
        infra.stack(stack.env, "up", "autotask", "--no-seed")
    time.sleep(3)
    assert not price_posted("12.34")                 # the posting side never heard of it
    with stack.rpc() as rpc:
        out = rpc.autotask.reconcile_now(tenant)
    assert out["behind"] == 1
    wait_for(lambda: price_posted("12.34"), timeout=60, interval=1, message="the lost price posted after the check")
    with stack.rpc() as rpc:                         # in step now: nothing more to ask for
        assert rpc.autotask.reconcile_now(tenant)["behind"] == 0
