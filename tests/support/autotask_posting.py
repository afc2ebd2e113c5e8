"""Helpers for the Autotask posting scenarios: a tenant in the gateway with its own database in the
Autotask simulator, replicas of the autotask service started and killed by pid, LineDesired events
published the way the mapping service's outbox does, and readings of the simulator."""
import calendar
import collections
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid

import requests
from kombu import Exchange
from nameko.amqp.publish import Publisher

from common.db import Store
from common.events import make_event
from common.secrets import ROOT
from common.topology import http_port
from common.vault import Vault
from gateway import directory

_ids = itertools.count(1)


def sim(path):
    return f"http://127.0.0.1:{http_port('sim-autotask')}{path}"


def today():
    return dt.datetime.now(dt.timezone.utc).date()


def next_month(day=None):
    day = day or today()
    return dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def month_end(day):
    return dt.date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])


class AutotaskTenant:
    """One tenant: gateway row + encrypted Autotask credentials + a simulator database of its own.

    ``contracts`` contracts (one company each) and ``services`` services; ``lines`` maps
    (contract index, service index) -> starting units (a ContractService made at the contract start).
    """

    def __init__(self, env, gateway_engine, amqp_uri, *, contracts=3, services=4, lines=None, price="20.00",
                 cost="17.00"):
        n = next(_ids)
        self.tenant_id = str(uuid.uuid4())
        self.id_base = 700_000_000 + (os.getpid() % 1000) * 1_000_000 + n * 20_000
        self.user = f"api-{self.tenant_id[:8]}@posting.example"
        self.secret, self.code = f"s-{uuid.uuid4().hex[:10]}", "POSTINGTESTCODE"
        self.amqp_uri = amqp_uri
        self.versions = collections.Counter()
        self.contract_ids = [self.id_base + 1001 + i for i in range(contracts)]
        self.service_ids = [self.id_base + 501 + j for j in range(services)]
        self.price, self.cost = price, cost
        year = today().year
        doc = {"append": True, "databases": [{
            "id_base": self.id_base, "name": f"posting-{n}",
            "credentials": [{"username": self.user, "secret": self.secret, "integration_code": self.code}],
            "companies": [{"id": self.id_base + 1 + i, "companyName": f"Customer {n}-{i}"} for i in range(contracts)],
            "services": [{"id": sid, "name": f"Seat service {j}", "unitPrice": float(price), "unitCost": float(cost)}
                         for j, sid in enumerate(self.service_ids)],
            "contracts": [{"id": cid, "companyID": self.id_base + 1 + i, "contractName": f"Recurring {i}",
                           "startDate": f"{year - 1}-01-01"} for i, cid in enumerate(self.contract_ids)],
            "contract_services": [{"contractID": self.contract_ids[i], "serviceID": self.service_ids[j],
                                   "unitPrice": float(price), "unitCost": float(cost), "units": units}
                                  for (i, j), units in (lines or {}).items()],
        }]}
        r = requests.post(sim("/_sim/seed"), json=doc, timeout=60)
        assert r.status_code == 200, r.text
        self.ci = r.json()["databases"][0]["ci"]
        vault = Vault.from_config({"FERNET_KEYS": env["IDSYNC_FERNET_KEYS"]})
        with Store(gateway_engine).transaction() as session:
            directory.create_tenant(session, f"Posting test {n}", "autotask", tenant_id=self.tenant_id)
            directory.store_credentials(session, vault, self.tenant_id, "autotask", self.credentials())

    def credentials(self):
        return {"zone_url": sim("/atservicesrest/v1.0/"), "api_user": self.user, "secret": self.secret,
                "integration_code": self.code}

    # --- driving ---------------------------------------------------------------------------------
    def desire(self, contract_id, service_id, quantity, *, day=None, price=None, cost=None, publisher=None):
        """Publish one autotask_line_desired (the next desired_version of that line)."""
        key = (contract_id, service_id)
        self.versions[key] += 1
        event = make_event("mapping", "autotask_line_desired", self.tenant_id, contract_id=str(contract_id),
                           service_id=str(service_id), company_id=str(contract_id - 1000),
                           quantity=int(quantity), unit_price=price or self.price, unit_cost=cost or self.cost,
                           effective_date=day or today(), desired_version=self.versions[key],
                           lines=[{"subscription_id": f"sub-{contract_id}", "mpn": f"MPN-{service_id}"}])
        (publisher or self.publisher()).publish(
            event, exchange=Exchange("mapping.events", type="topic", durable=True, auto_delete=True),
            routing_key="autotask_line_desired")
        return event

    def publisher(self):
        return Publisher(self.amqp_uri, use_confirms=True, serializer="json")

    # --- reading the simulator -------------------------------------------------------------------
    def state(self):
        r = requests.get(sim("/_sim/state"), params={"database": self.ci, "units": 1}, timeout=30)
        r.raise_for_status()
        return r.json()["databases"][0]

    @staticmethod
    def contract_service(state, contract_id, service_id):
        for cs in state["contract_services"]:
            if cs["contractID"] == contract_id and cs["serviceID"] == service_id:
                return cs
        return None

    def units(self, state, contract_id, service_id, day=None):
        """Units in force for the (calendar-month) period of ``day`` (default today)."""
        cs = self.contract_service(state, contract_id, service_id)
        if cs is None:
            return None
        if day is None:
            return state["units_today"][str(cs["id"])]
        last = month_end(day).isoformat()
        return sum(a["unitChange"] for a in state["adjustments"]
                   if a["contractServiceID"] == cs["id"] and a["effectiveDate"][:10] <= last)

    def writes(self, state=None, log=None):
        """This tenant's applied writes from the simulator's write log (``log``: an already fetched
        ``/_sim/writes``, shared by many tenants)."""
        state = state or self.state()
        contracts = set(self.contract_ids)
        cs_ids = {cs["id"] for cs in state["contract_services"]}
        out = []
        if log is None:
            log = requests.get(sim("/_sim/writes"), timeout=30).json()
        for w in log:
            body = w.get("body") if isinstance(w.get("body"), dict) else {}
            low = {str(k).lower(): v for k, v in body.items()}
            if low.get("contractid") in contracts or (w["method"] == "PATCH" and low.get("id") in cs_ids):
                out.append(w)
        return out


