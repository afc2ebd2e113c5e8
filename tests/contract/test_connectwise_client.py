"""ConnectWiseClient against the in-process ConnectWise simulator (simulators/connectwise).

Every client operation runs over real HTTP against the simulator: codebase discovery, auth,
conditions, Link-header paging, counts, typed reads, writes, the vendor's refusals, every injected
fault (429 / 500 / latency / drop_after_write), the throttle, malformed records and the metrics.
"""
import datetime as dt
import logging
import threading
import time
from decimal import Decimal

import pytest
import requests
from prometheus_client import REGISTRY

from common.vendor_client import (MalformedRecord, NotFound, RateLimited, Rejected, Timeout,
                                  Transient, Unauthorized, VendorError)
from services.connectwise.client import (AGREEMENTS, CATALOG, COMPANIES, C, ConnectWiseClient,
                                         additions_path)
from services.connectwise.schemas import Addition
from simulators import kit
from simulators.connectwise import create_app

API = "/v4_6_release/apis/3.0/"
ADDITIONS = "finance/agreements/{id}/additions"
ODD_NAME = 'Bob\'s "Best" IT \\ Co*'

SEED = {"reset": True, "companies_sets": [
    {"company_id": "acme", "name": "Acme MSP",
     "credentials": [{"public_key": "pub-key", "private_key": "priv-SECRET-key", "client_id": "cid-1"}],
     "companies": [
         {"id": 250, "identifier": "ACME", "name": "Acme Corp", "website": "acme.example"},
         {"id": 251, "identifier": "BLUE", "name": "Bluewater Dental"},
         {"id": 252, "identifier": "BLUE2", "name": "Bluewater Legal", "status": {"id": 2}},
         {"id": 253, "identifier": "CEDAR", "name": "Cedar Logistics"},
         {"id": 254, "identifier": "ODD", "name": ODD_NAME},
     ],
     "catalog": [
         {"id": 100, "identifier": "M365-BB", "description": "Microsoft 365 Business Basic",
          "price": 6.0, "cost": 5.1, "recurringFlag": True},
         {"id": 101, "identifier": "M365-BP", "description": "Microsoft 365 Business Premium",
          "price": 22.0, "cost": 18.7, "recurringFlag": True},
         {"id": 102, "identifier": "OLD-E1", "description": "Legacy E1", "inactiveFlag": True},
     ],
     "agreements": [
         {"id": 1000, "name": "Acme M365", "company": {"id": 250},
          "startDate": "2024-01-01T00:00:00Z", "type": {"id": 2}},
         {"id": 1001, "name": "Acme old", "company": "ACME", "startDate": "2022-01-01",
          "endDate": "2023-12-31", "agreementStatus": "Cancelled"},
         {"id": 1002, "name": "Blue M365", "company": {"id": 251},
          "startDate": "2025-03-01T00:00:00Z", "agreementStatus": "Inactive"},
         {"id": 1003, "name": "Cedar M365", "company": {"id": 253},
          "startDate": "2025-06-15T00:00:00Z"},
     ],
     "additions": [
         {"id": 1, "agreementId": 1000, "product": {"id": 100}, "quantity": 10,
          "billCustomer": "Billable", "effectiveDate": "2024-01-01T00:00:00Z"},
         {"id": 2, "agreementId": 1000, "product": "M365-BP", "quantity": 3,
          "billCustomer": "Billable", "effectiveDate": "2024-06-01T00:00:00Z",
          "cancelledDate": "2025-01-01T00:00:00Z"},
         {"id": 3, "agreementId": 1000, "product": {"identifier": "M365-BB"}, "quantity": 0,
          "billCustomer": "NoCharge", "effectiveDate": "2025-02-01T00:00:00Z"},
         {"id": 4, "agreementId": 1003, "product": {"id": 101}, "quantity": 7, "unitPrice": 21.99,
          "billCustomer": "Billable", "effectiveDate": "2025-06-15T00:00:00Z"},
     ]},
]}


class Sleeps(list):
    """A fake sleep: records the waits, never sleeps."""

    def __call__(self, seconds):
        self.append(seconds)


