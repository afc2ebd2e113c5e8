"""Many MSP tenants for a benchmark or chaos run, made the way a real MSP's data looks.

Per tenant:
- a gateway tenant with its credentials encrypted, as `make up`'s demo tenants are;
- its own account in the marketplace simulator (its own customers and subscriptions);
- its own PSA in the PSA simulator (an Autotask database or a ConnectWise company id) that mirrors
  the marketplace: each customer as a company under the same name, one active recurring contract
  (agreement) per company, one service (catalog item) per marketplace product named by its MPN.

`map_all` then does what a billing manager does on day one, through the services' own RPCs: a full
sync, a reference refresh, and "accept every suggestion" for customers, products and lines. The
suggestions are exact (same names, MPN = service identifier, one contract per company), so every
active line ends up billable on its own contract line (contract x service) and posting mode is auto.
"""
import dataclasses
import datetime as dt
import itertools
import time
import uuid

import requests
from sqlalchemy import func, select

from common.db import Store
from common.vault import Vault
from gateway import directory

_NAMESPACE = uuid.UUID("0b9f1f64-3c8e-4f0e-8a51-6d7c1e0b7e11")
_KINDS = ("customer", "product", "line")


@dataclasses.dataclass
class BenchTenant:
    tenant_id: str
    slug: str
    psa: str                      # autotask | connectwise
    account: str                  # the marketplace simulator account
    market_credentials: dict
    psa_credentials: dict
    psa_database: str             # Autotask database ci / ConnectWise company id (simulator state filter)
    stack: object = dataclasses.field(repr=False, default=None)

    def market_state(self):
        r = requests.get(self.stack.url("sim-marketplace", "/_sim/state"), params={"account": self.account},
                         timeout=120)
        r.raise_for_status()
        return r.json()

    def lines(self):
        """The account's subscription lines now: [(subscription_id, mpn, quantity, status, customer_id)]."""
        out = []
        for sub in self.market_state()["subscriptions"]:
            for line in sub.get("products") or sub.get("lines") or []:
                out.append((str(sub["id"]), line["mpn"], int(line["quantity"]), sub["status"],
                            str(sub["customerId"])))
        return out


def provision(stack, count, psa="autotask", customers=5, lines_per_tenant=50, seed=1, prefix=None):
    """``count`` tenants on ``psa``; returns them. Safe to call several times on one stack (the
    slugs carry ``prefix``, default the PSA, so calls with different prefixes never collide)."""
    prefix = prefix or psa
    vault = Vault.from_config({"FERNET_KEYS": stack.env["IDSYNC_FERNET_KEYS"]})
    made = []
    for n in range(count):
        slug = f"{prefix}-{n:04d}"
        tenant = _tenant(stack, slug, psa)
        _seed_marketplace(stack, tenant, customers, lines_per_tenant, seed + n)
        _seed_psa(stack, tenant, tenant.market_state())
        made.append(tenant)
    with Store(stack.engine("gateway")).transaction() as session:
        for t in made:
            directory.create_tenant(session, f"Bench MSP {t.slug}", t.psa, tenant_id=t.tenant_id)
            directory.store_credentials(session, vault, t.tenant_id, "marketplace", t.market_credentials)
            directory.store_credentials(session, vault, t.tenant_id, t.psa, t.psa_credentials)
    return made


