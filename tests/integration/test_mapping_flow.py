"""The mapping service over the real stack: marketplace events in, suggestions against the tenant's
Autotask records (simulator), mappings by RPC, desired contract lines out through the outbox.

One Autotask tenant is created in the gateway's database with credentials for its own database in
the Autotask simulator. Marketplace events are published straight to `marketplace.events` (the
marketplace sync is not needed). Today is the real date; every seen_at is in November 2026 before
it, and contract 201 starts on 2026-01-15, so its billing periods run 15th..14th: a decrease seen
on 2026-11-20 takes effect on 2026-12-15.
"""
import datetime as dt
import subprocess
import sys
import urllib.request
import uuid

import pytest
import requests
from kombu import Connection, Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.events import get_event_exchange
from nameko.exceptions import RemoteError
from sqlalchemy import func, select

from common.db import Store
from common.events import make_event
from common.secrets import ROOT
from common.topology import http_port
from common.vault import Vault, parse_keys
from gateway import directory
from services.mapping import models as mm
from tests.support.infra import metric_value, wait_for

pytestmark = pytest.mark.integration

TODAY = dt.datetime.now(dt.timezone.utc).date()
ACTOR = "billing@flow.example"
P1, P2, P3, P4 = "CFQ7TTC0LCHC:0002:P1Y:M", "CFQ7TTC0LFLX:0001:P1Y:M", "CFQ7TTC0LH16:0001:P1Y:M", "CFQ7TTC0RCM2:0001:P1M:M"


def seen(day, hour=9):
    return f"2026-11-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture(scope="module")
def flow(stack, engines):
    # the demo seed fills the simulator's first database (/_sim/generate): let it be the demo's, so
    # this module's own database never takes its place whatever order the test files run in
    seeded = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    tenant = str(uuid.uuid4())
    ci = 900000 + uuid.UUID(tenant).int % 99999
    user, secret, code = f"api-{tenant[:8]}@flow.example", f"secret-{tenant[:8]}", f"FLOW{tenant[:8].upper()}"
    sim = f"http://127.0.0.1:{http_port('sim-autotask')}"
    r = requests.post(f"{sim}/_sim/seed", timeout=30, json={"append": True, "databases": [{
        "ci": ci, "credentials": [{"username": user, "secret": secret, "integration_code": code}],
        "companies": [{"id": 101, "companyName": "Contoso Dental", "webAddress": "www.contoso-dental.com"},
                      {"id": 102, "companyName": "Fabrikam Logistics Inc."},
                      {"id": 103, "companyName": "Northwind Traders"}],
        "contracts": [{"id": 201, "companyID": 101, "contractName": "Contoso Managed Seats", "startDate": "2026-01-15"},
                      {"id": 202, "companyID": 102, "contractName": "Fabrikam Recurring", "startDate": "2026-01-01"},
                      {"id": 203, "companyID": 103, "contractName": "Northwind Recurring", "startDate": "2026-01-01"}],
        "services": [{"id": 301, "name": "Microsoft 365 Business Premium", "unitPrice": 25.00, "unitCost": 18.00},
                     {"id": 302, "name": "Microsoft 365 E3", "unitPrice": 40.00, "unitCost": 30.00},
                     {"id": 303, "name": "Exchange Online (Plan 1)", "unitPrice": 5.00, "unitCost": 4.00},
                     {"id": 304, "name": "Microsoft Teams Essentials", "unitPrice": 4.50, "unitCost": 3.00}]}]})
    assert r.status_code < 300, r.text
    vault = Vault(parse_keys(stack.env["IDSYNC_FERNET_KEYS"]))
    with Store(engines("gateway")).transaction() as session:
        directory.create_tenant(session, "Flow MSP", "autotask", tenant_id=tenant)
        directory.store_credentials(session, vault, tenant, "autotask", {
            "zone_url": f"{sim}/atservicesrest/v1.0/", "api_user": user, "secret": secret, "integration_code": code})
    # something listens for the desired lines, so the relay can deliver them (and mark them sent)
    with Connection(stack.amqp_uri) as conn:
        queue = Queue(f"test-mapping-flow-{tenant[:8]}", get_event_exchange("mapping", {}),
                      routing_key="autotask_line_desired", durable=False, queue_arguments={"x-expires": 600000})
        queue(conn.default_channel).declare()
    return Flow(stack, engines, tenant, sim, ci)