class Sim:
    def __init__(self, app, base):
        self.app, self.base = app, base

    def admin(self, method, path, **kw):
        resp = requests.request(method, self.base + path, timeout=10, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp.json()

    def fault(self, **spec):
        return self.admin("POST", "/_sim/faults", json=spec)

    def config(self, **changes):
        return self.admin("POST", "/_sim/config", json=changes)

    def writes(self):
        return self.admin("GET", "/_sim/writes")

    def requests_to(self, method, path):
        """How many times the simulator saw METHOD /v4_6_release/apis/3.0/<path>."""
        counts = self.admin("GET", "/_sim/requests/count")["by_endpoint"]
        return counts.get(f"{method} {API}{path}", 0)

    def addition_ids(self, agreement_id):
        state = self.admin("GET", "/_sim/state", params={"full": 1, "company_id": "acme"})
        return sorted(a["id"] for a in state["tenants"][0]["addition"]
                      if a["agreementId"] == agreement_id)

    def corrupt(self, kind, record_id, **changes):
        """The simulator has no corrupt route: damage a record in its in-process state (the
        record is still served as JSON, as a vendor bug would)."""
        cw, sim = self.app.extensions["connectwise"], self.app.extensions["sim"]
        with sim.lock:
            tenant = cw.store.tenant("acme")
            rec = {**tenant.tables[kind][record_id], **changes}
            tenant.tables[kind][record_id] = rec
            if kind == "addition":
                tenant.additions_by_agreement[rec["agreementId"]][record_id] = rec


@pytest.fixture(scope="module")
def server():
    app = create_app(seed=0)
    srv = kit.serve(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Sim(app, f"http://127.0.0.1:{srv.server_port}")
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def sim(server):
    server.admin("POST", "/_sim/reset")
    server.admin("POST", "/_sim/seed", json=SEED)
    return server


def creds(sim, **over):
    doc = {"site": sim.base.replace("http://", ""), "company_id": "acme", "public_key": "pub-key",
           "private_key": "priv-SECRET-key", "client_id": "cid-1"}
    doc.update(over)
    return doc


@pytest.fixture()
def sleeps():
    return Sleeps()


@pytest.fixture()
def client(sim, sleeps):
    return ConnectWiseClient(creds(sim, base_url=sim.base + API), sleep=sleeps, backoff=0.01,
                             timeout=(2, 5))


def metric(endpoint, status):
    value = REGISTRY.get_sample_value("vendor_requests_total", {
        "vendor": "connectwise", "endpoint": endpoint, "status": str(status)})
    return value or 0.0


class Metrics:
    """Snapshot of vendor_requests_total for some (endpoint, status) pairs; delta() after."""

    def __init__(self, *pairs):
        self.before = {p: metric(*p) for p in pairs}

    def delta(self):
        return {p: metric(*p) - v for p, v in self.before.items()}


def ids(records):
    return [r["id"] if isinstance(r, dict) else r.id for r in records]


# --- discovery and auth ---------------------------------------------------------------------------

def test_codebase_discovery_builds_the_api_base(sim, sleeps):
    m = Metrics(("GET login/companyinfo", 200), ("GET company/companies/count", 200))
    client = ConnectWiseClient(creds(sim), sleep=sleeps)          # no base_url: discover it
    assert client.base_url == sim.base + "/"                       # the site root until discovered
    assert client.count(COMPANIES) == 5                            # discovery happens first
    assert client.base_url == sim.base + "/v4_6_release/apis/3.0/"
    assert client.count(COMPANIES) == 5                            # cached: discovered once
    assert m.delta() == {("GET login/companyinfo", 200): 1, ("GET company/companies/count", 200): 2}
    # an explicit base_url skips discovery
    before = sim.admin("GET", "/_sim/requests/count")["by_endpoint"].get("GET /login/companyinfo/acme")
    explicit = ConnectWiseClient(creds(sim, base_url=sim.base + API), sleep=sleeps)
    assert explicit.count(COMPANIES) == 5
    assert sim.admin("GET", "/_sim/requests/count")["by_endpoint"].get("GET /login/companyinfo/acme") == before
    # an unknown company id: the vendor's 404, not retried
    with pytest.raises(NotFound) as err:
        ConnectWiseClient(creds(sim, company_id="nobody"), sleep=sleeps).discover()
    assert err.value.status == 404 and "Company nobody not found" in err.value.message
    assert sleeps == []


def test_plain_http_is_refused_except_for_loopback(sim):
    with pytest.raises(ValueError):
        ConnectWiseClient(creds(sim, site="http://cw.example.com"))
    assert ConnectWiseClient(creds(sim, site="na.myconnectwise.net")).base_url == \
        "https://na.myconnectwise.net/"
    with pytest.raises(ValueError):
        ConnectWiseClient(creds(sim, client_id=""))
    with pytest.raises(TypeError):                     # conditions are never raw text
        ConnectWiseClient(creds(sim)).list(COMPANIES, conditions="id > 0")


def test_auth_failures_raise_unauthorized_and_keys_are_never_logged(sim, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    m = Metrics(("GET company/companies/count", 401))
    bad_key = ConnectWiseClient(creds(sim, base_url=sim.base + API, private_key="wrong"), sleep=sleeps)
    with pytest.raises(Unauthorized) as err:
        bad_key.count(COMPANIES)
    assert err.value.status == 401
    assert err.value.message == ("Unauthorized: Authentication failed: invalid company, "
                                 "public key or private key")
    wrong_client = ConnectWiseClient(creds(sim, base_url=sim.base + API, client_id="other"),
                                     sleep=sleeps)
    with pytest.raises(Unauthorized) as err:
        wrong_client.count(COMPANIES)
    assert "clientId is not valid for this integration" in err.value.message

    class NoClientId(ConnectWiseClient):
        def auth_headers(self):
            return {k: v for k, v in super().auth_headers().items() if k != "clientId"}

    with pytest.raises(Unauthorized) as err:
        NoClientId(creds(sim, base_url=sim.base + API), sleep=sleeps).count(COMPANIES)
    assert "clientId header is required" in err.value.message
    assert m.delta() == {("GET company/companies/count", 401): 3}   # each once: never retried
    assert sleeps == []
    # the vendor may answer bad credentials with 404: check_credentials still says Unauthorized
    sim.config(auth_failure_status=404)
    with pytest.raises(Unauthorized) as err:
        bad_key.check_credentials()
    assert err.value.status == 404
    good = ConnectWiseClient(creds(sim, base_url=sim.base + API), sleep=sleeps)
    assert good.check_credentials() == 5
    text = caplog.text + repr(good) + repr(bad_key)
    assert "priv-SECRET-key" not in text and "pub-key" not in text and "Basic " not in text
    assert "cid-1" not in text


# --- conditions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, cond, expected", [
    (COMPANIES, C.eq("identifier", "acme"), [250]),
    (COMPANIES, C.eq("name", ODD_NAME), [254]),                 # quotes and backslash escaped
    (COMPANIES, C.eq("identifier", 'ACME" or id > 0 or name="x'), []),   # no injection
    (COMPANIES, C.in_("id", [250, 253, 999]), [250, 253]),
    (COMPANIES, C.in_("identifier", ["BLUE", "cedar"]), [251, 253]),
    (COMPANIES, C.not_in("id", [250, 253, 254]), [251, 252]),
    (COMPANIES, C.like("name", "Blue*"), [251, 252]),
    (COMPANIES, C.not_like("name", "Blue*"), [250, 253, 254]),
    (COMPANIES, C.contains("name", "water"), [251, 252]),
    (COMPANIES, C.eq("status/id", 2), [252]),                    # reference path
    (COMPANIES, C.is_null("website"), [251, 252, 253, 254]),
    (COMPANIES, C.not_null("website"), [250]),
    (COMPANIES, C.like("name", "Blue*") | C.eq("id", 250) & C.eq("identifier", "CEDAR"),
     [251, 252]),
    (COMPANIES, C.or_(C.like("name", "Blue*"), C.eq("id", 250)) & C.ne("identifier", "BLUE2"),
     [250, 251]),
    (COMPANIES, C.gt("lastUpdated", dt.datetime(2024, 12, 31)), [250, 251, 252, 253, 254]),
    (AGREEMENTS, C.eq("company/id", 250), [1000, 1001]),
    (AGREEMENTS, C.eq("company/identifier", "ACME") & C.eq("agreementStatus", "Active"), [1000]),
    (AGREEMENTS, C.eq("cancelledFlag", True), [1001]),
    (AGREEMENTS, C.eq("cancelledFlag", False), [1000, 1002, 1003]),
    (AGREEMENTS, C.ge("startDate", dt.date(2025, 1, 1)), [1002, 1003]),
    (AGREEMENTS, C.lt("startDate", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)), [1001]),
    (AGREEMENTS, C.in_("agreementStatus", ["Inactive", "Cancelled"]), [1001, 1002]),
    (AGREEMENTS, C.gt("startDate", dt.date(2025, 3, 1))
     | (C.not_null("endDate") & C.eq("agreementStatus", "Cancelled")), [1001, 1003]),
    (additions_path(1000), C.eq("product/identifier", "M365-BB"), [1, 3]),
    (additions_path(1000), C.in_("product/id", [101]), [2]),
    (additions_path(1000), C.gt("effectiveDate", dt.date(2024, 3, 1)) & C.ge("quantity", 1), [2]),
    (additions_path(1000), C.gt("quantity", Decimal("2.5")) & C.lt("quantity", 11.0), [1, 2]),
])
def test_conditions(client, path, cond, expected):
    assert ids(client.list(path, cond)) == expected
    assert client.count(path, cond) == len(expected)


