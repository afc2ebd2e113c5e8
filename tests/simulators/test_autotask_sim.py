"""Tests for the Autotask PSA REST simulator (simulators/autotask), over real HTTP."""
import threading
import time

import pytest
import requests

from simulators import kit
from simulators.autotask import create_app

API = "/ATServicesRest/V1.0"
TODAY = "2026-03-10"
H = {"ApiIntegrationCode": "INTCODE", "UserName": "api@acme.example", "Secret": "s3cret"}
H_OTHER = {"ApiIntegrationCode": "INTCODE", "UserName": "api@other.example", "Secret": "x"}

SEED = {"databases": [
    {"zone": "webservices5", "ci": 111,
     "credentials": [{"username": "api@acme.example", "secret": "s3cret", "integration_code": "INTCODE"}],
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
          "startDate": "2026-01-15", "endDate": "2027-01-14"}],
     "contract_services": [{"id": 400, "contractID": 302, "serviceID": 201, "units": 8}]},
    {"zone": "webservices2", "ci": 222,
     "credentials": [{"username": "api@other.example", "secret": "x", "integration_code": "INTCODE"}],
     "companies": [{"companyName": "Other Tenant Client"}]},
]}


@pytest.fixture(scope="module")
def server():
    app = create_app()
    srv = kit.serve(app, port=0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield app, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def sim(server):
    app, base = server
    requests.post(base + "/_sim/reset").raise_for_status()
    requests.post(base + "/_sim/config", json={
        "hourly_limit": 10_000, "hourly_window_seconds": 3600, "thread_limit": 3,
        "latency_50_seconds": 0, "latency_75_seconds": 0, "today": TODAY, "max_records": 500,
    }).raise_for_status()
    requests.post(base + "/_sim/seed", json=SEED).raise_for_status()
    return app, base


def q(base, entity, filters, headers=H, **extra):
    return requests.post(f"{base}{API}/{entity}/query", json={"filter": filters, **extra}, headers=headers)


def ids(resp):
    return [item["id"] for item in resp.json()["items"]]


# --- zone discovery and auth ---------------------------------------------------------------

def test_zone_discovery_both_casings_points_back(sim):
    _, base = sim
    for path in ("/atservicesrest/v1.0/ZoneInformation", "/ATServicesRest/V1.0/zoneInformation"):
        r = requests.get(base + path, params={"user": "API@acme.example"})
        assert r.status_code == 200
        body = r.json()
        assert body["url"] == base + "/ATServicesRest/"
        assert body["ci"] == 111 and body["webUrl"] == "https://ww5.autotask.net/"
        assert "zoneName" in body
    # the returned url works for a lower-case call as well
    r = requests.get(body["url"].lower() + "v1.0/companies/100", headers=H)
    assert r.json()["item"]["companyName"] == "Contoso Dental"
    r = requests.get(base + API + "/ZoneInformation", params={"user": "nobody@x.example"})
    assert r.status_code == 404
    assert isinstance(r.json()["errors"], list) and isinstance(r.json()["errors"][0], str)


def test_auth_headers_required_and_data_per_database(sim):
    _, base = sim
    url = f"{base}{API}/Companies/100"
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers={**H, "Secret": "wrong"}).status_code == 401
    assert requests.get(url, headers={**H, "ApiIntegrationCode": "OTHER"}).status_code == 401
    missing = {k: v for k, v in H.items() if k != "UserName"}
    r = requests.get(url, headers=missing)
    assert r.status_code == 401 and isinstance(r.json()["errors"][0], str)
    assert requests.get(url, headers=H).json()["item"]["id"] == 100
    # the other database cannot see Contoso and has its own company
    assert requests.get(url, headers=H_OTHER).json() == {"item": None}
    r = q(base, "Companies", [{"op": "exist", "field": "companyName"}], headers=H_OTHER)
    assert [i["companyName"] for i in r.json()["items"]] == ["Other Tenant Client"]


# --- queries -------------------------------------------------------------------------------