class Flow:
    def __init__(self, stack, engines, tenant, sim, ci):
        self.stack, self.engines, self.tenant, self.sim, self.ci = stack, engines, tenant, sim, ci

    def sim_admin(self, path):
        r = requests.post(f"{self.sim}{path}", json={"database": self.ci}, timeout=10)
        assert r.status_code < 300, r.text

    def rpc(self, method, *args, **kwargs):
        with self.stack.rpc() as rpc:
            return getattr(rpc.mapping, method)(*args, **kwargs)

    def call(self, method, *args, **kwargs):
        return self.rpc(method, self.tenant, *args, **kwargs)

    def publish(self, event_type, event_id=None, **payload):
        event = make_event("marketplace", event_type, self.tenant, event_id=event_id, **payload)
        Publisher(self.stack.amqp_uri, use_confirms=True, serializer="json").publish(
            event, exchange=get_event_exchange("marketplace", {}),
            routing_key=event_type)
        return event

    def line(self, sub, mpn, quantity, day, version, status="active", price="22.00", cost="18.70", customer="C1",
             hour=9):
        return self.publish("subscription_line_changed", subscription_id=sub, mpn=mpn, customer_id=customer,
                            change="quantity", status=status, quantity=quantity, unit_price=price, unit_cost=cost,
                            seen_at=seen(day, hour), line_version=version)

    def desired(self, service=None):
        t = mm.outbox
        with self.engines("mapping").connect() as conn:
            rows = conn.execute(select(t).where(t.c.tenant_id == self.tenant, t.c.event_type == "autotask_line_desired")
                                .order_by(t.c.id)).all()
        return [r for r in rows if service is None or r.payload["service_id"] == service]

    def outbox_count(self):
        t = mm.outbox
        with self.engines("mapping").connect() as conn:
            return conn.execute(select(func.count()).select_from(t).where(t.c.tenant_id == self.tenant)).scalar()

    def wait_desired(self, service, count, message):
        return wait_for(lambda: (lambda rows: rows if len(rows) >= count else None)(self.desired(service)),
                        timeout=15, message=message)

    def handled(self, event_type, result="ok"):
        text = urllib.request.urlopen(self.stack.url("mapping", "/metrics"), timeout=5).read().decode()
        return metric_value(text, "events_handled_total", service="mapping", event_type=event_type, result=result)


def remote_error(fn, *args, **kwargs):
    with pytest.raises(RemoteError) as info:
        fn(*args, **kwargs)
    return info.value.exc_type, info.value.value