def test_a_condition_the_vendor_refuses_is_rejected_with_its_message(client):
    with pytest.raises(Rejected) as err:
        client.list(COMPANIES, C.eq("nosuchfield", 1)).all()
    assert err.value.status == 400
    assert err.value.message == ("InvalidObject: Unknown field 'nosuchfield'; conditions: "
                                 "Unknown field 'nosuchfield' (InvalidCondition)")


# --- paging and counts --------------------------------------------------------------------------------

def test_paging_follows_link_headers_across_pages(sim, sleeps):
    sim.admin("POST", "/_sim/generate", json={
        "seed": 7, "companies": 230, "company_id": "big", "additions": 2300,
        "credentials": [{"public_key": "bp", "private_key": "bk"}]})
    big = ConnectWiseClient({"site": sim.base, "company_id": "big", "public_key": "bp",
                             "private_key": "bk", "client_id": "c"}, sleep=sleeps)
    m = Metrics(("GET company/companies", 200))
    listing = big.list(COMPANIES, C.gt("id", 0), page_size=50)
    seen = ids(listing)
    assert listing.pages == 5 and listing.complete                 # 50+50+50+50+30
    assert len(seen) == 230 and seen == sorted(seen) and len(set(seen)) == 230
    assert m.delta() == {("GET company/companies", 200): 5}
    assert big.count(COMPANIES) == 230
    # forward-only (keyset) paging, also via Link rel="next"
    forward = big.list(COMPANIES, page_size=70, forward_only=True)
    assert ids(forward) == seen and forward.pages == 4
    # typed listing with order_by and fields on the generic call
    agreements = big.agreements()
    active = agreements.all()
    assert len(active) == 230 and agreements.pages == 1
    assert all(a.active for a in active)
    assert big.list(AGREEMENTS, C.eq("id", active[0].id), fields=["id", "company/identifier"]).all() \
        == [{"id": active[0].id, "company": {"identifier": active[0].company_identifier}}]
    # a big agreement: additions over several 1,000-record pages, every record once
    sim.admin("POST", "/_sim/generate", json={
        "seed": 1, "companies": 1, "additions": 2500, "company_id": "one",
        "credentials": [{"public_key": "op", "private_key": "ok"}]})
    one = ConnectWiseClient({"site": sim.base, "company_id": "one", "public_key": "op",
                             "private_key": "ok", "client_id": "c"}, sleep=sleeps)
    agreement = one.agreements().all()[0]
    lines = one.additions(agreement.id, include_cancelled=True)
    records = lines.all()
    assert len(records) == 2500 and lines.pages == 3 and lines.malformed == []
    assert len({a.id for a in records}) == 2500
    assert all(isinstance(a, Addition) and a.agreement_id == agreement.id for a in records)
    assert one.count(additions_path(agreement.id)) == 2500