def test_query_operators(sim):
    _, base = sim

    def names(filters):
        r = q(base, "Companies", filters)
        assert r.status_code == 200, r.text
        return sorted(i["companyName"] for i in r.json()["items"])

    assert names([{"op": "eq", "field": "companyname", "value": "contoso dental"}]) == ["Contoso Dental"]
    assert names([{"op": "noteq", "field": "companyType", "value": 1}]) == ["Prospect Partners"]
    assert names([{"op": "gt", "field": "id", "value": 101}]) == ["Northwind Traders", "Prospect Partners"]
    assert names([{"op": "gte", "field": "id", "value": 102}, {"op": "lt", "field": "id", "value": 103}]) \
        == ["Northwind Traders"]
    assert names([{"op": "lte", "field": "ID", "value": 100}]) == ["Contoso Dental"]
    assert names([{"op": "beginsWith", "field": "companyName", "value": "fab"}]) == ["Fabrikam Legal LLC"]
    assert names([{"op": "endsWith", "field": "companyName", "value": "LLC"}]) == ["Fabrikam Legal LLC"]
    assert names([{"op": "contains", "field": "companyName", "value": "wind"}]) == ["Northwind Traders"]
    assert names([{"op": "exist", "field": "webAddress"}]) == ["Contoso Dental"]
    assert len(names([{"op": "notExist", "field": "webAddress"}])) == 3
    assert names([{"op": "in", "field": "id", "value": [100, 103, 999]}]) == ["Contoso Dental", "Prospect Partners"]
    assert names([{"op": "notIn", "field": "id", "value": [100, 101]}]) == ["Northwind Traders", "Prospect Partners"]
    assert names([{"op": "eq", "field": "isActive", "value": False}]) == ["Northwind Traders"]
    nested = [{"op": "or", "items": [
        {"op": "in", "field": "id", "value": [100]},
        {"op": "and", "items": [{"op": "eq", "field": "companyType", "value": 1},
                                {"op": "eq", "field": "isActive", "value": False}]}]}]
    assert names(nested) == ["Contoso Dental", "Northwind Traders"]
    # unknown field / operator / empty filter are refused with the vendor's error shape
    for bad in ([{"op": "eq", "field": "nope", "value": 1}], [{"op": "like", "field": "id", "value": 1}], []):
        r = q(base, "Companies", bad)
        assert r.status_code == 500 and isinstance(r.json()["errors"][0], str)