def test_mapping_flow(flow):
    # --- marketplace state arrives before the PSA records were ever read ----------------------
    flow.publish("customer_changed", customer_id="C1", name="Contoso Dental LLC", domain="contoso-dental.com")
    flow.publish("customer_changed", customer_id="C2", name="Fabrikam Logistcs")
    flow.publish("customer_changed", customer_id="C3", name="Zeta Unknown Partners")
    for mpn, name, price, cost in ((P1, "Microsoft 365 Business Premium", "22.00", "18.70"),
                                   (P2, "Microsoft 365 E3", "36.00", "10.005"),
                                   (P3, "Exchange Online (Plan 1)", "4.00", "3.40"),
                                   (P4, "Microsoft Teams Essentials", "4.00", "3.40")):
        flow.publish("product_changed", mpn=mpn, name=name, unit_price=price, unit_cost=cost)
    flow.line("S1", P1, 5, 2, 1)   # waits unmapped from 2026-11-02
    wait_for(lambda: flow.call("customers")["total"] == 3 and flow.call("lines")["total"] == 1, timeout=15,
             message="customers and the line copied")
    waiting = flow.call("lines")["items"][0]
    assert waiting["billable"] is False and waiting["quantity"] == 5 and waiting["customer_name"] == "Contoso Dental LLC"
    assert "customer is" in " ".join(waiting["blocking_reasons"])
    # the cache was empty: the refresh timer reads the PSA's records by itself and suggests
    wait_for(lambda: flow.call("customers", status="suggested")["total"] == 2, timeout=40,
             message="the lazy PSA refresh and its suggestions")

    counts = flow.call("refresh_references")
    assert counts == {"company": 3, "contract": 3, "service": 4}
    assert {r["psa_id"] for r in flow.call("references", "contract")} == {"201", "202", "203"}

    # --- suggestions: exact name / domain at 100, fuzzy with its score, none for a stranger ----
    customers = {c["customer_id"]: c for c in flow.call("customers")["items"]}
    assert customers["C1"]["status"] == "suggested" and customers["C1"]["psa_company_id"] == "101"
    assert customers["C1"]["score"] == 100.0 and customers["C1"]["method"] in ("exact_name", "domain")
    assert customers["C2"]["status"] == "suggested" and customers["C2"]["method"] == "fuzzy_name"
    assert 85 <= customers["C2"]["score"] < 100 and customers["C2"]["psa_company_name"] == "Fabrikam Logistics Inc."
    assert customers["C3"]["status"] == "unmapped" and customers["C3"]["reason"]
    products = {p["mpn"]: p for p in flow.call("products")["items"]}
    assert products[P1]["status"] == "suggested" and products[P1]["psa_service_id"] == "301"
    assert flow.call("customers", status="suggested", search="fabrik")["total"] == 1
    assert flow.call("lines")["items"][0]["psa_contract_id"] == "201"   # the company's only recurring contract

    # --- mapping: the line that waited flows with its original seen day ------------------------
    assert flow.call("bulk", "customer", "accept", status="suggested", actor=ACTOR) == {"changed": 2}
    assert remote_error(flow.call, "map_product", P2, "302", "cost_plus", actor=ACTOR)[0] == "BadRequest"
    assert remote_error(flow.call, "link_line", "S1", P1, "202", actor=ACTOR)[0] == "BadRequest"  # Fabrikam's
    assert remote_error(flow.call, "customers", status="purple")[0] == "BadRequest"
    item = flow.call("map_product", P1, "301", "msrp", actor=ACTOR)
    assert item["status"] == "mapped" and item["price_rule"] == "msrp"
    assert flow.desired("301") == []   # the contract link is still only suggested
    line = flow.call("link_line", "S1", P1, "201", actor=ACTOR)
    assert line["status"] == "mapped" and line["billable"] is True and line["psa_contract_name"] == "Contoso Managed Seats"
    first = flow.desired("301")[-1].payload
    assert (first["quantity"], first["unit_price"], first["effective_date"]) == (5, "22.00", "2026-11-02")
    assert first["company_id"] == "101" and first["contract_id"] == "201" and first["desired_version"] == 1
    assert first["lines"][0]["subscription_id"] == "S1"

    # --- every price rule, and a customer's override ----------------------------------------------
    flow.call("map_product", P2, "302", "cost_plus", markup_pct="15", actor=ACTOR)
    flow.call("map_product", P3, "303", "fixed", fixed_price="9.99", actor=ACTOR)
    flow.call("map_product", P4, "304", "psa_catalog", actor=ACTOR)
    flow.line("S2", P2, 3, 3, 1, price="36.00", cost="10.005")
    flow.line("S3", P3, 2, 3, 1, price="4.00", cost="3.40")
    flow.line("S4", P4, 4, 3, 1, price="4.00", cost="3.40")
    wait_for(lambda: flow.call("lines")["total"] == 4, timeout=15, message="three more lines")
    for sub, mpn in (("S2", P2), ("S3", P3), ("S4", P4)):
        flow.call("link_line", sub, mpn, "201", actor=ACTOR)
    prices = {s: flow.desired(s)[-1].payload for s in ("302", "303", "304")}
    assert prices["302"]["unit_price"] == "11.51"      # 10.005 x 1.15, rounded once at the end
    assert prices["303"]["unit_price"] == "9.99"
    assert prices["304"]["unit_price"] == "4.50"       # the Autotask service's own price
    assert all(p["effective_date"] == "2026-11-03" for p in prices.values())
    override = flow.call("set_price_override", "C1", P4, "fixed", fixed_price="4.00", actor=ACTOR)
    assert override["fixed_price"] == "4.00"
    moved = flow.desired("304")[-1].payload
    assert (moved["quantity"], moved["unit_price"]) == (4, "4.00")
    assert moved["effective_date"] == "2026-12-15"     # a price moves from the next period
    assert [o["mpn"] for o in flow.call("price_overrides")] == [P4]

    # --- a PSA record that went inactive makes its mapping a conflict; nothing is sent for it ----
    flow.line("S5", P3, 1, 4, 1, customer="C2", price="4.00", cost="3.40")
    wait_for(lambda: flow.call("lines", customer_id="C2")["total"] == 1, timeout=15, message="Fabrikam's line")
    assert flow.call("lines", customer_id="C2")["items"][0]["psa_contract_id"] == "202"   # suggested
    assert flow.call("bulk", "line", "accept", search="S5", actor=ACTOR) == {"changed": 1}
    fabrikam = flow.desired()[-1].payload
    assert (fabrikam["contract_id"], fabrikam["quantity"], fabrikam["effective_date"]) == ("202", 1, "2026-11-04")
    flow.sim_admin("/_sim/contracts/202/deactivate")
    sent = len(flow.desired())
    flow.call("refresh_references")
    conflict = flow.call("lines", status="conflict")["items"]
    assert [c["subscription_id"] for c in conflict] == ["S5"] and not conflict[0]["billable"]
    assert "inactive" in " ".join(conflict[0]["blocking_reasons"])
    assert len(flow.desired()) == sent
    assert flow.call("set_status", "customer", "C3", "ignored", actor=ACTOR)["status"] == "ignored"

    # --- increase on the day seen, decrease from the next period, same-day collapse, hold --------
    flow.line("S1", P1, 8, 10, 2)
    up = flow.wait_desired("301", 2, "the increase")[-1].payload
    assert (up["quantity"], up["effective_date"], up["desired_version"]) == (8, "2026-11-10", 2)
    flow.line("S1", P1, 6, 20, 3)
    down = flow.wait_desired("301", 3, "the decrease")[-1].payload
    assert (down["quantity"], down["effective_date"]) == (6, "2026-12-15")
    flow.line("S1", P1, 9, 21, 4, hour=9)
    flow.line("S1", P1, 7, 21, 5, hour=15)
    wait_for(lambda: flow.desired("301")[-1].payload["quantity"] == 7, timeout=15, message="the day's last state")
    last = flow.desired("301")[-1].payload
    assert last["effective_date"] == "2026-11-21"      # 6 -> 9 -> 7 on one day: one increase of 1
    assert not [r for r in flow.desired("301") if r.payload["quantity"] == 7 and r.payload["effective_date"] != "2026-11-21"]
    versions = [r.payload["desired_version"] for r in flow.desired("301")]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    flow.line("S1", P1, 7, 22, 6, status="hold")
    held = flow.wait_desired("301", len(versions) + 1, "the hold")[-1].payload
    assert (held["quantity"], held["effective_date"]) == (0, "2026-12-15")   # hold counts 0

    wait_for(lambda: all(r.sent_at is not None for r in flow.desired()), timeout=15, message="desired lines sent")

    # --- review mode: approvals, approve with a date, reject ------------------------------------
    settings = flow.call("update_settings", {"posting_mode": "review"}, actor=ACTOR)
    assert settings["posting_mode"] == "review" and settings["psa"] == "autotask"
    assert remote_error(flow.call, "update_settings", {"posting_mode": "sometimes"}, actor=ACTOR)[0] == "BadRequest"
    sent = len(flow.desired())
    flow.line("S1", P1, 10, 23, 7)
    pending = wait_for(lambda: flow.call("approvals")["items"], timeout=15, message="an approval")
    assert len(flow.desired()) == sent
    approval = pending[0]
    assert (approval["kind"], approval["quantity_before"], approval["quantity_after"]) == ("increase", 0, 10)
    assert approval["effective_date"] == "2026-11-23" and approval["unit_price"] == "22.00"
    before = flow.outbox_count()
    preview = flow.call("preview")
    assert flow.outbox_count() == before
    row = next(r for r in preview["rows"] if r["service_id"] == "301")
    assert (row["kind"], row["quantity_after"], row["amount"], row["needs_approval"]) == ("increase", 10, "220.00", True)
    assert row["contract_name"] == "Contoso Managed Seats" and preview["total_amount"] == "220.00"
    assert flow.call("decide", [approval["id"]], "approve", note="ok", effective_date="2026-11-24",
                     actor=ACTOR) == {"approved": 1, "rejected": 0}
    approved = flow.desired("301")[-1].payload
    assert (approved["quantity"], approved["effective_date"], approved["approved_by"]) == (10, "2026-11-24", ACTOR)
    assert remote_error(flow.call, "decide", [approval["id"]], "approve", actor=ACTOR)[0] == "Conflict"

    flow.line("S1", P1, 4, 24, 8)
    second = wait_for(lambda: flow.call("approvals")["items"], timeout=15, message="another approval")[0]
    assert (second["kind"], second["quantity_after"]) == ("decrease", 4)
    sent = len(flow.desired())
    assert flow.call("decide", [second["id"]], "reject", note="customer disputes it",
                     actor=ACTOR) == {"approved": 0, "rejected": 1}
    assert len(flow.desired()) == sent
    rejected = flow.call("approvals", status="rejected")["items"]
    assert rejected[0]["note"] == "customer disputes it" and rejected[0]["decided_by"] == ACTOR
    desired = {d["service_id"]: d for d in flow.call("desired_lines")["items"]}
    assert desired["301"]["quantity"] == 10 and desired["301"]["version"] == approved["desired_version"]

    # --- a redelivered event changes nothing ------------------------------------------------------
    before, handled = flow.outbox_count(), flow.handled("subscription_line_changed")
    duplicate = flow.line("S3", P3, 5, 24, 2, price="4.00", cost="3.40")
    wait_for(lambda: flow.call("approvals")["total"] == 1, timeout=15, message="the S3 change waits")
    after = flow.outbox_count()
    flow.publish("subscription_line_changed", **{k: v for k, v in duplicate.items()
                                                 if k not in ("tenant_id", "occurred_at", "schema_version")})
    wait_for(lambda: flow.handled("subscription_line_changed") >= handled + 2, timeout=15, message="both handled")
    assert flow.outbox_count() == after == before   # review mode: the S3 change waits, nothing sent
    assert flow.call("approvals")["total"] == 1

    # --- the audit trail knows who decided ------------------------------------------------------------
    trail = flow.call("audit", kind="line", key=f"S1/{P1}")
    assert any(a["actor"] == ACTOR and a["action"] == "link" for a in trail)