def test_next_link_to_another_host_is_refused(client):
    """Our keys go to the API host only: a Link rel=next elsewhere stops the listing."""
    response = requests.Response()
    response.status_code = 200
    response.headers["Link"] = '<https://evil.example/v4_6_release/apis/3.0/company/companies?page=2>; rel="next"'
    with pytest.raises(VendorError) as err:
        client._next_link(response, "GET company/companies")
    assert "leaves the API host" in err.value.message
    response.headers["Link"] = f'<{client.base_url}company/companies?page=2>; rel="next"'
    assert client._next_link(response, "GET company/companies") == client.base_url + "company/companies?page=2"


def test_order_by(client):
    assert ids(client.list(COMPANIES, order_by="name desc")) == [253, 254, 252, 251, 250]
    assert ids(client.list(AGREEMENTS, order_by=["company/name asc", "id desc"])) == [
        1001, 1000, 1002, 1003]
    with pytest.raises(ValueError):
        client.list(COMPANIES, order_by="name; drop")


# --- typed reads ---------------------------------------------------------------------------------------

def test_companies_agreements_catalog(client):
    companies = client.companies().all()
    assert ids(companies) == [250, 251, 253, 254]                # 252 is Inactive
    assert companies[0].identifier == "ACME" and companies[0].status_name == "Active"
    assert ids(client.companies(active_only=False)) == [250, 251, 252, 253, 254]

    assert ids(client.agreements()) == [1000, 1003]
    assert ids(client.agreements(company_id=250)) == [1000]
    assert ids(client.agreements(company_id=250, active_only=False)) == [1000, 1001]
    acme = client.get_agreement(1000)
    assert (acme.company_id, acme.company_identifier, acme.type_name) == (250, "ACME", "Microsoft 365")
    assert acme.start_date == dt.date(2024, 1, 1) and acme.end_date is None and acme.active
    old = client.get_agreement(1001)
    assert old.cancelled_flag and not old.active and old.end_date == dt.date(2023, 12, 31)

    catalog = client.catalog().all()
    assert ids(catalog) == [100, 101]
    assert catalog[1].price == Decimal("22.0") and catalog[1].cost == Decimal("18.7")
    assert ids(client.catalog(active_only=False)) == [100, 101, 102]