def applied_operations(tenant, state, writes):
    """The write log as (operation, contract, service, change) tuples, to compare with the ledger."""
    by_cs = {cs["id"]: (cs["contractID"], cs["serviceID"]) for cs in state["contract_services"]}
    out = []
    for w in writes:
        body = {str(k).lower(): v for k, v in w["body"].items()}
        if w["path"].endswith("/ContractServiceAdjustments"):
            out.append(("adjust", body["contractid"], body["serviceid"], body["unitchange"],
                        str(body["effectivedate"])[:10]))
        elif w["method"] == "POST" and w["path"].endswith("/Services"):
            out.append(("add_service", body["contractid"], body["serviceid"], None, None))
        elif w["method"] == "PATCH" and w["path"].endswith("/Services"):
            contract, service = by_cs[body["id"]]
            out.append(("price", contract, service, format(float(body["adjustedprice"]), ".2f"), None))
    return collections.Counter(out)


def ledger_operations(rows):
    out = []
    for r in rows:
        if r["operation"] == "adjust":
            out.append(("adjust", int(r["contract_id"]), int(r["service_id"]), r["unit_change"],
                        r["effective_date"].isoformat()))
        elif r["operation"] == "add_service":
            out.append(("add_service", int(r["contract_id"]), int(r["service_id"]), None, None))
        else:
            out.append(("price", int(r["contract_id"]), int(r["service_id"]), format(float(r["unit_price"]), ".2f"),
                        None))
    return collections.Counter(out)


class Replicas:
    """Extra autotask service processes (the stack's own one is stopped meanwhile)."""

    def __init__(self, env, extra_env, base_port):
        self.env = env
        self.extra = extra_env
        self.base_port = base_port
        self.procs = {}
        self.killed = set()
        self.logs = ROOT / ".run" / env["IDSYNC_STACK"] / "logs"

    def start(self, name):
        n = len(self.procs)
        port = self.base_port + n
        env = {**self.env, **self.extra, "IDSYNC_PROCESS_NAME": name, "IDSYNC_PORT_OFFSET": "",
               "IDSYNC_AUTOTASK_HTTP": f"127.0.0.1:{port}"}
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.jsonl", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "common.runner", "autotask"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs[name] = (proc, port)
        return proc

    def wait_healthy(self, timeout=60):
        deadline = time.time() + timeout
        for name, (proc, port) in self.procs.items():
            if name in self.killed:
                continue
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"replica {name} exited with {proc.returncode}")
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.time() > deadline:
                    raise AssertionError(f"replica {name} not healthy after {timeout}s")
                time.sleep(0.3)

    def metrics(self, name):
        proc, port = self.procs[name]
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    def pid(self, name):
        return self.procs[name][0].pid

    def sigkill(self, name):
        proc, _ = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed.add(name)

    def by_owner(self, lease_owner):
        """The replica whose posting owner id (host:pid:nonce) this is."""
        for name, (proc, _) in self.procs.items():
            if f":{proc.pid}:" in (lease_owner or ""):
                return name
        return None

    def alive(self):
        return [n for n, (p, _) in self.procs.items() if p.poll() is None]

    def stop_all(self):
        for name, (proc, _) in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, (proc, _) in self.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
