"""AutotaskClient against the in-process Autotask PSA simulator (simulators/autotask), over real HTTP.

Every client operation, every injected fault, and the metric each case leaves behind.
"""
import copy
import datetime as dt
import socket
import threading
import time
from decimal import Decimal

import pytest
import requests
from prometheus_client import REGISTRY

from common.vendor_client import (MalformedRecord, NotFound, RateLimited, Rejected, Timeout, Transient,
                                  Unauthorized)
from services.autotask.client import AutotaskClient, F
from simulators import kit
from simulators.autotask import create_app

API = "/ATServicesRest/V1.0"
TODAY = "2026-03-10"
DAY = dt.date(2026, 3, 10)
USER, SECRET, CODE = "api@acme.example", "s3cret-value", "INTCODE"
ADJ = "POST /ContractServiceAdjustments"
THREAD_MESSAGE = "The Autotask API thread threshold of 3 threads has been exceeded"

SEED = {"databases": [
    {"zone": "webservices5", "ci": 111,
     "credentials": [{"username": USER, "secret": SECRET, "integration_code": CODE}],
     "companies": [
         {"id": 100, "companyName": "Contoso Dental", "webAddress": "www.contoso.example"},
         {"id": 101, "companyName": "Fabrikam Legal LLC"},
         {"id": 102, "companyName": "Northwind Traders", "isActive": False},
         {"id": 103, "companyName": "Prospect Partners", "companyType": 3}],
     "services": [
         {"id": 200, "name": "Microsoft 365 Business Basic", "unitPrice": 6.0, "unitCost": 5.1},
         {"id": 201, "name": "Microsoft 365 E3", "unitPrice": 36.0, "unitCost": 30.6},
         {"id": 202, "name": "Legacy Fax Line", "unitPrice": 1.0, "isActive": False}],
     "contracts": [
         {"id": 300, "companyID": 100, "contractName": "Contoso Recurring",
          "startDate": "2026-01-01", "endDate": "2026-12-31"},
         {"id": 301, "companyID": 101, "contractName": "Fabrikam T&M", "contractType": 1,
          "startDate": "2026-01-01", "endDate": "2026-12-31"},
         {"id": 302, "companyID": 101, "contractName": "Fabrikam Recurring",
          "startDate": "2026-01-15", "endDate": "2027-01-14"},
         {"id": 303, "companyID": 101, "contractName": "Fabrikam Old", "status": 0,
          "startDate": "2025-01-01", "endDate": "2025-12-31"}],
     "contract_services": [{"id": 400, "contractID": 302, "serviceID": 201, "units": 8}]},
]}


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

    def hits(self, method_path):
        """Requests the simulator received on one vendor path, e.g. "POST /ATServicesRest/V1.0/Companies"."""
        return self.admin("GET", "/_sim/requests/count")["by_endpoint"].get(method_path, 0)