def test_additions_reads(client):
    assert ids(client.additions(1000)) == [1, 3]                  # 2 was cancelled 2025-01-01
    assert ids(client.additions(1000, include_cancelled=True)) == [1, 2, 3]
    assert ids(client.additions(1000, as_of=dt.date(2024, 12, 31))) == [1, 2, 3]   # still billing
    assert ids(client.additions(1000, as_of=dt.date(2025, 1, 1))) == [1, 3]
    line = client.get_addition(1000, 2)
    assert line.quantity == 3 and line.product_identifier == "M365-BP"
    assert line.effective_date == dt.date(2024, 6, 1) and line.cancelled_date == dt.date(2025, 1, 1)
    assert line.unit_price == Decimal("22.0") and line.cancelled
    assert client.get_addition(1003, 4).unit_price == Decimal("21.99")    # no float noise
    batch = client.additions_for([1000, 1003, 9999, 1000])
    assert {k: ids(v) for k, v in batch.by_agreement.items()} == {1000: [1, 3], 1003: [4]}
    assert batch.missing_agreements == [9999] and batch.malformed == [] and len(batch) == 3
    with pytest.raises(NotFound) as err:
        client.get_addition(1000, 77)
    assert err.value.message == "NotFound: addition recId 77 not found."


# --- writes --------------------------------------------------------------------------------------------

def test_create_addition_returns_the_201_record(sim, client):
    m = Metrics((f"POST {ADDITIONS}", 201))
    rec = client.create_addition(1000, 101, 12, Decimal("21.99"), Decimal("18.70"),
                                 dt.date(2026, 2, 10), description="M365 BP seats")
    assert isinstance(rec, Addition)
    assert (rec.id, rec.agreement_id, rec.product_id, rec.product_identifier) == (5, 1000, 101, "M365-BP")
    assert rec.quantity == 12 and rec.unit_price == Decimal("21.99") and rec.unit_cost == Decimal("18.7")
    assert rec.bill_customer == "Billable" and rec.effective_date == dt.date(2026, 2, 10)
    assert rec.cancelled_date is None and rec.description == "M365 BP seats"
    assert rec.ext_price == Decimal("263.88")
    assert m.delta() == {(f"POST {ADDITIONS}", 201): 1}
    assert sim.writes()[-1]["body"] == {
        "product": {"id": 101}, "quantity": 12, "billCustomer": "Billable",
        "effectiveDate": "2026-02-10T00:00:00Z", "unitPrice": 21.99, "unitCost": 18.7,
        "description": "M365 BP seats"}
    assert client.get_addition(1000, 5) == rec
    # price and cost left to the catalog
    rec2 = client.create_addition(1003, 100, 2, None, None, dt.date(2026, 2, 10))
    assert rec2.unit_price == Decimal("6.0") and rec2.unit_cost == Decimal("5.1")


