"""Setup of the gateway bench: one tenant with a realistic marketplace and PSA, its mapping state
built by the product itself, and a realistic share of it mapped by people (bulk actions).

1. The gateway's directory gets the tenant (Autotask PSA), an admin and one billing user per client
   (gateway.directory, as tests/support/autotask_posting.py does).
2. The marketplace simulator generates the tenant's customers, subscription lines and catalogue
   (`POST /_sim/generate`); the Autotask simulator gets the MSP's PSA as gateway/seed_simulators.py
   builds it for the demo (most customers there under the same name, a fifth typed differently, a
   ninth missing) with one recurring contract per company (every thirteenth company has two, so its
   lines cannot be suggested a contract) and a service per product name.
3. Marketplace data reaches the mapping service as a first full sync would send it, before the
   PSA is connected (an MSP that connects its marketplace first): the mapping service keeps every
   customer, product and line but has no PSA records to suggest from yet. This is the cheaper
   order for the setup: the per-event suggestions (and their mapping_changed events) are skipped
   (one tenant's events are handled one at a time, under the tenant's lock).
   - ``events`` (default): the customer_changed / product_changed / subscription_line_changed
     events are built from the simulator's records with the marketplace service's own validation
     (services.marketplace.schemas) and change planning (services.marketplace.domain) and
     published on `marketplace.events`; the mapping service's handlers do the rest. No SQL
     touches the mapping schema.
   - ``sync``: the real path, `POST /api/v1/sync {"full": true}` with the marketplace credentials
     stored; the simulator's `rate_limit_per_minute` is raised for the setup (a run fetches every
     subscription's detail one after another: ~23,500 for 40,000 lines).
4. The PSA is connected: the Autotask credentials are stored (encrypted, gateway.directory) and
   the mapping service reads the PSA records (its `refresh_references` RPC, which
   `POST /api/v1/mapping/references/refresh` calls, with a longer deadline than the gateway's 30 s:
   this first read suggests for every customer, product and line in one transaction).
5. People's decisions, as a billing person makes them on the screens: posting mode `review`
   through the JSON API (nothing is posted to the PSA; desired changes wait for approval), then
   the screens' bulk actions (the mapping service's `bulk` RPC, which `POST
   /api/v1/mapping/<kind>/bulk` calls, called directly for a deadline longer than the gateway's
   30 s): accept the customer suggestions for 24 of the 40 name prefixes the generator uses and
   those customers' contract-line suggestions, ignore the unmatched customers of one prefix, and
   accept the product suggestions. The rest stays as suggested or unmapped.

Setup time at full size (10,000 customers, 40,000 lines), measured on a busy 2-core machine (load
average 10-19): generate ~1 min, publish 50,065 events 5.5 min (concurrently with the intake),
mapping intake 38 min (~25 events/s), the first PSA read 21 min and each whole-tenant re-plan
(accepting the products) about as long: both re-plan every contract line of the tenant, and
services/mapping/recompute.py Context.lines_for scans every loaded line for every contract line
(quadratic: ~20,000 groups x 40,000 lines). Expect far less on an idle machine and once that scan
is indexed by group.
"""
import datetime as dt
import secrets
import time
import uuid

import requests
from kombu import Connection, Producer
from nameko.events import get_event_exchange

from common.db import Store
from common.events import make_event
from common.vault import Vault, parse_keys
from gateway import directory
from gateway.seed_simulators import psa_side
from services.marketplace import domain as mdomain
from services.marketplace import schemas as mschemas
from simulators.marketplace.generator import PREFIXES

DOMAIN = "bench-gw.example"
ACCEPTED_PREFIXES = PREFIXES[:24]      # customers (and their lines) a person has gone through
IGNORED_PREFIX = PREFIXES[-1]          # one prefix whose unmatched customers were ignored
MAPPING_QUEUES = [f"evt-marketplace-{e}--mapping.on_{e}"
                  for e in ("customer_changed", "product_changed", "subscription_line_changed")]