class Sleeps(list):
    """Stands in for time.sleep: records the waits the client asked for, sleeps none."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture(scope="module")
def server():
    app = create_app()
    srv = kit.serve(app, port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def sim(server):
    s = Sim(*server)
    s.admin("POST", "/_sim/reset")
    s.config(hourly_limit=10_000, hourly_window_seconds=3600, thread_limit=3, latency_50_seconds=0,
             latency_75_seconds=0, today=TODAY, max_records=500, base_url=None)
    s.admin("POST", "/_sim/seed", json=SEED)
    return s


def make_client(sim, *, secret=SECRET, user=USER, **kw):
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("timeout", (3.05, 5.0))
    creds = {"zone_url": sim.base + "/atservicesrest/v1.0/", "api_user": user, "secret": secret,
             "integration_code": CODE}
    return AutotaskClient(creds, **kw)


@pytest.fixture()
def client(sim):
    return make_client(sim)


def metric(endpoint, status):
    return REGISTRY.get_sample_value("vendor_requests_total",
                                     {"vendor": "autotask", "endpoint": endpoint, "status": status}) or 0.0


def malformed_metric(endpoint):
    return REGISTRY.get_sample_value("vendor_malformed_records_total",
                                     {"vendor": "autotask", "endpoint": endpoint}) or 0.0


class Counts:
    """vendor_requests_total deltas for (endpoint, status) pairs."""

    def __init__(self, *pairs):
        self.before = {p: metric(*p) for p in pairs}

    def delta(self):
        return {p: metric(*p) - v for p, v in self.before.items()}


def ids(records):
    return [r["id"] for r in records]


# --- zone discovery and auth ---------------------------------------------------------------------

def test_zone_discovery_cached_and_auth_headers(sim, client):
    counts = Counts(("GET /ZoneInformation", "200"), ("GET /Companies/{id}", "200"))
    assert client.api_url() == sim.base + API + "/"
    assert client.zone_information()["ci"] == 111
    company = client.get("companies", 100)
    assert company == {"id": 100, "companyName": "Contoso Dental", "companyNumber": None, "companyType": 1,
                       "isActive": True, "webAddress": "www.contoso.example", "phone": None}
    assert client.get("Companies", 101)["companyName"] == "Fabrikam Legal LLC"
    # one explicit lookup + the first one; later calls use the cached url
    assert sim.hits("GET /ATServicesRest/V1.0/ZoneInformation") == 2
    assert counts.delta() == {("GET /ZoneInformation", "200"): 2, ("GET /Companies/{id}", "200"): 2}
    assert SECRET not in repr(client) and CODE not in repr(client)


def test_wrong_secret_and_unknown_user_are_unauthorized(sim):
    counts = Counts(("GET /Companies/{id}", "401"), ("GET /ZoneInformation", "404"))
    with pytest.raises(Unauthorized) as err:
        make_client(sim, secret="wrong").get("Companies", 100)
    assert err.value.status == 401 and "ApiIntegrationCode" in err.value.message
    assert SECRET not in str(err.value) and "wrong" not in str(err.value)
    with pytest.raises(Unauthorized) as err:
        make_client(sim, user="nobody@x.example").get("Companies", 100)
    assert err.value.status == 404 and "nobody@x.example" in err.value.message
    assert counts.delta() == {("GET /Companies/{id}", "401"): 1, ("GET /ZoneInformation", "404"): 1}


# --- reads ---------------------------------------------------------------------------------------

def test_queries_with_in_and_or_filters_count_and_get(client):
    counts = Counts(("POST /Companies/query", "200"), ("POST /Companies/query/count", "200"),
                    ("GET /Contracts/{id}", "200"))
    assert ids(client.query("Companies", F.in_("id", [100, 103, 999]))) == [100, 103]
    nested = F.or_(F.eq("id", 100), F.and_(F.eq("companyType", 1), F.eq("isActive", False)))
    assert ids(client.query("Companies", nested)) == [100, 102]
    assert ids(client.query("Companies", [F.begins_with("companyName", "fab"), F.not_in("id", [100])])) == [101]
    assert client.query("Companies", F.eq("id", 100), include_fields=["companyName"]).all() == [
        {"id": 100, "companyName": "Contoso Dental"}]
    assert ids(client.companies()) == [100, 101, 103]
    assert ids(client.companies(active_only=False)) == [100, 101, 102, 103]
    assert client.count("Companies", F.eq("isActive", True)) == 3
    assert client.count("Companies", F.in_("id", [100, 102, 7])) == 2

    contract = client.get("Contracts", 302)
    assert (contract["companyID"], contract["contractType"], contract["status"]) == (101, 7, 1)
    assert (contract["startDate"], contract["endDate"]) == (dt.date(2026, 1, 15), dt.date(2027, 1, 14))
    assert client.get("Contracts", 999_999) is None
    assert counts.delta() == {("POST /Companies/query", "200"): 6, ("POST /Companies/query/count", "200"): 2,
                              ("GET /Contracts/{id}", "200"): 2}

    assert ids(client.contracts()) == [300, 302]                      # recurring (7) and active (1)
    assert ids(client.contracts(company_id=101)) == [302]
    assert ids(client.contracts(company_id=101, recurring_only=False)) == [301, 302, 303]
    services = {s["id"]: s for s in client.services()}
    assert sorted(services) == [200, 201]
    assert (services[200]["unitPrice"], services[200]["unitCost"]) == (Decimal("6.0"), Decimal("5.1"))
    assert ids(client.services(active_only=False)) == [200, 201, 202]


def test_refused_query_is_rejected_with_vendor_message_not_retried(client):
    counts = Counts(("POST /Companies/query", "500"))
    with pytest.raises(Rejected) as err:
        client.query("Companies", F.eq("nope", 1)).all()
    assert err.value.status == 500 and "nope" in err.value.message
    assert client.sleep == [] and counts.delta() == {("POST /Companies/query", "500"): 1}


def test_paging_over_four_pages_and_batched_in_filters(sim, client):
    gen = sim.admin("POST", "/_sim/generate", json={"seed": 7, "companies": 1600, "database": 111,
                                                    "lines_per_contract": 1, "start_from": "2025-01-01"})
    assert gen["companies"] == 1600
    counts = Counts(("POST /Companies/query", "200"), ("POST /Companies/query/next", "200"))
    result = client.query("Companies", F.eq("companyType", 1))
    seen = ids(result)
    assert len(seen) == 1603 and seen == sorted(set(seen))            # 1600 generated + 3 seeded
    assert result.pages == 4 and result.complete and result.malformed == []
    assert client.count("Companies", F.eq("companyType", 1)) == 1603
    assert counts.delta() == {("POST /Companies/query", "200"): 1, ("POST /Companies/query/next", "200"): 3}
    small = client.query("Companies", F.lte("id", 103), max_records=1)
    assert ids(small) == [100, 101, 102, 103] and small.pages == 4

    contract_ids = ids(client.contracts())
    assert len(contract_ids) == 1602                                  # 1600 generated + 300, 302
    lines = client.contract_services(contract_ids)
    by_id = {cs["id"]: cs for cs in lines}
    assert lines.pages == 4 and lines.complete                        # 4 batches of <= 500 ids
    assert len(by_id) == client.count("ContractServices", F.gte("id", 0)) == 1601
    assert by_id[400]["contractID"] == 302 and by_id[400]["serviceID"] == 201
    units = client.service_units(contract_ids=contract_ids, on_date=DAY).all()
    assert len(units) == 1601 and all(u["units"] >= 1 for u in units)
    assert all(u["startDate"] <= DAY <= u["endDate"] for u in units)


def test_contract_services_units_in_force_after_adjustments_and_price_patch(sim, client):
    counts = Counts(("POST /Contracts/{id}/Services", "200"), (ADJ, "200"), ("PATCH /Contracts/{id}/Services", "200"))
    csid = client.add_contract_service(300, 200, Decimal("7.50"), Decimal("5.10"), "M365 Basic")
    lines = {cs["id"]: cs for cs in client.contract_services([300, 302])}
    assert sorted(lines) == sorted([csid, 400])
    assert (lines[csid]["unitPrice"], lines[csid]["unitCost"], lines[csid]["invoiceDescription"]) == (
        Decimal("7.5"), Decimal("5.1"), "M365 Basic")

    first = client.add_adjustment(300, 200, None, 10, DAY)                       # new line: +10 today
    second = client.add_adjustment(300, None, csid, -3, dt.date(2026, 4, 1))     # decrease next period
    assert isinstance(first, int) and second > first
    assert client.update_contract_service_price(300, csid, Decimal("8.25")) == csid
    assert client.get("ContractServices", csid)["adjustedPrice"] == Decimal("8.25")

    def in_force(day, **kw):
        return {(u["contractServiceID"], u["units"], u["price"], u["startDate"], u["endDate"])
                for u in client.service_units(on_date=day, **kw)}
    assert in_force(DAY, contract_ids=[300]) == {(csid, 10, Decimal("7.5"), dt.date(2026, 3, 1), dt.date(2026, 3, 31))}
    assert in_force(dt.date(2026, 4, 15), contract_ids=[300]) == {
        (csid, 7, Decimal("8.25"), dt.date(2026, 4, 1), dt.date(2026, 4, 30))}
    # 302 runs 15th to 14th; the seeded line has 8 units
    assert in_force(DAY, contract_service_ids=[csid, 400]) == {
        (csid, 10, Decimal("7.5"), dt.date(2026, 3, 1), dt.date(2026, 3, 31)),
        (400, 8, Decimal("36"), dt.date(2026, 2, 15), dt.date(2026, 3, 14))}
    assert {u["contractServiceID"] for u in client.service_units(on_date=DAY)} == {csid, 400}

    writes = [(w["method"], w["path"], w["body"]) for w in sim.writes()]
    assert writes == [
        ("POST", API + "/Contracts/300/Services",
         {"contractID": 300, "serviceID": 200, "unitPrice": 7.5, "unitCost": 5.1, "invoiceDescription": "M365 Basic"}),
        ("POST", API + "/ContractServiceAdjustments",
         {"contractID": 300, "unitChange": 10, "effectiveDate": TODAY, "serviceID": 200}),
        ("POST", API + "/ContractServiceAdjustments",
         {"contractID": 300, "unitChange": -3, "effectiveDate": "2026-04-01", "contractServiceID": csid}),
        ("PATCH", API + "/Contracts/300/Services", {"id": csid, "adjustedPrice": 8.25})]
    assert counts.delta() == {("POST /Contracts/{id}/Services", "200"): 1, (ADJ, "200"): 2,
                              ("PATCH /Contracts/{id}/Services", "200"): 1}


def test_invalid_writes_rejected_with_vendor_message(sim, client):
    counts = Counts((ADJ, "500"), ("POST /Contracts/{id}/Services", "500"), ("PATCH /Contracts/{id}/Services", "404"))
    with pytest.raises(Rejected) as err:
        client.add_adjustment(999, 200, None, 1, DAY)                              # unknown contract
    assert err.value.status == 500 and "999" in err.value.message
    with pytest.raises(Rejected) as err:
        client.add_adjustment(301, 200, None, 1, DAY)                              # T&M contract
    assert "Recurring Service" in err.value.message
    with pytest.raises(Rejected) as err:
        client.add_contract_service(301, 200, 1, 1)
    assert "Recurring Service" in err.value.message
    with pytest.raises(Rejected) as err:
        client.add_adjustment(300, 200, None, -1, DAY)                             # below zero
    assert "negative" in err.value.message
    with pytest.raises(NotFound):
        client.update_contract_service_price(300, 98_765, Decimal("1.00"))
    with pytest.raises(ValueError):
        client.add_adjustment(300, 200, None, 0, DAY)                              # refused before sending
    assert sim.writes() == [] and client.sleep == []
    assert sim.hits("POST " + API + "/ContractServiceAdjustments") == 3           # each sent once
    assert counts.delta() == {(ADJ, "500"): 3, ("POST /Contracts/{id}/Services", "500"): 1,
                              ("PATCH /Contracts/{id}/Services", "404"): 1}


def test_charge_and_threshold_information(sim, client):
    counts = Counts(("POST /Contracts/{id}/Charges", "200"), ("POST /Contracts/{id}/Charges", "500"),
                    ("GET /ThresholdInformation", "200"))
    charge_id = client.add_charge(300, "Azure plan usage Feb", 1, Decimal("123.45"), dt.date(2026, 2, 28),
                                  unit_cost=Decimal("100.00"), billing_code_id=29682801)
    charge = client.get("ContractCharges", charge_id)
    assert (charge["contractID"], charge["unitPrice"], charge["datePurchased"], charge["isBilled"]) == (
        300, 123.45, "2026-02-28T00:00:00.000", False)
    with pytest.raises(Rejected) as err:
        client.add_charge(999, "x", 1, 1, DAY, product_id=5)
    assert "999" in err.value.message
    with pytest.raises(ValueError):
        client.add_charge(300, "x", 1, 1, DAY)                                    # no product or billing code
    assert client.threshold_information() == {
        "external_request_threshold": 10_000, "request_threshold_timeframe": 60,
        "current_timeframe_request_count": 3}                                     # 2 charges + 1 get
    assert counts.delta() == {("POST /Contracts/{id}/Charges", "200"): 1, ("POST /Contracts/{id}/Charges", "500"): 1,
                              ("GET /ThresholdInformation", "200"): 1}


# --- injected faults -----------------------------------------------------------------------------

def test_429_with_retry_after_read_retried_write_not(sim, client):
    counts = Counts(("GET /Companies/{id}", "429"), ("GET /Companies/{id}", "200"), (ADJ, "429"))
    sim.fault(kind="status", status=429, seconds=2, count=1, endpoint=f"^GET {API}/Companies/100$")
    assert client.get("Companies", 100)["id"] == 100
    assert client.sleep == [2.0]                                                  # waited Retry-After
    sim.fault(kind="status", status=429, seconds=7, count=1, endpoint=f"^POST {API}/ContractServiceAdjustments$")
    with pytest.raises(RateLimited) as err:
        client.add_adjustment(302, 201, None, 2, DAY)
    assert err.value.retry_after == 7.0 and client.sleep == [2.0]                 # not retried
    assert sim.hits("POST " + API + "/ContractServiceAdjustments") == 1 and sim.writes() == []
    assert counts.delta() == {("GET /Companies/{id}", "429"): 1, ("GET /Companies/{id}", "200"): 1,
                              (ADJ, "429"): 1}


def test_500_read_retried_write_transient_not_retried(sim, client):
    counts = Counts(("POST /Contracts/query", "500"), ("POST /Contracts/query", "200"), (ADJ, "500"))
    sim.fault(kind="status", status=500, count=2, endpoint=f"^POST {API}/Contracts/query$")
    assert ids(client.contracts()) == [300, 302]
    assert len(client.sleep) == 2                                                 # two backoffs
    sim.fault(kind="status", status=500, count=1, endpoint=f"^POST {API}/ContractServiceAdjustments$")
    with pytest.raises(Transient) as err:
        client.add_adjustment(302, 201, None, 2, DAY)
    assert err.value.status == 500 and err.value.message == "simulated fault 500"
    assert not isinstance(err.value, Rejected) and len(client.sleep) == 2
    assert sim.hits("POST " + API + "/ContractServiceAdjustments") == 1           # one attempt
    assert sim.writes() == []
    assert counts.delta() == {("POST /Contracts/query", "500"): 2, ("POST /Contracts/query", "200"): 1,
                              (ADJ, "500"): 1}


def _wait_for_writes(sim, n):
    deadline = time.monotonic() + 10
    while len(sim.writes()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return sim.writes()


def test_latency_beyond_client_timeout(sim):
    client = make_client(sim, timeout=(3.05, 0.3))
    counts = Counts(("GET /Companies/{id}", "Timeout"), ("GET /Companies/{id}", "200"),
                    ("POST /Contracts/{id}/Services", "Timeout"))
    client.api_url()
    # a read: timed out once, retried, answered
    sim.fault(kind="latency", seconds=1.0, count=1, endpoint=f"^GET {API}/Companies/100$")
    assert client.get("Companies", 100)["id"] == 100 and len(client.sleep) == 1
    # no retries left: the Timeout reaches the caller
    sim.fault(kind="latency", seconds=1.0, count=1, endpoint=f"^GET {API}/Companies/101$")
    with pytest.raises(Timeout) as err:
        make_client(sim, timeout=(3.05, 0.3), read_retries=0).get("Companies", 101)
    assert err.value.request_sent is None and err.value.status is None
    # a write: Timeout, not retried - and the simulator applied it after the client gave up
    sim.fault(kind="latency", seconds=1.0, count=1, endpoint=f"^POST {API}/Contracts/300/Services$")
    with pytest.raises(Timeout):
        client.add_contract_service(300, 201, Decimal("36.00"), Decimal("30.60"))
    writes = _wait_for_writes(sim, 1)
    assert [(w["method"], w["path"], w["status"]) for w in writes] == [("POST", API + "/Contracts/300/Services", 200)]
    assert [cs["serviceID"] for cs in client.contract_services([300])] == [201]  # outcome: applied
    assert sim.hits("POST " + API + "/Contracts/300/Services") == 1
    assert counts.delta() == {("GET /Companies/{id}", "Timeout"): 2, ("GET /Companies/{id}", "200"): 1,
                              ("POST /Contracts/{id}/Services", "Timeout"): 1}


def test_drop_after_write_is_timeout_but_applied(sim, client):
    counts = Counts((ADJ, "Timeout"), (ADJ, "200"))
    sim.fault(kind="drop_after_write", count=1, endpoint=f"^POST {API}/ContractServiceAdjustments$")
    with pytest.raises(Timeout) as err:
        client.add_adjustment(302, 201, None, 4, DAY)
    assert err.value.request_sent is None and client.sleep == []
    writes = sim.writes()
    assert len(writes) == 1 and writes[0]["dropped"] is True
    assert writes[0]["body"] == {"contractID": 302, "unitChange": 4, "effectiveDate": TODAY, "serviceID": 201}
    # re-read the PSA: 8 seeded + 4 applied before the connection was dropped
    assert [u["units"] for u in client.service_units(contract_service_ids=[400], on_date=DAY)] == [12]
    assert sim.hits("POST " + API + "/ContractServiceAdjustments") == 1
    assert counts.delta() == {(ADJ, "Timeout"): 1, (ADJ, "200"): 0}


def test_write_resent_once_when_connection_never_opened(sim):
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    sim.config(base_url=f"http://127.0.0.1:{dead}")
    client = make_client(sim)
    counts = Counts((ADJ, "Transient"))
    assert client.api_url() == f"http://127.0.0.1:{dead}{API}/"
    with pytest.raises(Transient) as err:
        client.add_adjustment(302, 201, None, 1, DAY)
    assert err.value.request_sent is False and len(client.sleep) == 1
    assert counts.delta() == {(ADJ, "Transient"): 2}


def test_fourth_concurrent_call_is_rate_limited(sim):
    slow = make_client(sim)
    slow.api_url()
    sim.fault(kind="latency", seconds=1.0, endpoint=f"^GET {API}/Companies/100$")
    results = []
    threads = [threading.Thread(target=lambda: results.append(slow.get("Companies", 100)["id"])) for _ in range(3)]
    for t in threads:
        t.start()
    gate = sim.app.extensions["autotask"].gate
    deadline = time.monotonic() + 5
    while gate.in_flight((111, CODE, "Companies")) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    fourth = make_client(sim)
    counts = Counts(("GET /Companies/{id}", "429"))
    with pytest.raises(RateLimited) as err:
        fourth.get("Companies", 101)
    assert err.value.message == THREAD_MESSAGE and err.value.retry_after == 1.0
    assert fourth.sleep == [1.0, 1.0, 1.0]                                         # 3 retries, all refused
    assert fourth.get("Contracts", 300)["id"] == 300                             # another endpoint is free
    for t in threads:
        t.join()
    assert results == [100, 100, 100]
    assert counts.delta() == {("GET /Companies/{id}", "429"): 4}


def test_hourly_budget_exhausted(sim, client):
    sim.config(hourly_limit=3)
    counts = Counts(("GET /Companies/{id}", "429"), (ADJ, "429"))
    for company in (100, 101, 102):
        assert client.get("Companies", company)["id"] == company
    with pytest.raises(RateLimited) as err:
        client.get("Companies", 103)
    # the window clears in about an hour: longer than max_wait, so raised at once, not slept
    assert err.value.retry_after > 30 and "threshold of 3 requests per 60 minutes" in err.value.message
    with pytest.raises(RateLimited):
        client.add_adjustment(302, 201, None, 1, DAY)
    assert client.sleep == []
    assert client.threshold_information() == {
        "external_request_threshold": 3, "request_threshold_timeframe": 60, "current_timeframe_request_count": 3}
    assert counts.delta() == {("GET /Companies/{id}", "429"): 1, (ADJ, "429"): 1}


# --- validation ----------------------------------------------------------------------------------

def test_malformed_records(sim, client):
    seed = copy.deepcopy(SEED)
    db = seed["databases"][0]
    db["companies"].append({"id": 190, "companyName": ""})
    db["contracts"].append({"id": 390, "companyID": 100, "contractName": "Backwards",
                            "startDate": "2026-06-01", "endDate": "2026-01-31"})
    # seeds skip the API's rules (history may hold anything): a line whose units went below zero
    db["adjustments"] = [{"contractID": 300, "serviceID": 201, "unitChange": -2, "effectiveDate": "2026-01-01"}]
    sim.admin("POST", "/_sim/seed", json=seed)
    before = {e: malformed_metric(e) for e in ("POST /Contracts/query", "GET /Contracts/{id}",
                                               "POST /ContractServiceUnits/query", "POST /Companies/query")}

    contracts = client.contracts(company_id=100)
    assert ids(contracts) == [300] and contracts.complete                        # the pass goes on
    [bad] = contracts.malformed
    assert (bad.record_id, bad.entity, bad.field) == (390, "Contracts", "endDate")
    assert "before startDate" in bad.problem

    with pytest.raises(MalformedRecord) as err:
        client.get("Contracts", 390)
    assert (err.value.record_id, err.value.field) == (390, "endDate")
    assert "Contracts" in str(err.value) and "390" in str(err.value) and "endDate" in str(err.value)

    units = client.service_units(contract_ids=[300], on_date=DAY)
    assert units.all() == [] and [(m.entity, m.field) for m in units.malformed] == [("ContractServiceUnits", "units")]
    companies = client.companies()
    assert ids(companies) == [100, 101, 103]
    assert [(m.record_id, m.field) for m in companies.malformed] == [(190, "companyName")]
    after = {e: malformed_metric(e) - v for e, v in before.items()}
    assert after == {"POST /Contracts/query": 1, "GET /Contracts/{id}": 1,
                     "POST /ContractServiceUnits/query": 1, "POST /Companies/query": 1}


def test_schema_parses_vendor_forms():
    from services.autotask import schemas
    unit = schemas.SCHEMAS["ContractServiceUnits"].load({
        "ID": 1, "contractid": 2, "contractServiceID": 3, "serviceID": 4,
        "startDate": "2026-03-01T00:00:00", "endDate": "2026-03-31T00:00:00.000Z", "units": 5,
        "price": 5.1, "cost": "4.335", "approveAndPostDate": "2026-03-01T10:00:00.123+02:00",
        "userDefinedFields": []})
    assert unit == {"id": 1, "contractID": 2, "contractServiceID": 3, "serviceID": 4,
                    "startDate": dt.date(2026, 3, 1), "endDate": dt.date(2026, 3, 31), "units": 5,
                    "price": Decimal("5.1"), "cost": Decimal("4.335"),
                    "approveAndPostDate": dt.datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=dt.timezone.utc)}
    # a date-only field keeps its calendar date whatever the zone suffix
    assert schemas.parse_date("2026-11-01T00:00:00+02:00") == dt.date(2026, 11, 1)