def test_patch_quantity_price_and_cancel(sim, client):
    m = Metrics((f"PATCH {ADDITIONS}/{{id}}", 200))
    rec = client.update_addition(1000, 1, quantity=15, unit_price=Decimal("5.75"),
                                 unit_cost=Decimal("4.90"))
    assert rec.quantity == 15 and rec.unit_price == Decimal("5.75") and rec.unit_cost == Decimal("4.9")
    assert rec.ext_price == Decimal("86.25") and rec.effective_date == dt.date(2024, 1, 1)
    assert sim.writes()[-1]["body"] == [{"op": "replace", "path": "quantity", "value": 15},
                                        {"op": "replace", "path": "unitPrice", "value": 5.75},
                                        {"op": "replace", "path": "unitCost", "value": 4.9}]
    cancelled = client.cancel_addition(1000, 1, dt.date(2026, 3, 1))
    assert cancelled.cancelled_date == dt.date(2026, 3, 1) and cancelled.quantity == 15
    assert sim.writes()[-1]["body"] == [{"op": "replace", "path": "cancelledDate",
                                         "value": "2026-03-01T00:00:00Z"}]
    assert m.delta() == {(f"PATCH {ADDITIONS}/{{id}}", 200): 2}
    assert ids(client.additions(1000, as_of=dt.date(2026, 2, 28))) == [1, 3]
    assert ids(client.additions(1000, as_of=dt.date(2026, 3, 1))) == [3]
    assert client.get_addition(1000, 1).cancelled_date == dt.date(2026, 3, 1)   # still readable
    with pytest.raises(ValueError):
        client.update_addition(1000, 1, extPrice=5)              # not patchable: nothing sent
    with pytest.raises(ValueError):
        client.update_addition(1000, 1)


@pytest.mark.parametrize("agreement, kwargs, expected", [
    (1001, {}, "agreementId: Agreement 1001 is Cancelled; additions can only be added to an "
               "active agreement (AgreementNotActive)"),
    (1000, {"product_id": 999}, "product: product {'id': 999} was not found (NotFound)"),
    (1000, {"bill_customer": None}, "billCustomer: billCustomer is required (Required)"),
    (1000, {"product_id": 102}, "product: Product OLD-E1 is inactive (InvalidField)"),
])
def test_invalid_writes_are_rejected_with_the_vendors_message(sim, client, sleeps, agreement,
                                                                kwargs, expected):
    args = {"product_id": 100, "quantity": 2, "unit_price": Decimal("6.00"),
            "unit_cost": Decimal("5.10"), "effective_date": dt.date(2026, 2, 1), **kwargs}
    m = Metrics((f"POST {ADDITIONS}", 400))
    with pytest.raises(Rejected) as err:
        client.create_addition(agreement, **args)
    assert err.value.status == 400
    assert err.value.message == f"InvalidObject: addition object is invalid; {expected}"
    assert m.delta() == {(f"POST {ADDITIONS}", 400): 1}
    assert sim.requests_to("POST", f"finance/agreements/{agreement}/additions") == 1
    assert sim.addition_ids(1000) == [1, 2, 3] and sleeps == []


def test_patch_refused_with_the_vendors_message(client):
    with pytest.raises(Rejected) as err:
        client.update_addition(1000, 1, quantity=-1)
    assert err.value.message == ("InvalidObject: addition object is invalid; quantity: quantity "
                                 "must be greater than or equal to 0 (InvalidField)")
    with pytest.raises(Rejected) as err:
        client.cancel_addition(1000, 1, dt.date(2020, 1, 1))
    assert "cancelledDate must be on or after effectiveDate" in err.value.message
    assert client.get_addition(1000, 1).quantity == 10