class Api:
    """A signed-in JSON API client (session cookie + CSRF header, as the integration tests do)."""

    def __init__(self, base, email, password, timeout=120):
        self.base, self.timeout = base, timeout
        self.s = requests.Session()
        r = self.s.post(f"{base}/api/v1/session", json={"email": email, "password": password}, timeout=30)
        r.raise_for_status()
        self.s.headers["X-CSRF-Token"] = r.json()["csrf_token"]

    def call(self, method, path, **kw):
        r = self.s.request(method, f"{self.base}{path}", timeout=kw.pop("timeout", self.timeout), **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def total(self, screen, **params):
        return self.call("GET", f"/api/v1/mapping/{screen}", params={"per_page": 1, **params})["total"]


def _sim(stack, name, method, path, **kw):
    r = requests.request(method, stack.url(name, path), timeout=kw.pop("timeout", 300), **kw)
    if r.status_code >= 400:
        raise RuntimeError(f"{name} {method} {path} -> {r.status_code} {r.text[:300]}")
    return r.json()


# --- 1. the tenant -------------------------------------------------------------------------------
def make_tenant(stack, clients):
    tenant_id = str(uuid.uuid4())
    password = secrets.token_urlsafe(18)
    tag = tenant_id[:8]
    mp = {"base_url": stack.url("sim-marketplace", "/marketplace/na/"), "region": "na",
          "api_user": f"bench-{tag}", "password": secrets.token_urlsafe(12),
          "subscription_key": f"key-{tag}", "marketplace": "us"}
    at = {"zone_url": stack.url("sim-autotask", "/atservicesrest/v1.0/"), "api_user": f"api-{tag}@{DOMAIN}",
          "secret": secrets.token_urlsafe(12), "integration_code": f"BENCHGW{tag.upper()}"}
    with Store(stack.engine("gateway")).transaction() as session:
        directory.create_tenant(session, "Bench Gateway MSP", "autotask", tenant_id=tenant_id)
        admin = directory.create_user(session, tenant_id, f"admin-{tag}@{DOMAIN}", "Bench Admin", "admin", password)
        clerks = [directory.create_user(session, tenant_id, f"clerk{i:02d}-{tag}@{DOMAIN}", f"Clerk {i}", "billing",
                                        password) for i in range(clients)]
    return {"tenant_id": tenant_id, "password": password, "admin": admin["email"],
            "clerks": [c["email"] for c in clerks], "marketplace": mp, "autotask": at}


def store_credentials(stack, tenant, kind):
    vault = Vault(parse_keys(stack.env["IDSYNC_FERNET_KEYS"]))
    with Store(stack.engine("gateway")).transaction() as session:
        directory.store_credentials(session, vault, tenant["tenant_id"], kind, tenant[kind])


# --- 2. the vendors' data ------------------------------------------------------------------------
def generate_marketplace(stack, tenant, customers, lines, seed=11):
    mp = tenant["marketplace"]
    cred = {"user": mp["api_user"], "password": mp["password"], "subscription_key": mp["subscription_key"],
            "marketplace": mp["marketplace"]}
    _sim(stack, "sim-marketplace", "POST", "/_sim/generate",
         json={"seed": seed, "customers": customers, "lines": lines, "credentials": [cred]})
    return _sim(stack, "sim-marketplace", "GET", "/_sim/state")


def seed_autotask(stack, tenant, state):
    companies, services = psa_side(state["customers"], state["products"])
    at = tenant["autotask"]
    base = 900_000 + uuid.UUID(tenant["tenant_id"]).int % 90_000
    db = {"ci": base, "name": "Bench Gateway MSP",
          "credentials": [{"username": at["api_user"], "secret": at["secret"], "integration_code": at["integration_code"]}],
          "companies": [], "contracts": [], "services": []}
    for n, c in enumerate(companies, start=1):
        db["companies"].append({"id": 1_000_000 + n, "companyName": c["name"], "companyType": 1, "isActive": True,
                                "webAddress": c["web"]})
        db["contracts"].append({"id": 5_000_000 + n, "companyID": 1_000_000 + n, "contractType": 7, "status": 1,
                                "contractName": f"{c['name']} - Microsoft 365", "startDate": "2026-01-01T00:00:00.000"})
        if n % 13 == 0:  # a second recurring contract: no single contract to suggest
            db["contracts"].append({"id": 7_000_000 + n, "companyID": 1_000_000 + n, "contractType": 7, "status": 1,
                                    "contractName": f"{c['name']} - Azure", "startDate": "2026-03-01T00:00:00.000"})
    for n, svc in enumerate(services, start=1):
        db["services"].append({"id": 300_000 + n, "name": svc["name"], "unitPrice": svc["unitPrice"],
                               "unitCost": svc["unitCost"], "isActive": True})
    _sim(stack, "sim-autotask", "POST", "/_sim/seed", json={"append": True, "databases": [db]})
    return {"companies": len(db["companies"]), "contracts": len(db["contracts"]), "services": len(db["services"])}


# --- 4a. the events a first full sync would publish ----------------------------------------------
def sync_events(state, tenant_id, seen_at=None):
    """(event_type, payload) in the order a first full sync writes them to its outbox."""
    seen_at = seen_at or dt.datetime.now(dt.timezone.utc)
    out = []
    for raw in state["customers"]:
        record = mschemas.validate(mschemas.CUSTOMER, raw, endpoint="GET /customers")
        out.append(("customer_changed", {"customer_id": str(record["id"]), **mdomain.customer_snapshot(record)}))
    catalog = {}
    for raw in state["products"]:
        snap = mdomain.product_snapshot(mschemas.validate(mschemas.PRODUCT, raw, endpoint="GET /products"))
        catalog[snap["mpn"]] = snap
        out.append(("product_changed", mdomain.product_event(snap)))
    for raw in sorted(state["subscriptions"], key=lambda s: int(s["id"])):
        detail = mschemas.validate(mschemas.SUBSCRIPTION_DETAIL, raw, endpoint="GET /subscriptions/{id}")
        _, changes = mdomain.plan_subscription({}, detail, seen_at, catalog, subscription_id=str(detail["id"]))
        out += [("subscription_line_changed", mdomain.line_event(c)) for c in changes]
    return [(etype, make_event("marketplace", etype, tenant_id, **payload)) for etype, payload in out]


def publish(amqp_uri, events):
    """Publish with publisher confirms on one channel (what the marketplace relay does per row)."""
    exchange = get_event_exchange("marketplace", {})
    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.channel(), exchange=exchange, serializer="json")
        exchange(producer.channel).declare()
        for etype, body in events:
            producer.publish(body, routing_key=etype, delivery_mode=2, mandatory=True)