def _tenant(stack, slug, psa):
    tenant_id = str(uuid.uuid5(_NAMESPACE, f"{stack.name}/{slug}"))
    key = slug.replace("-", "")
    market = {"base_url": stack.url("sim-marketplace", "/marketplace/na/"), "region": "na",
              "api_user": f"{slug}-api", "password": f"{key}-mp-password", "subscription_key": f"{key}-sub-key",
              "marketplace": "us"}
    if psa == "autotask":
        creds = {"zone_url": stack.url("sim-autotask", "/atservicesrest/v1.0/"), "api_user": f"api@{slug}.example",
                 "secret": f"{key}-at-secret", "integration_code": f"{key.upper()}INTEGRATION"}
    else:
        creds = {"site": f"127.0.0.1:{stack.port('sim-connectwise')}",
                 "base_url": stack.url("sim-connectwise", "/v4_6_release/apis/3.0/"), "company_id": key,
                 "public_key": f"{key}public", "private_key": f"{key}-private-key",
                 "client_id": str(uuid.uuid5(_NAMESPACE, slug))}
    return BenchTenant(tenant_id, slug, psa, slug, market, creds, "", stack)


def _post(stack, sim, path, body):
    r = requests.post(stack.url(sim, path), json=body, timeout=300)
    if r.status_code >= 400:
        raise RuntimeError(f"{sim} {path}: {r.status_code} {r.text[:500]}")
    return r.json()


def _seed_marketplace(stack, tenant, customers, lines, seed):
    c = tenant.market_credentials
    _post(stack, "sim-marketplace", "/_sim/generate", {
        "seed": seed, "customers": customers, "lines": lines, "account": tenant.account,
        "credentials": [{"user": c["api_user"], "password": c["password"], "subscription_key": c["subscription_key"],
                         "marketplace": c["marketplace"], "account": tenant.account}]})


def _mpns(state):
    mpns = set()
    for sub in state["subscriptions"]:
        for line in sub.get("products") or sub.get("lines") or []:
            mpns.add(line["mpn"])
    return sorted(mpns)


_at_ids = itertools.count(1)


def _seed_psa(stack, tenant, state):
    customers = sorted(state["customers"], key=lambda c: str(c["id"]))
    products = {p["mpn"]: p for p in state.get("products", [])}
    mpns = _mpns(state)
    if tenant.psa == "autotask":
        base = 800_000_000 + next(_at_ids) * 100_000
        db = {"id_base": base, "name": f"Bench {tenant.slug}", "companies": [], "contracts": [], "services": [],
              "credentials": [{"username": tenant.psa_credentials["api_user"], "secret": tenant.psa_credentials["secret"],
                               "integration_code": tenant.psa_credentials["integration_code"]}]}
        for n, cust in enumerate(customers, start=1):
            db["companies"].append({"id": base + n, "companyName": cust["name"], "companyType": 1, "isActive": True})
            db["contracts"].append({"id": base + 50_000 + n, "companyID": base + n, "contractType": 7, "status": 1,
                                    "contractName": f"{cust['name']} - Microsoft 365",
                                    "startDate": "2026-01-01T00:00:00.000"})
        for n, mpn in enumerate(mpns, start=1):
            price = str((products.get(mpn) or {}).get("unitPrice") or "10.00")
            db["services"].append({"id": base + 90_000 + n, "name": mpn, "unitPrice": price,
                                   "unitCost": str(round(float(price) * 0.85, 2)), "isActive": True})
        tenant.psa_database = str(_post(stack, "sim-autotask", "/_sim/seed",
                                        {"append": True, "databases": [db]})["databases"][0]["ci"])
    else:
        creds = tenant.psa_credentials
        entry = {"company_id": creds["company_id"], "name": f"Bench {tenant.slug}", "companies": [], "agreements": [],
                 "catalog": [], "credentials": [{"public_key": creds["public_key"], "private_key": creds["private_key"],
                                                 "client_id": creds["client_id"]}]}
        for n, cust in enumerate(customers, start=1):
            ident = f"B{n:05d}"
            entry["companies"].append({"identifier": ident, "name": cust["name"]})
            entry["agreements"].append({"name": f"{cust['name']} - Microsoft 365", "company": ident, "type": {"id": 2},
                                        "startDate": "2026-01-01T00:00:00Z", "noEndingDateFlag": True,
                                        "billingCycle": {"id": 1}, "agreementStatus": "Active"})
        for mpn in mpns:
            price = float((products.get(mpn) or {}).get("unitPrice") or 10)
            entry["catalog"].append({"identifier": mpn, "description": (products.get(mpn) or {}).get("name") or mpn,
                                     "price": price, "cost": round(price * 0.85, 2), "recurringFlag": True})
        _post(stack, "sim-connectwise", "/_sim/seed", {"companies_sets": [entry]})
        tenant.psa_database = creds["company_id"]