def test_query_include_fields_get_search_and_item_reads(sim):
    _, base = sim
    r = q(base, "Companies", [{"op": "eq", "field": "id", "value": 100}], IncludeFields=["CompanyName"])
    item = r.json()["items"][0]
    assert {k for k in item if k != "userDefinedFields"} == {"id", "companyName"}
    r = requests.get(f"{base}{API}/Contracts/query", headers=H,
                     params={"search": '{"filter":[{"op":"eq","field":"companyID","value":101}]}'})
    assert sorted(ids(r)) == [301, 302]
    assert r.json()["pageDetails"] == {"count": 2, "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}
    contract = requests.get(f"{base}{API}/Contracts/302", headers=H).json()["item"]
    assert contract["startDate"] == "2026-01-15T00:00:00.000" and contract["contractType"] == 7
    assert contract["companyID"] == 101 and contract["status"] == 1
    # a missing id answers 200 {"item": null}
    r = requests.get(f"{base}{API}/Contracts/999999", headers=H)
    assert r.status_code == 200 and r.json() == {"item": None}


def test_paging_over_four_pages_get_and_post_and_count(sim):
    _, base = sim
    gen = requests.post(base + "/_sim/generate", json={"seed": 7, "companies": 1600, "database": 111}).json()
    assert gen["companies"] == 1600
    filters = [{"op": "eq", "field": "companyType", "value": 1}]
    total = requests.post(f"{base}{API}/Companies/query/count", json={"filter": filters}, headers=H).json()
    assert total == {"queryCount": 1603}  # 1600 generated + 3 seeded customers
    r = requests.get(f"{base}{API}/Companies/query/count", headers=H,
                     params={"search": '{"filter":[{"op":"eq","field":"companyType","value":1}]}'})
    assert r.json() == {"queryCount": 1603}
    for method in ("GET", "POST"):
        r = q(base, "Companies", filters)
        seen, pages = ids(r), 1
        assert r.json()["pageDetails"]["count"] == 500 and r.json()["pageDetails"]["prevPageUrl"] is None
        nxt = r.json()["pageDetails"]["nextPageUrl"]
        while nxt:
            assert nxt.startswith(base + API + "/Companies/query/next")
            r = requests.request(method, nxt, headers=H, json={"filter": filters} if method == "POST" else None)
            assert r.status_code == 200, r.text
            seen += ids(r)
            pages += 1
            nxt = r.json()["pageDetails"]["nextPageUrl"]
        assert pages == 4 and len(seen) == 1603 and len(set(seen)) == 1603 and seen == sorted(seen)
    # prevPageUrl of the last page leads back to the third page
    prev = requests.get(r.json()["pageDetails"]["prevPageUrl"], headers=H)
    assert ids(prev) == seen[1000:1500]
    r = q(base, "Companies", filters, MaxRecords=501)
    assert r.status_code == 500 and "MaxRecords" in r.json()["errors"][0]


# --- writes --------------------------------------------------------------------------------

def test_create_returns_200_item_id_and_put_patch(sim):
    _, base = sim
    r = requests.post(f"{base}{API}/Companies", headers=H,
                      json={"CompanyName": "Woodgrove Bank", "COMPANYTYPE": 1, "webaddress": "woodgrove.example"})
    assert r.status_code == 200 and set(r.json()) == {"itemId"}
    new_id = r.json()["itemId"]
    item = requests.get(f"{base}{API}/Companies/{new_id}", headers=H).json()["item"]
    assert item["companyName"] == "Woodgrove Bank" and item["webAddress"] == "woodgrove.example"
    r = requests.patch(f"{base}{API}/Companies", headers=H, json={"id": new_id, "companyName": "Woodgrove"})
    assert r.json() == {"itemId": new_id}
    item = requests.get(f"{base}{API}/Companies/{new_id}", headers=H).json()["item"]
    assert item["companyName"] == "Woodgrove" and item["webAddress"] == "woodgrove.example"
    requests.put(f"{base}{API}/Companies", headers=H, json={"id": new_id, "companyName": "WG", "companyType": 1})
    item = requests.get(f"{base}{API}/Companies/{new_id}", headers=H).json()["item"]
    assert item["companyName"] == "WG" and item["webAddress"] is None  # PUT replaced it
    # missing required field: 500 with an array of strings
    r = requests.post(f"{base}{API}/Contracts", headers=H, json={"companyID": 100, "contractName": "x"})
    assert r.status_code == 500
    assert all(isinstance(e, str) for e in r.json()["errors"]) and len(r.json()["errors"]) == 3
    # date-only fields keep the calendar date: no zone shift
    r = requests.post(f"{base}{API}/Contracts", headers=H, json={
        "companyID": 100, "contractName": "Zoned", "contractType": 7,
        "startDate": "2026-11-01T00:00:00+02:00", "endDate": "2027-10-31"})
    c = requests.get(f"{base}{API}/Contracts/{r.json()['itemId']}", headers=H).json()["item"]
    assert c["startDate"] == "2026-11-01T00:00:00.000" and c["endDate"] == "2027-10-31T00:00:00.000"


def test_contract_services_write_path_and_read_only_fields(sim):
    _, base = sim
    r = requests.post(f"{base}{API}/ContractServices", headers=H,
                      json={"contractID": 300, "serviceID": 200, "unitPrice": 7.5})
    assert r.status_code == 405 and "Contracts/{id}/Services" in r.json()["errors"][0]
    url = f"{base}{API}/Contracts/300/Services"
    r = requests.post(url, headers=H, json={"serviceID": 200, "unitPrice": 7.5, "unitCost": 5.1,
                                            "invoiceDescription": "M365 Basic"})
    assert r.status_code == 200
    csid = r.json()["itemId"]
    row = requests.get(f"{base}{API}/ContractServices/{csid}", headers=H).json()["item"]
    assert row["contractID"] == 300 and row["serviceID"] == 200 and row["unitPrice"] == 7.5
    assert "units" not in row and "quantity" not in row
    assert requests.post(url, headers=H, json={"serviceID": 200, "unitPrice": 7.5}).status_code == 500  # duplicate
    r = requests.patch(url, headers=H, json={"id": csid, "adjustedPrice": 8.0, "invoiceDescription": "Basic"})
    assert r.status_code == 200 and r.json() == {"itemId": csid}
    r = requests.patch(url, headers=H, json={"id": csid, "unitPrice": 9.0})
    assert r.status_code == 500 and "unitPrice" in r.json()["errors"][0]
    r = requests.patch(url, headers=H, json={"id": csid, "unitCost": 1.0, "serviceID": 201})
    assert r.status_code == 500 and len(r.json()["errors"]) == 2
    # re-sending an unchanged read-only value is tolerated
    assert requests.patch(url, headers=H, json={"id": csid, "unitPrice": 7.5, "adjustedPrice": 8.5}).status_code == 200
    row = requests.get(f"{base}{API}/ContractServices/{csid}", headers=H).json()["item"]
    assert (row["unitPrice"], row["adjustedPrice"], row["invoiceDescription"]) == (7.5, 8.5, "Basic")
    r = q(base, "ContractServices", [{"op": "eq", "field": "contractID", "value": 300}])
    assert ids(r) == [csid]
    assert requests.get(f"{url}/{csid}", headers=H).json()["item"]["id"] == csid
    assert requests.get(f"{base}{API}/Contracts/302/Services/{csid}", headers=H).json() == {"item": None}


def _units(base, csid):
    r = q(base, "ContractServiceUnits", [{"op": "eq", "field": "contractServiceID", "value": csid}])
    assert r.status_code == 200, r.text
    return {i["startDate"][:10]: (i["units"], i["price"], i["endDate"][:10]) for i in r.json()["items"]}


def test_adjustments_units_in_force_per_period(sim):
    _, base = sim
    csid = requests.post(f"{base}{API}/Contracts/300/Services", headers=H,
                         json={"serviceID": 200, "unitPrice": 7.5, "unitCost": 5.1}).json()["itemId"]
    adj = f"{base}{API}/Contracts/300/ServiceAdjustments"
    # new line today, a same-day increase, then a decrease from the next period
    r = requests.post(adj, headers=H, json={"serviceID": 200, "unitChange": 10, "effectiveDate": TODAY})
    assert r.status_code == 200 and isinstance(r.json()["itemId"], int)
    requests.post(adj, headers=H, json={"serviceID": 200, "unitChange": 5, "effectiveDate": TODAY}).raise_for_status()
    requests.post(adj, headers=H, json={"contractServiceID": csid, "unitChange": -3,
                                        "effectiveDate": "2026-04-01T00:00:00.000"}).raise_for_status()
    units = _units(base, csid)
    assert min(units) == "2026-03-01"  # no periods before the line existed
    assert units["2026-03-01"] == (15, 7.5, "2026-03-31")
    assert units["2026-04-01"][0] == 12 and units["2026-05-01"][0] == 12
    assert units["2026-12-01"] == (12, 7.5, "2026-12-31") and len(units) == 10
    # a decrease that would go negative on a later date is refused; nothing changes
    r = requests.post(adj, headers=H, json={"serviceID": 200, "unitChange": -13, "effectiveDate": "2026-03-15"})
    assert r.status_code == 500 and "negative" in r.json()["errors"][0]
    assert _units(base, csid)["2026-04-01"][0] == 12
    # a price change applies from the next period
    requests.patch(f"{base}{API}/Contracts/300/Services", headers=H, json={"id": csid, "adjustedPrice": 8.0})
    units = _units(base, csid)
    assert units["2026-03-01"][1] == 7.5 and units["2026-04-01"][1] == 8.0
    # date filter: the period in force today
    r = q(base, "ContractServiceUnits", [{"op": "eq", "field": "contractID", "value": 300},
                                         {"op": "lte", "field": "startDate", "value": TODAY},
                                         {"op": "gte", "field": "endDate", "value": TODAY}])
    assert [(i["units"], i["serviceID"]) for i in r.json()["items"]] == [(15, 200)]


def test_adjustment_creates_missing_contract_service_and_mid_month_anchor(sim):
    _, base = sim
    r = requests.post(f"{base}{API}/ContractServiceAdjustments", headers=H, json={
        "contractID": 302, "serviceID": 200, "unitChange": 4, "effectiveDate": "2026-02-20",
        "adjustedUnitPrice": 6.5})
    assert r.status_code == 200
    r = q(base, "ContractServices", [{"op": "eq", "field": "contractID", "value": 302},
                                     {"op": "eq", "field": "serviceID", "value": 200}])
    cs = r.json()["items"][0]
    assert cs["unitPrice"] == 6.5 and cs["unitCost"] == 5.1
    units = _units(base, cs["id"])
    # contract 302 starts on the 15th: periods run 15th to 14th
    assert units["2026-02-15"] == (4, 6.5, "2026-03-14")
    seeded = _units(base, 400)
    assert seeded["2026-01-15"][0] == 8 and seeded["2026-12-15"][2] == "2027-01-14"


def test_adjustments_cannot_be_queried(sim):
    _, base = sim
    r = q(base, "ContractServiceAdjustments", [{"op": "gte", "field": "id", "value": 0}])
    assert r.status_code == 405 and isinstance(r.json()["errors"][0], str)
    r = requests.post(f"{base}{API}/ContractServiceAdjustments/query/count", headers=H,
                      json={"filter": [{"op": "gte", "field": "id", "value": 0}]})
    assert r.status_code == 405
    assert requests.get(f"{base}{API}/ContractServiceAdjustments/1", headers=H).status_code == 405


def test_invalid_writes_refused(sim):
    app, base = sim
    adj = f"{base}{API}/ContractServiceAdjustments"

    def refused(url, body, needle):
        r = requests.post(url, headers=H, json=body)
        assert r.status_code == 500, (body, r.text)
        assert needle in " ".join(r.json()["errors"]), r.json()

    ok = {"contractID": 300, "serviceID": 200, "unitChange": 1, "effectiveDate": TODAY}
    refused(adj, {**ok, "contractID": 999}, "999")                                   # unknown contract
    refused(adj, {**ok, "contractID": 301}, "Recurring Service")                     # T&M contract
    refused(f"{base}{API}/Contracts/301/Services", {"serviceID": 200, "unitPrice": 1}, "Recurring Service")
    refused(adj, {k: v for k, v in ok.items() if k != "unitChange"}, "unitChange")   # missing field
    refused(adj, {**ok, "serviceID": 777}, "777")                                    # unknown service
    refused(adj, {**ok, "serviceID": 202}, "inactive")                               # inactive service
    refused(adj, {**ok, "effectiveDate": "2027-06-01"}, "outside")                   # after contract end
    refused(adj, {**ok, "unitChange": -1}, "negative")                               # new line below zero
    requests.post(base + "/_sim/contracts/300/deactivate").raise_for_status()
    refused(adj, ok, "inactive")
    requests.post(base + "/_sim/contracts/300/activate").raise_for_status()
    assert requests.post(adj, headers=H, json=ok).status_code == 200
    assert q(base, "Companies", [{"op": "eq", "field": "id", "value": 100}]).status_code == 200
    # refused writes are not in the write log; the accepted one is, and POSTed queries are not
    writes = requests.get(base + "/_sim/writes").json()
    assert [(w["method"], w["path"], w["status"]) for w in writes] == [
        ("POST", API + "/ContractServiceAdjustments", 200)]


def test_contract_charges(sim):
    _, base = sim
    url = f"{base}{API}/Contracts/300/Charges"
    body = {"name": "Azure plan usage Feb", "unitQuantity": 1, "unitPrice": 123.45, "unitCost": 100.0,
            "datePurchased": "2026-02-28"}
    r = requests.post(url, headers=H, json=body)
    assert r.status_code == 500 and "productID or billingCodeID" in r.json()["errors"][0]
    cid = requests.post(url, headers=H, json={**body, "billingCodeID": 29682801}).json()["itemId"]
    item = requests.get(f"{base}{API}/ContractCharges/{cid}", headers=H).json()["item"]
    assert item["isBilled"] is False and item["datePurchased"] == "2026-02-28T00:00:00.000"
    assert requests.patch(url, headers=H, json={"id": cid, "unitPrice": 120.0}).status_code == 200
    requests.post(f"{base}/_sim/charges/{cid}/bill").raise_for_status()
    r = requests.patch(url, headers=H, json={"id": cid, "unitPrice": 1.0})
    assert r.status_code == 500 and "billed" in r.json()["errors"][0]
    assert requests.delete(f"{url}/{cid}", headers=H).status_code == 500
    cid2 = requests.post(url, headers=H, json={**body, "productID": 5}).json()["itemId"]
    assert requests.delete(f"{url}/{cid2}", headers=H).status_code == 200
    assert requests.get(f"{base}{API}/ContractCharges/{cid2}", headers=H).json() == {"item": None}
    r = q(base, "ContractCharges", [{"op": "eq", "field": "contractID", "value": 300}])
    assert [(i["id"], i["unitPrice"], i["isBilled"]) for i in r.json()["items"]] == [(cid, 120.0, True)]


# --- limits ----------------------------------------------------------------------------------

def test_fourth_concurrent_request_refused(sim):
    app, base = sim
    gate = app.extensions["autotask"].gate
    requests.post(base + "/_sim/faults", json={"kind": "latency", "endpoint": "GET /ATServicesRest/V1.0/Companies/",
                                               "seconds": 1.5}).raise_for_status()
    results = []

    def call():
        results.append(requests.get(f"{base}{API}/Companies/100", headers=H).status_code)
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while gate.in_flight((111, "INTCODE", "Companies")) < 3 and time.time() < deadline:
        time.sleep(0.01)
    r = requests.get(f"{base}{API}/Companies/101", headers=H)
    assert r.status_code == 429
    assert r.json() == {"errors": ["The Autotask API thread threshold of 3 threads has been exceeded"]}
    # another entity endpoint and another database are not affected
    assert requests.get(f"{base}{API}/Contracts/300", headers=H).status_code == 200
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    assert requests.get(f"{base}{API}/Contracts/300", headers=H).status_code == 200


def test_hourly_budget_threshold_information_and_latency(sim):
    _, base = sim
    requests.post(base + "/_sim/config", json={"hourly_limit": 5}).raise_for_status()
    url = f"{base}{API}/Companies/100"
    th = f"{base}{API}/ThresholdInformation"
    assert requests.get(th, headers=H).json() == {
        "externalRequestThreshold": 5, "requestThresholdTimeframe": 60, "currentTimeframeRequestCount": 0}
    for n in range(3):
        assert requests.get(url, headers=H).status_code == 200
    assert requests.get(th, headers=H).json()["currentTimeframeRequestCount"] == 3
    assert requests.get(url, headers=H_OTHER).status_code == 200  # other database: own budget
    assert requests.get(th, headers=H).json()["currentTimeframeRequestCount"] == 3
    for n in range(2):
        assert requests.get(url, headers=H).status_code == 200
    r = requests.get(url, headers=H)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "threshold" in r.json()["errors"][0]
    assert requests.get(th, headers=H).json()["currentTimeframeRequestCount"] == 5
    # a shrunk window clears quickly
    requests.post(base + "/_sim/config", json={"hourly_window_seconds": 0.5}).raise_for_status()
    time.sleep(0.6)
    assert requests.get(url, headers=H).status_code == 200
    # latency from 50% and 75% of the budget
    requests.post(base + "/_sim/reset").raise_for_status()
    requests.post(base + "/_sim/seed", json=SEED).raise_for_status()
    requests.post(base + "/_sim/config", json={"hourly_limit": 4, "hourly_window_seconds": 3600,
                                               "latency_50_seconds": 0.3, "latency_75_seconds": 0.6})
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        requests.get(url, headers=H).raise_for_status()
        took.append(time.monotonic() - t0)
    assert took[0] < 0.25 and 0.3 <= took[1] < 0.55 and took[2] >= 0.6


def test_drop_after_write_applies_the_write(sim):
    _, base = sim
    requests.post(base + "/_sim/faults", json={
        "kind": "drop_after_write", "endpoint": "POST /ATServicesRest/V1.0/Contracts/302/ServiceAdjustments",
        "count": 1}).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{base}/atservicesrest/v1.0/contracts/302/serviceadjustments", headers=H,
                      json={"serviceID": 201, "unitChange": 4, "effectiveDate": TODAY})
    r = q(base, "ContractServiceUnits", [{"op": "eq", "field": "contractServiceID", "value": 400},
                                         {"op": "eq", "field": "startDate", "value": "2026-02-15"}])
    assert [i["units"] for i in r.json()["items"]] == [12]  # 8 seeded + 4 applied before the drop
    writes = requests.get(base + "/_sim/writes").json()
    assert len(writes) == 1 and writes[0]["dropped"] is True
    assert writes[0]["path"] == API + "/Contracts/302/ServiceAdjustments"


