"""Helpers for the ConnectWise posting scenarios: a tenant in the gateway with its own company set in
the ConnectWise simulator, replicas of the connectwise service started and killed by pid,
connectwise_line_desired events published the way the mapping service's outbox does, and readings of
the simulator (additions, write log)."""
import collections
import itertools
import os
import re
import subprocess
import sys
import uuid

import requests
from nameko.amqp.publish import Publisher
from nameko.events import get_event_exchange

from common.db import Store
from common.events import make_event
from common.secrets import ROOT
from common.topology import http_port
from common.vault import Vault
from gateway import directory
from tests.support.autotask_posting import Replicas as _Replicas
from tests.support.autotask_posting import next_month, today  # noqa: F401 - re-exported for the tests

_ids = itertools.count(1)
API = "/v4_6_release/apis/3.0/"


def sim(path):
    return f"http://127.0.0.1:{http_port('sim-connectwise')}{path}"


class ConnectWiseTenant:
    """One tenant: gateway row + encrypted ConnectWise keys + a company set of its own in the simulator.

    ``agreements`` agreements (one customer company each), ``products`` catalog products; ``lines``
    maps (agreement index, product index) -> quantity of an addition billed since January 1st."""

    def __init__(self, env, gateway_engine, amqp_uri, *, agreements=2, products=4, lines=None, price="20.00",
                 cost="17.00"):
        n = next(_ids)
        self.tenant_id = str(uuid.uuid4())
        self.company_id = f"cwpost{uuid.uuid4().hex[:10]}"
        self.id_base = 800_000_000 + (os.getpid() % 1000) * 1_000_000 + n * 20_000
        self.public_key, self.private_key = "public", f"p-{uuid.uuid4().hex[:12]}"
        self.client_id = str(uuid.uuid4())
        self.amqp_uri = amqp_uri
        self.versions = collections.Counter()
        self.agreement_ids = [self.id_base + 1001 + i for i in range(agreements)]
        self.product_ids = [self.id_base + 501 + j for j in range(products)]
        self.price, self.cost = price, cost
        year = today().year
        doc = {"companies_sets": [{
            "company_id": self.company_id, "name": f"Posting MSP {n}",
            "credentials": [{"public_key": self.public_key, "private_key": self.private_key,
                             "client_id": self.client_id}],
            "companies": [{"id": self.id_base + 1 + i, "identifier": f"C{n}x{i}", "name": f"Customer {n}-{i}"}
                          for i in range(agreements)],
            "catalog": [{"id": pid, "identifier": f"SEAT-{n}-{j}", "description": f"Seat product {j}",
                         "price": float(price), "cost": float(cost), "recurringFlag": True}
                        for j, pid in enumerate(self.product_ids)],
            "agreements": [{"id": aid, "name": f"Microsoft 365 {i}", "company": self.id_base + 1 + i,
                            "startDate": f"{year - 1}-01-01T00:00:00Z", "noEndingDateFlag": True}
                           for i, aid in enumerate(self.agreement_ids)],
            "additions": [{"agreementId": self.agreement_ids[i], "product": self.product_ids[j], "quantity": qty,
                           "unitPrice": float(price), "unitCost": float(cost), "billCustomer": "Billable",
                           "effectiveDate": f"{year}-01-01T00:00:00Z"}
                          for (i, j), qty in (lines or {}).items()],
        }]}
        r = requests.post(sim("/_sim/seed"), json=doc, timeout=60)
        assert r.status_code == 200, r.text
        vault = Vault.from_config({"FERNET_KEYS": env["IDSYNC_FERNET_KEYS"]})
        with Store(gateway_engine).transaction() as session:
            directory.create_tenant(session, f"CW posting test {n}", "connectwise", tenant_id=self.tenant_id)
            directory.store_credentials(session, vault, self.tenant_id, "connectwise", self.credentials())

    def credentials(self):
        return {"site": f"127.0.0.1:{http_port('sim-connectwise')}", "base_url": sim(API),
                "company_id": self.company_id, "public_key": self.public_key, "private_key": self.private_key,
                "client_id": self.client_id}

    # --- driving ---------------------------------------------------------------------------------
    def desire(self, agreement_id, product_id, quantity, *, day=None, price=None, cost=None, publisher=None):
        """Publish one connectwise_line_desired (the next desired_version of that line)."""
        key = (agreement_id, product_id)
        self.versions[key] += 1
        event = make_event("mapping", "connectwise_line_desired", self.tenant_id, contract_id=str(agreement_id),
                           service_id=str(product_id), company_id=str(agreement_id - 1000),
                           quantity=int(quantity), unit_price=price or self.price, unit_cost=cost or self.cost,
                           effective_date=day or today(), desired_version=self.versions[key],
                           lines=[{"subscription_id": f"sub-{agreement_id}", "mpn": f"MPN-{product_id}"}])
        (publisher or self.publisher()).publish(event, exchange=get_event_exchange("mapping", {}),
                                                routing_key="connectwise_line_desired")
        return event

    def publisher(self):
        return Publisher(self.amqp_uri, use_confirms=True, serializer="json")

    # --- reading the simulator -------------------------------------------------------------------
    def state(self):
        r = requests.get(sim("/_sim/state"), params={"full": 1, "company_id": self.company_id}, timeout=30)
        r.raise_for_status()
        return r.json()["tenants"][0]

    @staticmethod
    def additions(state, agreement_id, product_id):
        return sorted((a for a in state["addition"] if a["agreementId"] == agreement_id
                       and a["product"]["id"] == product_id), key=lambda a: a["id"])

    def quantity(self, state, agreement_id, product_id, day=None):
        """What ConnectWise bills for the line on ``day`` (default today): the additions in force."""
        iso = (day or today()).isoformat()
        return sum(int(a["quantity"]) for a in self.additions(state, agreement_id, product_id)
                   if a["effectiveDate"][:10] <= iso and (a["cancelledDate"] is None or a["cancelledDate"][:10] > iso))

    def writes(self):
        """This tenant's applied writes from the simulator's write log."""
        mine = {str(a) for a in self.agreement_ids}
        out = []
        for w in requests.get(sim("/_sim/writes"), timeout=30).json():
            m = re.search(r"/finance/agreements/(\d+)/additions", w["path"])
            if m and m.group(1) in mine and w["method"] != "GET":
                out.append(w)
        return out

    def requests_by_endpoint(self):
        """{METHOD path: n} of this tenant's agreements (the simulator's counts are shared)."""
        mine = {str(a) for a in self.agreement_ids}
        counts = requests.get(sim("/_sim/requests/count"), timeout=10).json()["by_endpoint"]
        out = {}
        for key, n in counts.items():
            m = re.search(r"/finance/agreements/(\d+)/additions", key)
            if m and m.group(1) in mine:
                out[key] = n
        return out