def queue_depth(amqp_uri, names=MAPPING_QUEUES):
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        total = 0
        for name in names:
            try:
                total += channel.queue_declare(name, passive=True).message_count
            except Exception:  # noqa: BLE001 - not declared (yet): nothing waits in it
                channel = conn.channel()
        return total


# --- the whole setup -----------------------------------------------------------------------------
def wait(predicate, timeout, message, interval=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message} (last: {last!r})")


def setup(stack, customers, lines, clients, via="events", log=print, timeout=3600):
    t0 = time.monotonic()
    took = {}
    tenant = make_tenant(stack, clients)
    state = generate_marketplace(stack, tenant, customers, lines)
    psa = seed_autotask(stack, tenant, state)
    expected_lines = sum(len(s["products"]) for s in state["subscriptions"])
    sizes = {"customers": len(state["customers"]), "products": len(state["products"]),
             "subscriptions": len(state["subscriptions"]), "lines": expected_lines, "psa": psa}
    log(f"  generated {sizes}")
    admin = Api(stack.url("gateway"), tenant["admin"], tenant["password"], timeout=600)
    admin.call("PATCH", "/api/v1/settings/billing", json={"posting_mode": "review"})
    took["vendors_s"] = round(time.monotonic() - t0, 1)

    t1 = time.monotonic()
    if via == "sync":
        store_credentials(stack, tenant, "marketplace")
        _sim(stack, "sim-marketplace", "POST", "/_sim/config", json={"rate_limit_per_minute": 1_000_000})
        run = admin.call("POST", "/api/v1/sync", json={"full": True})

        def run_done():
            r = admin.call("GET", f"/api/v1/sync/runs/{run['run_id']}")
            return r if r.get("outcome") not in ("queued", "running") else None
        finished = wait(run_done, timeout, "the full sync run", interval=5)
        took["sync_run_s"] = round(time.monotonic() - t1, 1)
        sizes["sync_outcome"] = finished.get("outcome")
    else:
        events = sync_events(state, tenant["tenant_id"])
        publish(stack.amqp_uri, events)
        took["publish_s"] = round(time.monotonic() - t1, 1)
        log(f"  published {len(events)} events in {took['publish_s']}s")

    def absorbed():
        got = (admin.total("customers"), admin.total("lines"))
        return got if got == (sizes["customers"], expected_lines) and queue_depth(stack.amqp_uri) == 0 else None
    wait(absorbed, timeout, "the mapping service to hold every customer and line", interval=3)
    took["mapping_ingest_s"] = round(time.monotonic() - t1, 1)
    log(f"  mapping service holds them after {took['mapping_ingest_s']}s")

    t3 = time.monotonic()
    store_credentials(stack, tenant, "autotask")
    with stack.rpc(timeout=timeout) as rpc:
        sizes["psa_read"] = rpc.mapping.refresh_references(tenant["tenant_id"])
    took["psa_refresh_s"] = round(time.monotonic() - t3, 1)
    log(f"  PSA records read and suggestions made in {took['psa_refresh_s']}s")

    t2 = time.monotonic()
    tid, actor = tenant["tenant_id"], tenant["admin"]
    with stack.rpc(timeout=timeout) as rpc:
        def bulk(kind, action, search=None, status=None):
            return rpc.mapping.bulk(tid, kind, action, search=search, status=status, actor=actor)["changed"]
        # products last: accepting them re-plans every contract line of the tenant at once
        decisions = {"customers_accepted": sum(bulk("customer", "accept", p) for p in ACCEPTED_PREFIXES),
                     "lines_accepted": sum(bulk("line", "accept", p) for p in ACCEPTED_PREFIXES),
                     "customers_ignored": bulk("customer", "ignore", IGNORED_PREFIX, "unmapped"),
                     "products_accepted": bulk("product", "accept")}
    took["decisions_s"] = round(time.monotonic() - t2, 1)
    statuses = {screen: {s: admin.total(screen, status=s) for s in ("unmapped", "conflict", "suggested", "mapped",
                                                                     "ignored")}
                for screen in ("customers", "products", "lines")}
    took["setup_total_s"] = round(time.monotonic() - t0, 1)
    log(f"  decisions {decisions} in {took['decisions_s']}s; statuses {statuses}")
    return {"tenant": tenant, "state": state, "sizes": sizes, "decisions": decisions, "statuses": statuses,
            "took": took}