# --- faults --------------------------------------------------------------------------------------------

def test_429_read_is_retried_after_retry_after(sim, client, sleeps):
    sim.fault(kind="status", status=429, seconds=7, endpoint=r"^GET .*/company/companies$", count=2)
    m = Metrics(("GET company/companies", 429), ("GET company/companies", 200))
    assert ids(client.companies()) == [250, 251, 253, 254]
    assert sleeps == [7, 7]                                     # Retry-After honoured, twice
    assert m.delta() == {("GET company/companies", 429): 2, ("GET company/companies", 200): 1}


def test_429_write_is_not_retried(sim, client, sleeps):
    sim.fault(kind="status", status=429, seconds=7, endpoint=r"^POST .*/additions$", count=1)
    m = Metrics((f"POST {ADDITIONS}", 429))
    with pytest.raises(RateLimited) as err:
        client.create_addition(1000, 100, 1, Decimal("6"), Decimal("5"), dt.date(2026, 2, 1))
    assert err.value.retry_after == 7 and err.value.status == 429
    assert err.value.message == "Too many requests. Please try again in 30 seconds."
    assert sleeps == [] and m.delta() == {(f"POST {ADDITIONS}", 429): 1}
    assert sim.requests_to("POST", "finance/agreements/1000/additions") == 1
    assert sim.addition_ids(1000) == [1, 2, 3]


def test_500_read_is_retried(sim, client, sleeps):
    sim.fault(kind="status", status=500, endpoint=r"^GET .*/agreements/1000/additions$", count=2)
    m = Metrics((f"GET {ADDITIONS}", 500), (f"GET {ADDITIONS}", 200))
    assert ids(client.additions(1000)) == [1, 3]
    assert len(sleeps) == 2                                    # backoff between attempts
    assert m.delta() == {(f"GET {ADDITIONS}", 500): 2, (f"GET {ADDITIONS}", 200): 1}


def test_500_write_is_transient_after_one_attempt(sim, client, sleeps):
    sim.fault(kind="status", status=500, endpoint=r"^PATCH ", count=None)
    m = Metrics((f"PATCH {ADDITIONS}/{{id}}", 500))
    with pytest.raises(Transient) as err:
        client.update_addition(1000, 1, quantity=11)
    assert err.value.status == 500
    assert err.value.message == "UnexpectedError: simulated fault 500"
    assert sleeps == [] and m.delta() == {(f"PATCH {ADDITIONS}/{{id}}", 500): 1}
    assert sim.requests_to("PATCH", "finance/agreements/1000/additions/1") == 1
    assert sim.writes() == []                                  # nothing applied, nothing logged
    sim.admin("DELETE", "/_sim/faults")
    assert client.get_addition(1000, 1).quantity == 10


def test_latency_beyond_the_timeout_is_timeout(sim, sleeps):
    client = ConnectWiseClient(creds(sim, base_url=sim.base + API), sleep=sleeps, backoff=0.01,
                               timeout=(2, 0.3), read_retries=1)
    sim.fault(kind="latency", seconds=1.0, endpoint=r"^GET .*/finance/agreements$", count=None)
    m = Metrics(("GET finance/agreements", "Timeout"))
    with pytest.raises(Timeout) as err:
        client.agreements().all()
    assert err.value.request_sent is None                      # outcome unknown
    assert len(sleeps) == 1                                    # a read: retried once, then raised
    assert m.delta() == {("GET finance/agreements", "Timeout"): 2}
    # a slow write: Timeout after one attempt, and the write did happen (outcome unknown)
    sim.fault(kind="latency", seconds=1.0, endpoint=r"^POST .*/additions$", count=1)
    with pytest.raises(Timeout):
        client.create_addition(1003, 100, 9, Decimal("6"), Decimal("5"), dt.date(2026, 2, 1))
    assert len(sleeps) == 1
    deadline = time.monotonic() + 10
    while sim.addition_ids(1003) == [4] and time.monotonic() < deadline:
        time.sleep(0.05)                                       # the server finishes the write
    assert sim.addition_ids(1003) == [4, 5]
    assert sim.requests_to("POST", "finance/agreements/1003/additions") == 1