# --- day one: sync, references, accept every suggestion --------------------------------------------
def map_all(stack, tenants, timeout=900):
    """Full sync, reference refresh and bulk accept for every tenant; returns when each tenant's
    mapping holds all its customers and lines and every desired line is in sync in its PSA."""
    deadline = time.time() + timeout
    # a bulk accept of 50,000 lines re-plans the whole tenant in one call: minutes, not seconds
    with stack.rpc(timeout=max(120, min(timeout, 1800))) as rpc:
        runs = {t.tenant_id: rpc.marketplace.sync_now(t.tenant_id, full=True)["run_id"] for t in tenants}
        for t in tenants:
            _until(deadline, lambda: rpc.marketplace.sync_run(t.tenant_id, runs[t.tenant_id])["outcome"]
                   in ("ok", "partial", "failed"), f"the full sync of {t.slug}")
            run = rpc.marketplace.sync_run(t.tenant_id, runs[t.tenant_id])
            if run["outcome"] == "failed":
                raise RuntimeError(f"full sync of {t.slug} failed: {run}")
        expected = {t.tenant_id: len(t.lines()) for t in tenants}
        for t in tenants:
            _until(deadline, lambda: rpc.mapping.lines(t.tenant_id, 1, 1)["total"] >= expected[t.tenant_id],
                   f"{t.slug}'s lines to reach mapping")
        for t in tenants:
            rpc.mapping.refresh_references(t.tenant_id)
            rpc.mapping.update_settings(t.tenant_id, {"posting_mode": "auto"})
            for kind in _KINDS:  # order matters: a line's contract is suggested from its customer's company
                rpc.mapping.bulk(t.tenant_id, kind, "accept")
    wait_in_sync(stack, tenants, max(30, deadline - time.time()))


def desired_count(stack, tenants):
    from services.mapping import models as mm

    dl = mm.desired_lines
    with stack.engine("mapping").connect() as conn:
        return conn.execute(select(func.count()).select_from(dl).where(
            dl.c.tenant_id.in_([t.tenant_id for t in tenants]), dl.c.emitted_at.is_not(None))).scalar()


def posting_groups(stack, psa):
    if psa == "autotask":
        from services.autotask.models import posting
    else:
        from services.connectwise.models import posting
    return posting.groups


def sync_counts(stack, tenants):
    """{psa: (groups, in_sync)} over the given tenants."""
    out = {}
    for psa in sorted({t.psa for t in tenants}):
        g = posting_groups(stack, psa)
        ids = [t.tenant_id for t in tenants if t.psa == psa]
        with stack.engine(psa).connect() as conn:
            total, done = conn.execute(select(func.count(), func.count().filter(g.c.status == "in_sync"))
                                       .where(g.c.tenant_id.in_(ids))).one()
        out[psa] = (total, done)
    return out


def wait_in_sync(stack, tenants, timeout):
    """Until every emitted desired line of these tenants has a posting group and all are in sync."""
    deadline = time.time() + timeout

    def settled():
        want = desired_count(stack, tenants)
        counts = sync_counts(stack, tenants)
        groups = sum(c[0] for c in counts.values())
        return want > 0 and groups == want and all(total == done for total, done in counts.values())

    _until(deadline, settled, "every desired line to be in sync in the PSA", interval=1.0)


def _until(deadline, predicate, what, interval=0.5):
    while True:
        if predicate():
            return
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def today():
    return dt.datetime.now(dt.timezone.utc).date()