def _date(value):
    return None if value is None else str(value)[:10]


def applied_operations(writes):
    """The write log as (operation, agreement, target, value) tuples, to compare with the ledger.
    target: the product id for a POST, the addition id for a PATCH."""
    out = []
    for w in writes:
        agreement = int(re.search(r"/finance/agreements/(\d+)/additions", w["path"]).group(1))
        if w["method"] == "POST":
            b = w["body"]
            out.append(("add_addition", agreement, b["product"]["id"],
                        (int(b["quantity"]), _date(b["effectiveDate"]), _date(b.get("cancelledDate")))))
            continue
        addition = int(w["path"].rstrip("/").rsplit("/", 1)[1])
        for op in w["body"]:
            path = op["path"].lstrip("/")
            if path == "quantity":
                out.append(("quantity", agreement, addition, int(op["value"])))
            elif path == "cancelledDate":
                out.append(("cancel", agreement, addition, _date(op["value"])))
            elif path == "unitPrice":
                out.append(("price", agreement, addition, format(float(op["value"]), ".2f")))
    return collections.Counter(out)


def ledger_operations(rows):
    out = []
    for r in rows:
        p, agreement = r["params"] or {}, int(r["contract_id"])
        if r["operation"] == "add_addition":
            out.append(("add_addition", agreement, int(r["service_id"]),
                        (int(p["quantity"]), r["effective_date"].isoformat(), p.get("cancelled_date"))))
        elif r["operation"] == "quantity":
            out.append(("quantity", agreement, p["addition_id"], int(p["quantity"])))
        elif r["operation"] == "cancel":
            out.append(("cancel", agreement, p["addition_id"], p.get("cancelled_date")))
        elif r["operation"] == "price":
            out.append(("price", agreement, p["addition_id"], format(float(r["unit_price"]), ".2f")))
    return collections.Counter(out)


class Replicas(_Replicas):
    """Extra connectwise service processes (the stack's own one is stopped meanwhile)."""

    def start(self, name):
        n = len(self.procs)
        port = self.base_port + n
        env = {**self.env, **self.extra, "IDSYNC_PROCESS_NAME": name, "IDSYNC_PORT_OFFSET": "",
               "IDSYNC_CONNECTWISE_HTTP": f"127.0.0.1:{port}"}
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.jsonl", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "common.runner", "connectwise"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs[name] = (proc, port)
        return proc
