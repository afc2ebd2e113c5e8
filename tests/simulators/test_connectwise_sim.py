"""ConnectWise simulator over real HTTP (kit.serve in a thread, requests as the client)."""
import base64
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from simulators import kit
from simulators.connectwise import create_app

API = "/v4_6_release/apis/3.0"


@pytest.fixture(scope="module")
def server():
    app = create_app(seed=0)
    srv = kit.serve(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def _auth(company="acme", public="pub", private="priv"):
    token = base64.b64encode(f"{company}+{public}:{private}".encode()).decode()
    return f"Basic {token}"


SEED = {"companies_sets": [
    {"company_id": "acme", "name": "Acme MSP",
     "credentials": [{"public_key": "pub", "private_key": "priv", "client_id": "cid-1"},
                     {"public_key": "ro", "private_key": "ro-priv", "read_only": True}],
     "companies": [
         {"id": 250, "identifier": "ACME", "name": "Acme Corp", "website": "acme.example"},
         {"id": 251, "identifier": "BLUE", "name": "Bluewater Dental"},
         {"id": 252, "identifier": "BLUE2", "name": "Bluewater Legal", "status": {"id": 2}},
         {"id": 253, "identifier": "CEDAR", "name": "Cedar Logistics"},
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
         {"id": 4, "agreementId": 1003, "product": {"id": 101}, "quantity": 7,
          "billCustomer": "Billable", "effectiveDate": "2025-06-15T00:00:00Z"},
     ]},
    {"company_id": "other", "credentials": [{"public_key": "opub", "private_key": "opriv"}],
     "companies": [{"identifier": "ZED", "name": "Zed Only"}]},
]}


@pytest.fixture()
def cw(server):
    """A fresh, seeded simulator plus a requests session authenticated as tenant acme."""
    requests.post(server + "/_sim/reset").raise_for_status()
    resp = requests.post(server + "/_sim/seed", json=SEED)
    assert resp.status_code == 200, resp.text
    s = requests.Session()
    s.headers.update({"Authorization": _auth(), "clientId": "cid-1"})
    s.base = server
    s.api = server + API
    return s


def ids(resp):
    assert resp.status_code == 200, resp.text
    return [r["id"] for r in resp.json()]


def links(resp):
    """Link header -> {rel: url}."""
    out = {}
    for part in filter(None, (resp.headers.get("Link") or "").split(", <")):
        url, rel = part.split(">; rel=")
        out[rel.strip('"')] = url.lstrip("<")
    return out


# --- discovery and auth ------------------------------------------------------------------------

def test_companyinfo(cw):
    r = requests.get(cw.base + "/login/companyinfo/ACME")  # no auth; id case-insensitive
    assert r.status_code == 200
    body = r.json()
    assert body["Codebase"] == "v4_6_release/"
    assert body["CompanyID"] == "acme" and body["CompanyName"] == "Acme MSP"
    assert body["IsCloud"] is True and body["SiteUrl"].startswith("127.0.0.1:")
    assert {"VersionCode", "VersionNumber"} <= set(body)
    assert requests.get(cw.base + "/login/companyinfo/nobody").status_code == 404


def test_auth_good_bad_and_missing_client_id(cw):
    assert cw.get(cw.api + "/company/companies").status_code == 200
    bad = requests.get(cw.api + "/company/companies",
                       headers={"Authorization": _auth(private="wrong"), "clientId": "cid-1"})
    assert bad.status_code == 401
    assert bad.json()["code"] == "Unauthorized"
    no_auth = requests.get(cw.api + "/company/companies", headers={"clientId": "cid-1"})
    assert no_auth.status_code == 401
    unknown_company = requests.get(cw.api + "/company/companies",
                                   headers={"Authorization": _auth(company="ghost"), "clientId": "x"})
    assert unknown_company.status_code == 401
    missing = requests.get(cw.api + "/company/companies", headers={"Authorization": _auth()})
    assert missing.status_code == 401 and "clientId" in missing.json()["message"]
    wrong_client = cw.get(cw.api + "/company/companies", headers={"clientId": "other-client"})
    assert wrong_client.status_code == 401
    # configurable like the vendor's odd cases
    requests.post(cw.base + "/_sim/config",
                  json={"auth_failure_status": 404, "missing_client_id_status": 400}).raise_for_status()
    bad = requests.get(cw.api + "/company/companies",
                       headers={"Authorization": _auth(private="wrong"), "clientId": "cid-1"})
    assert bad.status_code == 404 and bad.json()["code"] == "NotFound"
    missing = requests.get(cw.api + "/company/companies", headers={"Authorization": _auth()})
    assert missing.status_code == 400


def test_tenants_are_isolated(cw):
    other = {"Authorization": _auth("other", "opub", "opriv"), "clientId": "any-client"}
    names = [c["name"] for c in requests.get(cw.api + "/company/companies", headers=other).json()]
    assert names == ["Zed Only"]
    assert [c["identifier"] for c in cw.get(cw.api + "/company/companies").json()] == [
        "ACME", "BLUE", "BLUE2", "CEDAR"]
    # acme's credentials do not open the other tenant
    r = requests.get(cw.api + "/company/companies",
                     headers={"Authorization": _auth("other", "pub", "priv"), "clientId": "cid-1"})
    assert r.status_code == 401


# --- conditions --------------------------------------------------------------------------------

@pytest.mark.parametrize("cond, expected", [
    ('identifier="acme"', [250]),                       # strings compare case-insensitively
    ('name != "Acme Corp"', [251, 252, 253]),
    ("id < 252", [250, 251]),
    ("id <= 252", [250, 251, 252]),
    ("id > 252", [253]),
    ("id >= 252", [252, 253]),
    ('name like "Blue*"', [251, 252]),
    ('name like "*logistics"', [253]),
    ('name not like "Blue*"', [250, 253]),
    ('name contains "water"', [251, 252]),
    ('name not contains "water"', [250, 253]),
    ("id in (250, 253, 999)", [250, 253]),
    ("id not in (250,253)", [251, 252]),
    ('identifier in ("BLUE", "cedar")', [251, 253]),
    ("status/id = 2", [252]),
    ('status/name="Active" and name like "Blue*"', [251]),
    ("website = null", [251, 252, 253]),
    ("website != null", [250]),
    ('website != "acme.example"', []),                  # SQL: null never compares true
    ('name like "%water%"', [251, 252]),                # % works like * (SQL LIKE)
    ('name like "Blue*" or id = 250 and identifier = "CEDAR"', [251, 252]),   # and binds tighter
    ('(name like "Blue*" or id = 250) and identifier != "BLUE2"', [250, 251]),
    ('((id=250)) OR (id=253 AND name contains "Cedar")', [250, 253]),
    ("lastUpdated > [2024-12-31T00:00:00Z]", [250, 251, 252, 253]),
])
def test_conditions_on_companies(cw, cond, expected):
    r = cw.get(cw.api + "/company/companies", params={"conditions": cond})
    assert ids(r) == expected


@pytest.mark.parametrize("cond, expected", [
    ("company/id=250", [1000, 1001]),
    ('company/identifier="ACME" and agreementStatus="Active"', [1000]),
    ("cancelledFlag=True", [1001]),
    ("cancelledFlag = false", [1000, 1002, 1003]),
    ("startDate >= [2025-01-01T00:00:00Z]", [1002, 1003]),
    ("startDate < [2024-01-01T00:00:00Z]", [1001]),
    ('startDate > [2025-03-01T00:00:00Z] or (endDate != null and agreementStatus = "Cancelled")',
     [1001, 1003]),
    ('agreementStatus in ("Inactive", "Cancelled")', [1001, 1002]),
    ('type/name = "Microsoft 365"', [1000]),
])
def test_conditions_on_agreements(cw, cond, expected):
    assert ids(cw.get(cw.api + "/finance/agreements", params={"conditions": cond})) == expected


@pytest.mark.parametrize("cond, expected", [
    ('product/identifier="M365-BB"', [1, 3]),
    ("product/id in (101)", [2]),
    ("cancelledDate = null", [1, 3]),
    ("cancelledDate != null", [2]),
    ("effectiveDate > [2024-03-01T00:00:00Z] and quantity >= 1", [2]),
    ("quantity > 2.5 and quantity < 11", [1, 2]),
    ('billCustomer = "NoCharge" or agreementId = 1000 and quantity = 10', [1, 3]),
    ("agreementId in (1000, 1003)", [1, 2, 3]),
])
def test_conditions_on_additions(cw, cond, expected):
    r = cw.get(cw.api + "/finance/agreements/1000/additions", params={"conditions": cond})
    assert ids(r) == expected


@pytest.mark.parametrize("cond", [
    'name="Acme',                 # unterminated string
    "name=",                      # missing value
    "(id=250",                    # unbalanced parenthesis
    "id=250)",
    "id=250 and",
    "id 250",                     # missing operator
    "nosuchfield=1",              # unknown field
    'id="abc"',                   # not a number
    "name like 5",                # like needs a string
    "status=1",                   # reference compared directly
    "startDate > [not-a-date]",
    "name='single quotes'",
    "id in 250",
])
def test_bad_conditions_are_400_with_error_body(cw, cond):
    r = cw.get(cw.api + "/company/companies", params={"conditions": cond})
    assert r.status_code == 400, cond
    body = r.json()
    assert body["code"] == "InvalidObject" and body["message"]
    assert body["errors"][0]["field"] == "conditions"


def test_child_conditions_are_accepted_but_checked_for_syntax(cw):
    r = cw.get(cw.api + "/company/companies", params={"childConditions": 'types/id=1'})
    assert ids(r) == [250, 251, 252, 253]
    assert cw.get(cw.api + "/company/companies", params={"childConditions": "x=("}).status_code == 400


# --- paging, fields, orderBy -----------------------------------------------------------------------

@pytest.fixture()
def big(cw):
    r = requests.post(cw.base + "/_sim/generate", json={
        "seed": 7, "companies": 230, "company_id": "big", "additions": 2300,
        "credentials": [{"public_key": "bp", "private_key": "bk"}]})
    assert r.status_code == 200, r.text
    s = requests.Session()
    s.headers.update({"Authorization": _auth("big", "bp", "bk"), "clientId": "c"})
    s.api = cw.api
    s.base = cw.base
    return s


def test_navigable_paging_follows_link_headers(big):
    r = big.get(big.api + "/company/companies", params={"pageSize": 50, "conditions": "id > 0"})
    first_links = links(r)
    assert set(first_links) == {"next", "last"}           # no first/prev on page 1
    assert first_links["next"].startswith("http://127.0.0.1:")  # absolute
    assert parse_qs(urlparse(first_links["last"]).query)["page"] == ["5"]
    assert parse_qs(urlparse(first_links["next"]).query)["conditions"] == ["id > 0"]
    seen, pages = ids(r), 1
    while "next" in links(r):
        r = big.get(links(r)["next"])
        seen += ids(r)
        pages += 1
        if pages == 3:
            assert set(links(r)) == {"first", "prev", "next", "last"}
    assert pages == 5
    assert set(links(r)) == {"first", "prev"}             # next omitted on the last page
    assert len(r.json()) == 30
    assert seen == sorted(seen) and len(set(seen)) == 230
    assert len(big.get(big.api + "/company/companies").json()) == 25   # default pageSize


def test_page_size_is_clamped_to_1000(big):
    requests.post(big.base + "/_sim/generate", json={
        "seed": 1, "companies": 1, "additions": 1200, "company_id": "big",
        "credentials": [{"public_key": "bp", "private_key": "bk"}]}).raise_for_status()
    agreement = big.get(big.api + "/finance/agreements",
                        params={"conditions": 'agreementStatus="Active"'}).json()[0]["id"]
    url = f"{big.api}/finance/agreements/{agreement}/additions"
    r = big.get(url, params={"pageSize": 5000})
    assert len(r.json()) == 1000
    assert parse_qs(urlparse(links(r)["last"]).query)["page"] == ["2"]
    requests.post(big.base + "/_sim/config", json={"page_size_over_max": "error"})
    assert big.get(url, params={"pageSize": 5000}).status_code == 400


def test_forward_only_paging(big):
    hdr = {"pagination-type": "forward-only"}
    r = big.get(big.api + "/company/companies", params={"pageSize": 70}, headers=hdr)
    seen, pages = ids(r), 1
    while "next" in links(r):
        nxt = links(r)["next"]
        assert set(links(r)) == {"next"}
        assert parse_qs(urlparse(nxt).query)["pageId"] == [str(seen[-1])]
        r = big.get(nxt, headers=hdr)
        seen += ids(r)
        pages += 1
    assert pages == 4 and len(seen) == 230 and seen == sorted(seen)
    assert r.headers["pagination-type"] == "forward-only"
    # pageId acts like "id > pageId"
    r = big.get(big.api + "/company/companies", params={"pageSize": 5, "pageId": seen[10]}, headers=hdr)
    assert ids(r) == seen[11:16]
    bad = big.get(big.api + "/company/companies", params={"orderBy": "name asc"}, headers=hdr)
    assert bad.status_code == 400


def test_fields_projection(cw):
    r = cw.get(cw.api + "/finance/agreements", params={
        "fields": "id,company/identifier,agreementStatus,noSuchField", "conditions": "id=1000"})
    assert r.json() == [{"id": 1000, "company": {"identifier": "ACME"}, "agreementStatus": "Active"}]
    one = cw.get(cw.api + "/finance/agreements/1000/additions/1", params={"fields": "id,quantity"})
    assert one.json() == {"id": 1, "quantity": 10}


def test_order_by(cw):
    assert ids(cw.get(cw.api + "/company/companies", params={"orderBy": "name desc"})) == [
        253, 252, 251, 250]
    r = cw.get(cw.api + "/finance/agreements", params={"orderBy": "company/name asc, id desc"})
    assert ids(r) == [1001, 1000, 1002, 1003]
    r = cw.get(cw.api + "/finance/agreements/1000/additions", params={"orderBy": "quantity"})
    assert ids(r) == [3, 2, 1]
    assert cw.get(cw.api + "/company/companies", params={"orderBy": "bogus asc"}).status_code == 400
    assert cw.get(cw.api + "/company/companies", params={"orderBy": "name sideways"}).status_code == 400


def test_counts(cw):
    assert cw.get(cw.api + "/company/companies/count").json() == {"count": 4}
    r = cw.get(cw.api + "/company/companies/count", params={"conditions": 'name like "Blue*"'})
    assert r.json() == {"count": 2}
    assert cw.get(cw.api + "/finance/agreements/count",
                  params={"conditions": "cancelledFlag=false"}).json() == {"count": 3}
    assert cw.get(cw.api + "/finance/agreements/1000/additions/count").json() == {"count": 3}
    assert cw.get(cw.api + "/finance/agreements/1000/additions/count",
                  params={"conditions": "cancelledDate != null"}).json() == {"count": 1}
    assert cw.get(cw.api + "/procurement/catalog/count",
                  params={"conditions": "inactiveFlag=False"}).json() == {"count": 2}
    missing = cw.get(cw.api + "/finance/agreements/9999/additions/count")
    assert missing.status_code == 404 and missing.json()["code"] == "NotFound"


# --- writes --------------------------------------------------------------------------------------

def test_post_addition_returns_201_with_full_record(cw):
    r = cw.post(cw.api + "/finance/agreements/1000/additions", json={
        "product": {"identifier": "m365-bp"}, "quantity": 12, "billCustomer": "Billable",
        "effectiveDate": "2026-02-10T00:00:00Z", "unitCost": 18.0})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["id"] == 5 and rec["agreementId"] == 1000
    assert rec["product"] == {"id": 101, "identifier": "M365-BP"}
    assert rec["quantity"] == 12 and rec["effectiveDate"] == "2026-02-10T00:00:00Z"
    assert rec["unitPrice"] == 22.0 and rec["unitCost"] == 18.0     # price from the catalog
    assert rec["extPrice"] == 264.0 and rec["extCost"] == 216.0
    assert rec["cancelledDate"] is None and rec["description"] == "Microsoft 365 Business Premium"
    assert rec["_info"]["lastUpdated"]
    assert cw.get(cw.api + "/finance/agreements/1000/additions/5").json() == rec


def test_patch_json_patch(cw):
    url = cw.api + "/finance/agreements/1000/additions/1"
    before = cw.get(url).json()
    r = cw.patch(url, json=[{"op": "replace", "path": "quantity", "value": 5},
                            {"op": "add", "path": "/cancelledDate", "value": "2026-03-01"},
                            {"op": "remove", "path": "invoiceDescription"}])
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["quantity"] == 5 and rec["extPrice"] == 30.0
    assert rec["cancelledDate"] == "2026-03-01T00:00:00Z"
    assert rec["invoiceDescription"] is None
    assert rec["effectiveDate"] == before["effectiveDate"]        # untouched fields are kept
    assert rec["_info"]["dateEntered"] == before["_info"]["dateEntered"]
    # a reference is replaced whole, re-resolved from what was given
    r = cw.patch(url, json=[{"op": "replace", "path": "product", "value": {"identifier": "M365-BP"}}])
    assert r.json()["product"] == {"id": 101, "identifier": "M365-BP"}
    r = cw.patch(url, json=[{"op": "replace", "path": "product/id", "value": 100}])
    assert r.json()["product"] == {"id": 100, "identifier": "M365-BB"}
    assert cw.get(url).json()["quantity"] == 5


@pytest.mark.parametrize("ops, field", [
    ([{"op": "replace", "path": "Quantity", "value": 5}], "Quantity"),       # case-sensitive
    ([{"op": "replace", "path": "nope", "value": 5}], "nope"),
    ([{"op": "replace", "path": "id", "value": 5}], "id"),
    ([{"op": "replace", "path": "extPrice", "value": 5}], "extPrice"),
    ([{"op": "move", "path": "quantity", "value": 5}], "quantity"),
    ([{"op": "replace", "path": "quantity", "value": -1}], "quantity"),
    ([{"op": "replace", "path": "quantity", "value": "five"}], "quantity"),
    ([{"op": "remove", "path": "billCustomer"}], "billCustomer"),
    ([{"op": "replace", "path": "product", "value": {"id": 999}}], "product"),
])
def test_patch_refused(cw, ops, field):
    url = cw.api + "/finance/agreements/1000/additions/1"
    r = cw.patch(url, json=ops)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "InvalidObject"
    assert body["errors"][0]["field"] == field and body["errors"][0]["resource"] == "addition"
    assert cw.get(url).json()["quantity"] == 10                   # nothing was changed


def test_put_replaces_all_and_delete_204(cw):
    url = cw.api + "/finance/agreements/1000/additions/1"
    r = cw.put(url, json={"product": {"id": 101}, "quantity": 2, "billCustomer": "DoNotBill",
                          "unitPrice": 20, "effectiveDate": "2024-01-01T00:00:00Z"})
    assert r.status_code == 200
    rec = r.json()
    assert rec["id"] == 1 and rec["billCustomer"] == "DoNotBill" and rec["unitCost"] is None
    assert rec["invoiceDescription"] is None and rec["extPrice"] == 40
    r = cw.delete(url)
    assert r.status_code == 204 and r.content == b""
    gone = cw.get(url)
    assert gone.status_code == 404
    assert gone.json() == {"code": "NotFound", "message": "addition recId 1 not found."}
    assert cw.get(cw.api + "/finance/agreements/1000/additions/count").json() == {"count": 2}


def test_cancelled_addition_stays_readable(cw):
    url = cw.api + "/finance/agreements/1000/additions/2"
    rec = cw.get(url).json()
    assert rec["cancelledDate"] == "2025-01-01T00:00:00Z" and rec["quantity"] == 3
    assert rec["effectiveDate"] == "2024-06-01T00:00:00Z"
    assert 2 in ids(cw.get(cw.api + "/finance/agreements/1000/additions"))


@pytest.mark.parametrize("agreement, body, field, code", [
    (1001, {"product": {"id": 100}, "billCustomer": "Billable"}, "agreementId", "AgreementNotActive"),
    (1002, {"product": {"id": 100}, "billCustomer": "Billable"}, "agreementId", "AgreementNotActive"),
    (1000, {"product": {"identifier": "NOPE"}, "billCustomer": "Billable"}, "product", "NotFound"),
    (1000, {"product": {"id": 102}, "billCustomer": "Billable"}, "product", "InvalidField"),
    (1000, {"product": {"id": 100}, "quantity": 2}, "billCustomer", "Required"),
    (1000, {"product": {"id": 100}, "billCustomer": "Sometimes"}, "billCustomer", "InvalidField"),
    (1000, {"product": {"id": 100}, "billCustomer": "Billable", "quantity": -3}, "quantity",
     "InvalidField"),
    (1000, {"billCustomer": "Billable"}, "product", "Required"),
    (1000, {"product": {"id": 100}, "billCustomer": "Billable", "effectiveDate": "soon"},
     "effectiveDate", "InvalidField"),
])
def test_invalid_additions_refused(cw, agreement, body, field, code):
    r = cw.post(f"{cw.api}/finance/agreements/{agreement}/additions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == "InvalidObject" and err["message"]
    assert {"code": code, "field": field, "resource": "addition"}.items() <= err["errors"][0].items()
    assert err["errors"][0]["message"]
    assert cw.get(cw.api + "/finance/agreements/1000/additions/count").json() == {"count": 3}


def test_other_error_statuses_have_vendor_shape(cw):
    dup = cw.post(cw.api + "/company/companies", json={"identifier": "acme", "name": "Again"})
    assert dup.status_code == 400
    assert dup.json()["errors"][0]["code"] == "ObjectExists"
    created = cw.post(cw.api + "/company/companies", json={"identifier": "NEW", "name": "New Co"})
    assert created.status_code == 201 and created.json()["status"] == {"id": 1, "name": "Active"}
    r = cw.post(cw.api + "/finance/agreements/1000/additions", data="quantity=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["code"] == "UnsupportedMediaType"
    r = cw.post(cw.api + "/finance/agreements/1000/additions", data="{not json",
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidObject"
    r = cw.delete(cw.api + "/company/companies")
    assert r.status_code == 405 and r.json()["code"] == "MethodNotAllowed"
    r = cw.post(cw.api + "/finance/agreements/9999/additions",
                json={"product": {"id": 100}, "billCustomer": "Billable"})
    assert r.status_code == 404 and r.json()["code"] == "NotFound"
    ro = requests.patch(cw.api + "/finance/agreements/1000/additions/1",
                        json=[{"op": "replace", "path": "quantity", "value": 1}],
                        headers={"Authorization": _auth(public="ro", private="ro-priv"),
                                 "clientId": "x"})
    assert ro.status_code == 403 and ro.json()["code"] == "Forbidden"
    requests.post(cw.base + "/_sim/faults", json={
        "kind": "status", "status": 500, "endpoint": "^GET .*/company/companies$", "count": 1})
    r = cw.get(cw.api + "/company/companies")
    assert r.status_code == 500 and set(r.json()) == {"code", "message"}
    assert cw.get(cw.api + "/company/companies").status_code == 200


# --- throttle and faults ----------------------------------------------------------------------------

def test_throttle_429_with_retry_after(cw):
    requests.post(cw.base + "/_sim/config", json={"rate_limit_per_minute": 5}).raise_for_status()
    for _ in range(5):
        assert cw.get(cw.api + "/company/companies/count").status_code == 200
    r = cw.get(cw.api + "/company/companies/count")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    body = r.json()
    assert body["error"] == "ConnectWiseAPI"
    assert body["message"].startswith("Too many requests. Please try again in ")
    # the budget is per company id
    other = {"Authorization": _auth("other", "opub", "opriv"), "clientId": "c"}
    assert requests.get(cw.api + "/company/companies", headers=other).status_code == 200
    # the window can be shortened to watch it refill
    requests.post(cw.base + "/_sim/config", json={"rate_window_seconds": 0.5})
    time.sleep(0.6)
    assert cw.get(cw.api + "/company/companies/count").status_code == 200


def test_drop_after_write_applies_the_write(cw):
    requests.post(cw.base + "/_sim/faults", json={
        "kind": "drop_after_write", "endpoint": r"^POST .*/additions$", "count": 1}).raise_for_status()
    with pytest.raises(requests.exceptions.ConnectionError):
        cw.post(cw.api + "/finance/agreements/1003/additions", json={
            "product": {"id": 100}, "quantity": 4, "billCustomer": "Billable"})
    lines = cw.get(cw.api + "/finance/agreements/1003/additions",
                   params={"conditions": "product/id=100"}).json()
    assert [(a["quantity"], a["billCustomer"]) for a in lines] == [(4, "Billable")]
    writes = requests.get(cw.base + "/_sim/writes").json()
    assert writes[-1]["dropped"] is True and writes[-1]["status"] == 201
    assert writes[-1]["tenant"] == "acme"   # agreement ids of two companies may be alike: whose write


# --- admin ---------------------------------------------------------------------------------------

def test_generate_is_deterministic_and_realistic(cw):
    def dump(seed):
        requests.post(cw.base + "/_sim/generate",
                      json={"seed": seed, "companies": 40, "company_id": "gen"}).raise_for_status()
        return requests.get(cw.base + "/_sim/state",
                            params={"full": 1, "company_id": "gen"}).json()["tenants"][0]
    a, b, c = dump(3), dump(3), dump(4)
    assert a == b and a != c
    assert len(a["company"]) == 40
    active = [g for g in a["agreement"] if g["agreementStatus"] == "Active"]
    assert sorted(g["company"]["id"] for g in active) == sorted(x["id"] for x in a["company"])
    assert any("Microsoft 365" in p["description"] for p in a["catalog"])
    assert all(x["billCustomer"] in ("Billable", "DoNotBill") for x in a["addition"])


def test_state_and_reset(cw):
    state = requests.get(cw.base + "/_sim/state").json()
    acme = next(t for t in state["tenants"] if t["company_id"] == "acme")
    assert acme["addition_count"] == 4 and acme["company_count"] == 4
    assert state["config"]["rate_limit_per_minute"] == 1000
    requests.post(cw.base + "/_sim/reset").raise_for_status()
    assert requests.get(cw.base + "/_sim/state").json()["tenants"] == []
    assert cw.get(cw.api + "/company/companies").status_code == 401


def test_seed_rejects_bad_documents(cw):
    r = requests.post(cw.base + "/_sim/seed", json={"companies_sets": [{"name": "no id"}]})
    assert r.status_code == 400
    r = requests.post(cw.base + "/_sim/seed", json={"companies_sets": [
        {"company_id": "x", "additions": [{"agreementId": 5, "product": {"id": 1},
                                           "billCustomer": "Billable"}]}]})
    assert r.status_code == 400


def test_50k_additions_fast_paging_and_filtering(cw):
    t0 = time.monotonic()
    r = requests.post(cw.base + "/_sim/generate", json={
        "seed": 11, "companies": 500, "additions": 50000, "company_id": "perf",
        "credentials": [{"public_key": "p", "private_key": "k"}]})
    assert r.json()["addition_count"] == 50000
    gen_seconds = time.monotonic() - t0
    s = requests.Session()
    s.headers.update({"Authorization": _auth("perf", "p", "k"), "clientId": "c"})
    agreements = s.get(cw.api + "/finance/agreements", params={
        "conditions": 'agreementStatus="Active"', "pageSize": 1000, "fields": "id"}).json()
    assert len(agreements) == 500
    t0 = time.monotonic()
    total = 0
    for agr in agreements[:100]:
        r = s.get(f"{cw.api}/finance/agreements/{agr['id']}/additions", params={
            "conditions": 'cancelledDate = null and product/identifier like "CFQ7*"',
            "pageSize": 1000})
        assert r.status_code == 200
        total += len(r.json())
    read_seconds = time.monotonic() - t0
    assert 0 < total <= 10000
    assert gen_seconds < 15 and read_seconds < 10, (gen_seconds, read_seconds)