def test_drop_after_write_is_timeout_and_the_addition_exists(sim, client, sleeps):
    sim.fault(kind="drop_after_write", endpoint=r"^POST .*/additions$", count=1)
    m = Metrics((f"POST {ADDITIONS}", "Timeout"))
    with pytest.raises(Timeout) as err:
        client.create_addition(1003, 100, 4, Decimal("6.00"), Decimal("5.10"), dt.date(2026, 2, 1))
    assert err.value.request_sent is None and sleeps == []
    assert m.delta() == {(f"POST {ADDITIONS}", "Timeout"): 1}
    assert sim.requests_to("POST", "finance/agreements/1003/additions") == 1
    last = sim.writes()[-1]
    assert last["dropped"] is True and last["status"] == 201 and last["body"]["quantity"] == 4
    # the caller's duty after Timeout: re-read and recompute; the line is there
    lines = client.additions(1003, conditions=C.eq("product/id", 100)).all()
    assert [(a.quantity, a.unit_price, a.effective_date) for a in lines] == [
        (4, Decimal("6.0"), dt.date(2026, 2, 1))]


def test_throttle_after_a_shrunk_limit(sim, client, sleeps):
    sim.config(rate_limit_per_minute=3)
    for _ in range(3):
        assert client.count(COMPANIES) == 5
    m = Metrics(("GET company/companies/count", 429), (f"POST {ADDITIONS}", 429))
    with pytest.raises(RateLimited) as err:       # Retry-After (~60 s) beyond max_wait: no sleep
        client.count(COMPANIES)
    assert 30 < err.value.retry_after <= 60 and sleeps == []
    assert err.value.message == f"Too many requests. Please try again in {int(err.value.retry_after)} seconds."
    with pytest.raises(RateLimited) as err:
        client.create_addition(1000, 100, 1, Decimal("6"), Decimal("5"), dt.date(2026, 2, 1))
    assert 30 < err.value.retry_after <= 60
    assert m.delta() == {("GET company/companies/count", 429): 1, (f"POST {ADDITIONS}", 429): 1}
    # a client willing to wait that long sleeps each Retry-After (fake sleep here), then gives up
    patient = ConnectWiseClient(creds(sim, base_url=sim.base + API), sleep=sleeps, max_wait=120,
                                read_retries=2)
    with pytest.raises(RateLimited):
        patient.count(CATALOG)
    assert len(sleeps) == 2 and all(30 < s <= 60 for s in sleeps)
    assert sim.addition_ids(1000) == [1, 2, 3]


# --- malformed records ---------------------------------------------------------------------------------

def test_malformed_records_are_collected_in_lists_and_raised_for_one(sim, client):
    sim.corrupt("addition", 3, quantity="lots")
    sim.corrupt("agreement", 1003, startDate="someday")
    before = REGISTRY.get_sample_value("vendor_malformed_records_total", {
        "vendor": "connectwise", "endpoint": f"GET {ADDITIONS}"}) or 0
    listing = client.additions(1000)
    assert ids(listing) == [1]                                  # the bad record is skipped
    assert listing.complete and len(listing.malformed) == 1
    bad = listing.malformed[0]
    assert isinstance(bad, MalformedRecord)
    assert (bad.record_id, bad.field) == (3, "quantity") and "Not a valid number" in bad.problem
    assert "record 3" in str(bad) and "quantity" in str(bad)
    after = REGISTRY.get_sample_value("vendor_malformed_records_total", {
        "vendor": "connectwise", "endpoint": f"GET {ADDITIONS}"})
    assert after - before == 1
    with pytest.raises(MalformedRecord) as err:
        client.get_addition(1000, 3)
    assert (err.value.record_id, err.value.field) == (3, "quantity")
    with pytest.raises(MalformedRecord):
        client.list(additions_path(1000), kind="addition", strict=True).all()
    agreements = client.agreements()
    assert ids(agreements) == [1000]
    assert [(e.record_id, e.field) for e in agreements.malformed] == [(1003, "startDate")]
    batch = client.additions_for([1000, 1003])
    assert ids(batch) == [1, 4] and [e.record_id for e in batch.malformed] == [3]