def test_another_tenant_sees_nothing(flow):
    other = str(uuid.uuid4())
    for method in ("customers", "products", "lines", "approvals", "desired_lines"):
        assert flow.rpc(method, other)["total"] == 0
    assert flow.rpc("price_overrides", other) == []
    assert flow.rpc("preview", other) == {"rows": [], "total_amount": "0.00"}
    approval_ids = [a["id"] for a in flow.call("approvals", status=None)["items"]]
    assert approval_ids
    assert remote_error(flow.rpc, "map_customer", other, "C1", "101", actor=ACTOR)[0] == "NotFound"
    assert remote_error(flow.rpc, "link_line", other, "S1", P1, "201", actor=ACTOR)[0] == "NotFound"
    assert remote_error(flow.rpc, "set_status", other, "customer", "C1", "ignored", actor=ACTOR)[0] == "NotFound"
    assert remote_error(flow.rpc, "decide", other, approval_ids[:1], "approve", actor=ACTOR)[0] == "NotFound"
    assert remote_error(flow.rpc, "remove_price_override", other, "C1", P4, actor=ACTOR)[0] == "NotFound"
    assert remote_error(flow.rpc, "settings", other)[0] == "NotFound"   # unknown to the gateway
    assert flow.call("customers")["total"] == 3   # and the first tenant still sees its own