# --- admin -------------------------------------------------------------------------------------

def test_generate_is_deterministic_and_realistic(sim):
    _, base = sim

    def run():
        requests.post(base + "/_sim/reset").raise_for_status()
        out = requests.post(base + "/_sim/generate", json={"seed": 42, "companies": 40,
                                                          "lines_per_contract": [1, 3]}).json()
        return out, requests.get(base + "/_sim/state").json()["databases"]
    a, state_a = run()
    b, state_b = run()
    assert a == b and state_a == state_b
    db = state_a[0]
    assert a["companies"] == 40 and a["services"] == 14
    assert all(c["companyType"] == 1 and c["isActive"] for c in db["companies"])
    recurring = [c for c in db["contracts"] if c["contractType"] == 7]
    assert len(recurring) == 40 and len({c["companyID"] for c in recurring}) == 40
    assert any("Microsoft 365" in s["name"] for s in db["services"])
    assert 40 <= len(db["contract_services"]) <= 120
    assert len(db["adjustments"]) == len(db["contract_services"])


def test_fifty_thousand_lines_in_filter_is_fast(sim):
    _, base = sim
    requests.post(base + "/_sim/reset").raise_for_status()
    out = requests.post(base + "/_sim/generate", json={"seed": 1, "companies": 10_000,
                                                      "lines_per_contract": 5}).json()
    assert out["contract_services"] == 50_000
    creds = out["credentials"][0]
    h = {"ApiIntegrationCode": creds["integration_code"], "UserName": creds["username"], "Secret": creds["secret"]}
    contracts = q(base, "Contracts", [{"op": "eq", "field": "contractType", "value": 7}], headers=h)
    cids = ids(contracts)
    assert len(cids) == 500
    t0 = time.monotonic()
    r = q(base, "ContractServices", [{"op": "in", "field": "contractID", "value": cids}], headers=h)
    r2 = q(base, "ContractServiceUnits", [{"op": "in", "field": "contractID", "value": cids},
                                          {"op": "lte", "field": "startDate", "value": TODAY},
                                          {"op": "gte", "field": "endDate", "value": TODAY}], headers=h)
    elapsed = time.monotonic() - t0
    assert r.json()["pageDetails"]["count"] == 500 and r.json()["pageDetails"]["nextPageUrl"]
    assert r2.json()["pageDetails"]["count"] == 500 and all(i["units"] > 0 for i in r2.json()["items"])
    assert elapsed < 1.5
