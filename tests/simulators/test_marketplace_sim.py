"""Tests for the Ingram Micro Cloud Marketplace simulator (simulators/marketplace)."""
import re
import threading
import time

import pytest
import requests

from simulators import kit
from simulators.marketplace import create_app

CRED = {"user": "api-user", "password": "s3cret", "subscription_key": "sub-key-1", "marketplace": "us"}
ERROR_KEYS = {"timeStamp", "timestamp", "status", "error", "message", "path", "correlationId"}
SUMMARY_KEYS = ["id", "customerId", "status", "renewalStatus", "creationDate", "renewalDate", "lastModifiedDate"]


class Sim:
    """Admin + vendor client for one running simulator."""

    def __init__(self, base):
        self.base = base
        self.api = base + "/marketplace/na"
        self.token = None

    def admin(self, method, path, **kw):
        resp = requests.request(method, self.base + path, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp.json()

    def get_token(self, user=CRED["user"], password=CRED["password"], key=CRED["subscription_key"],
                  marketplace="us"):
        return requests.post(self.api + "/token", auth=(user, password),
                             headers={"X-Subscription-Key": key}, json={"marketplace": marketplace})

    def login(self):
        resp = self.get_token()
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["token"]
        return self.token

    def get(self, path, token=None, key=CRED["subscription_key"], **params):
        headers = {"Authorization": f"Bearer {token or self.token}", "X-Subscription-Key": key}
        return requests.get(self.api + path, headers=headers, params=params, timeout=10)

    def page_all(self, path, limit, **params):
        items, offset, pages = [], 0, 0
        while True:
            resp = self.get(path, offset=offset, limit=limit, **params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            items.extend(body["data"])
            pages += 1
            offset += limit
            if offset >= body["pagination"]["total"]:
                return items, body["pagination"]["total"], pages


@pytest.fixture()
def sim():
    app = create_app(seed=0)
    server = kit.serve(app, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    s = Sim(f"http://127.0.0.1:{server.server_port}")
    s.admin("POST", "/_sim/seed", json={"credentials": [CRED]})
    yield s
    server.shutdown()
    server.server_close()


def seed_small(sim, subs=25):
    """Two customers; subscription i created on day i of 2026 (higher i = newer)."""
    doc = {
        "customers": [{"id": "1000001", "name": "Contoso Dental LLC", "externalId": "C1"},
                      {"id": "1000002", "name": "Fabrikam Legal"}],
        "products": [{"id": "3000001", "mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "name": "Microsoft 365 Business Premium",
                      "unitPrice": "22.00", "unitCost": "18.70"},
                     {"id": "3000002", "mpn": "CFQ7TTC0LH18:0001:P1Y:M", "name": "Microsoft 365 Business Basic",
                      "unitPrice": "6.00"}],
        "subscriptions": [
            {"id": str(5000001 + i), "customerId": "1000001" if i % 2 == 0 else "1000002",
             "status": "hold" if i % 5 == 4 else "active",
             "creationDate": f"2026-01-{i + 1:02d}T10:00:00Z",
             "lines": [{"mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "quantity": i + 1}]
             + ([{"mpn": "CFQ7TTC0LH18:0001:P1Y:M", "quantity": 3, "unitPrice": "5.50"}] if i % 3 == 0 else [])}
            for i in range(subs)],
    }
    return sim.admin("POST", "/_sim/seed", json=doc)


def assert_error(resp, status):
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    assert body["timeStamp"] == body["timestamp"]
    assert body["path"] == requests.utils.urlparse(resp.url).path
    assert body["message"]
    return body


# --- auth -------------------------------------------------------------------------------
def test_token_ok_and_used_for_calls(sim):
    seed_small(sim)
    token = sim.login()
    assert isinstance(token, str) and len(token) >= 20
    resp = sim.get("/customers")
    assert resp.status_code == 200
    assert [c["name"] for c in resp.json()["data"]] == ["Fabrikam Legal", "Contoso Dental LLC"]
    # any region code is accepted
    assert requests.get(sim.base + "/marketplace/eu/customers", headers={
        "Authorization": f"Bearer {token}", "X-Subscription-Key": CRED["subscription_key"]}).status_code == 200


@pytest.mark.parametrize("kwargs", [{"password": "wrong"}, {"user": "nobody"}, {"key": "other-key"},
                                    {"marketplace": "eu"}])
def test_token_bad_credentials_401(sim, kwargs):
    body = assert_error(sim.get_token(**kwargs), 401)
    assert body["error"] == "Unauthorized"


def test_token_without_basic_auth_401(sim):
    resp = requests.post(sim.api + "/token", headers={"X-Subscription-Key": CRED["subscription_key"]},
                         json={"marketplace": "us"})
    assert_error(resp, 401)


def test_calls_need_bearer_and_subscription_key(sim):
    sim.login()
    assert_error(requests.get(sim.api + "/subscriptions"), 401)
    assert_error(sim.get("/subscriptions", token="not-a-token"), 401)
    assert_error(sim.get("/subscriptions", key=""), 401)
    assert_error(sim.get("/subscriptions", key="other-key"), 401)
    assert sim.get("/subscriptions").status_code == 200


def test_token_expires(sim):
    sim.admin("POST", "/_sim/config", json={"token_ttl_seconds": 0.6})
    old = sim.login()
    assert sim.get("/subscriptions").status_code == 200
    time.sleep(0.8)
    body = assert_error(sim.get("/subscriptions", token=old), 401)
    assert "expired" in body["message"]
    sim.login()
    assert sim.get("/subscriptions").status_code == 200


# --- lists, paging, filters, detail -----------------------------------------------------
def test_paging_newest_first_across_pages(sim):
    seed_small(sim, subs=25)
    sim.login()
    items, total, pages = sim.page_all("/subscriptions", limit=7)
    assert total == 25 and pages == 4
    assert [s["id"] for s in items] == [str(5000001 + i) for i in reversed(range(25))]
    assert all(list(s) == SUMMARY_KEYS for s in items)
    first = sim.get("/subscriptions", offset=21, limit=7).json()
    assert first["pagination"] == {"offset": 21, "limit": 7, "total": 25}
    assert [s["id"] for s in first["data"]] == ["5000004", "5000003", "5000002", "5000001"]
    # default limit is 10
    assert sim.get("/subscriptions").json()["pagination"] == {"offset": 0, "limit": 10, "total": 25}


def test_limit_is_clamped_to_max(sim):
    seed_small(sim, subs=25)
    sim.login()
    body = sim.get("/subscriptions", limit=1000).json()
    assert body["pagination"]["limit"] == 100 and len(body["data"]) == 25
    sim.admin("POST", "/_sim/config", json={"max_limit": 10})
    sim.login()
    body = sim.get("/subscriptions", limit=50).json()
    assert body["pagination"] == {"offset": 0, "limit": 10, "total": 25}
    assert len(body["data"]) == 10
    assert_error(sim.get("/subscriptions", limit="abc"), 400)


def test_filters(sim):
    seed_small(sim, subs=25)
    sim.login()
    by_cust = sim.get("/subscriptions", customerId="1000002", limit=100).json()
    assert by_cust["pagination"]["total"] == 12
    assert {s["customerId"] for s in by_cust["data"]} == {"1000002"}
    assert by_cust["data"][0]["id"] == "5000024"  # still newest first
    hold = sim.get("/subscriptions", status="hold", limit=100).json()
    assert [s["id"] for s in hold["data"]] == ["5000025", "5000020", "5000015", "5000010", "5000005"]
    both = sim.get("/subscriptions", status="hold,active", limit=100).json()
    assert both["pagination"]["total"] == 25
    # date-only bounds: whole days, inclusive
    dated = sim.get("/subscriptions", creationDateFrom="2026-01-03", creationDateTo="2026-01-05").json()
    assert [s["id"] for s in dated["data"]] == ["5000005", "5000004", "5000003"]
    combo = sim.get("/subscriptions", customerId="1000001", status="active",
                    creationDateFrom="2026-01-10T00:00:00Z").json()
    assert [s["id"] for s in combo["data"]] == ["5000023", "5000021", "5000019", "5000017", "5000013",
                                                "5000011"]
    assert sim.get("/subscriptions", customerId="nope").json()["pagination"]["total"] == 0
    assert_error(sim.get("/subscriptions", creationDateFrom="yesterday"), 400)


def test_subscription_detail(sim):
    seed_small(sim, subs=4)
    sim.login()
    resp = sim.get("/subscriptions/5000001")
    assert resp.status_code == 200
    d = resp.json()
    assert list(d) == SUMMARY_KEYS + ["totalPrice", "products"]
    assert d["customerId"] == "1000001" and d["status"] == "active" and d["renewalStatus"] == "on"
    assert d["creationDate"] == "2026-01-01T10:00:00Z" and d["lastModifiedDate"] == "2026-01-01T10:00:00Z"
    assert d["products"] == [
        {"mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "name": "Microsoft 365 Business Premium", "quantity": 1,
         "unitPrice": "22.00", "extendedPrice": "22.00"},
        {"mpn": "CFQ7TTC0LH18:0001:P1Y:M", "name": "Microsoft 365 Business Basic", "quantity": 3,
         "unitPrice": "5.50", "extendedPrice": "16.50"},
    ]
    assert d["totalPrice"] == "38.50"
    assert d["renewalDate"] > "2026-11-01"  # next anniversary after now
    body = assert_error(sim.get("/subscriptions/9999999"), 404)
    assert body["error"] == "Not Found"


def test_money_as_number(sim):
    seed_small(sim, subs=1)
    sim.admin("POST", "/_sim/config", json={"money_as": "number"})
    sim.login()
    d = sim.get("/subscriptions/5000001").json()
    assert d["totalPrice"] == 38.5 and d["products"][0]["unitPrice"] == 22.0


def test_products_list_and_detail(sim):
    seed_small(sim, subs=1)
    sim.login()
    items = sim.get("/products").json()["data"]
    assert [p["id"] for p in items] == ["3000002", "3000001"]
    p = sim.get("/products/3000001").json()
    assert p == {
        "id": "3000001", "mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "vendor": "Microsoft",
        "name": "Microsoft 365 Business Premium", "serviceName": "Microsoft 365", "minimumQuantity": 1,
        "maximumQuantity": 10000, "unitPrice": "22.00", "unitCost": "18.70",
        "prices": [{"currency": "USD", "amount": "22.00"}], "costs": [{"currency": "USD", "amount": "18.70"}],
        "billingPeriod": {"type": "month", "duration": 1}, "subscriptionPeriod": {"type": "year", "duration": 1},
        "billingModel": "prepaid"}
    assert_error(sim.get("/products/nope"), 404)


def test_unknown_path_has_vendor_error_shape(sim):
    assert_error(requests.get(sim.api + "/orders/1"), 404)


# --- rate limits --------------------------------------------------------------------------
def test_61st_get_per_endpoint_is_429(sim):
    seed_small(sim, subs=3)
    sim.login()
    for i in range(60):
        resp = sim.get("/subscriptions/5000001")  # any id: the endpoint is the route template
        assert resp.status_code == 200
        assert resp.headers["X-RateLimit-Limit"] == "60"
        assert resp.headers["X-RateLimit-Remaining"] == str(59 - i)
        assert 0 < int(resp.headers["X-RateLimit-Reset"]) <= 60
    resp = sim.get("/subscriptions/5000002")
    body = assert_error(resp, 429)
    assert body["error"] == "Too Many Requests"
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert int(resp.headers["Retry-After"]) >= 1
    # other endpoints have their own budget
    assert sim.get("/subscriptions").status_code == 200
    assert sim.get("/subscriptions").headers["X-RateLimit-Remaining"] == "58"


def test_rate_window_is_configurable_and_slides(sim):
    sim.admin("POST", "/_sim/config", json={"rate_limit_per_minute": 3, "rate_window_seconds": 1})
    sim.login()
    codes = [sim.get("/customers").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = sim.get("/customers")
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.headers["X-RateLimit-Reset"] == "1"
    time.sleep(1.1)
    ok = sim.get("/customers")
    assert ok.status_code == 200 and ok.headers["X-RateLimit-Remaining"] == "2"


def test_rate_limit_is_per_credentials(sim):
    other = {"user": "second-app", "password": "pw2", "subscription_key": "sub-key-2", "marketplace": "us"}
    sim.admin("POST", "/_sim/seed", json={"credentials": [other]})
    sim.admin("POST", "/_sim/config", json={"rate_limit_per_minute": 2})
    sim.login()
    assert [sim.get("/products").status_code for _ in range(3)] == [200, 200, 429]
    token2 = sim.get_token(user="second-app", password="pw2", key="sub-key-2").json()["token"]
    assert sim.get("/products", token=token2, key="sub-key-2").status_code == 200


# --- faults (kit) on the marketplace ------------------------------------------------------
def test_fault_429_with_retry_after_and_500(sim):
    sim.login()
    sim.admin("POST", "/_sim/faults", json={"endpoint": r"^GET /marketplace/\w+/subscriptions$",
                                            "kind": "status", "status": 429, "seconds": 3, "count": 1})
    resp = sim.get("/subscriptions")
    body = assert_error(resp, 429)
    assert resp.headers["Retry-After"] == "3" and body["message"]
    assert sim.get("/subscriptions").status_code == 200
    sim.admin("POST", "/_sim/faults", json={"endpoint": "subscriptions", "kind": "status", "status": 500,
                                            "count": 2})
    assert_error(sim.get("/subscriptions"), 500)
    assert_error(sim.get("/subscriptions/5000001"), 500)
    assert sim.get("/subscriptions").status_code == 200


def test_fault_latency(sim):
    sim.login()
    sim.admin("POST", "/_sim/faults", json={"endpoint": "GET .*/customers", "kind": "latency", "seconds": 0.4})
    t0 = time.monotonic()
    assert sim.get("/customers").status_code == 200
    assert time.monotonic() - t0 >= 0.4
    with pytest.raises(requests.exceptions.Timeout):
        requests.get(sim.api + "/customers", timeout=0.1)


def test_drop_after_write_on_token(sim):
    sim.admin("POST", "/_sim/faults", json={"endpoint": "^POST .*/token$", "kind": "drop_after_write",
                                            "count": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        sim.get_token()
    log = sim.admin("GET", "/_sim/writes")
    assert len(log) == 1
    assert log[0]["dropped"] is True and log[0]["method"] == "POST"
    assert log[0]["path"] == "/marketplace/na/token" and log[0]["body"] == {"marketplace": "us"}
    assert sim.admin("GET", "/_sim/state")["tokens"] == 1  # the write happened
    assert sim.get_token().status_code == 200
    assert sim.admin("GET", "/_sim/writes", params={"since": log[0]["seq"]})[0]["dropped"] is False


# --- admin changes ------------------------------------------------------------------------
def test_admin_change_create_cancel_and_counts(sim):
    seed_small(sim, subs=3)
    sim.login()
    changed = sim.admin("POST", "/_sim/subscriptions/5000002/change",
                        json={"mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "quantity": 9, "at": "2026-03-01T00:00:00Z"})
    assert changed["products"][0]["quantity"] == 9 and changed["lastModifiedDate"] == "2026-03-01T00:00:00Z"
    added = sim.admin("POST", "/_sim/subscriptions/5000002/change",
                      json={"mpn": "CFQ7TTC0LH16:0001:P1Y:M", "quantity": 2, "unitPrice": "4.00"})
    assert [p["mpn"] for p in added["products"]] == ["CFQ7TTC0LCHC:0001:P1Y:M", "CFQ7TTC0LH16:0001:P1Y:M"]
    assert added["totalPrice"] == "206.00"  # 9 * 22 + 2 * 4
    assert added["lastModifiedDate"] > "2026-03-01T00:00:00Z"  # bumped to now
    detail = sim.get("/subscriptions/5000002").json()
    assert detail["products"] == added["products"]
    summary = sim.get("/subscriptions", limit=100).json()["data"]
    assert {s["id"]: s["lastModifiedDate"] for s in summary}["5000002"] == added["lastModifiedDate"]

    held = sim.admin("POST", "/_sim/subscriptions/5000001/change", json={"status": "hold"})
    assert held["status"] == "hold"
    cancelled = sim.admin("POST", "/_sim/subscriptions/5000003/cancel", json={})
    assert (cancelled["status"], cancelled["renewalStatus"]) == ("terminated", "off")

    cust = sim.admin("POST", "/_sim/customers", json={"name": "Tailspin Toys Inc.", "externalId": "T-9"})
    assert cust["id"] == "1000003" and cust["status"] == "active"
    created = requests.post(sim.base + "/_sim/subscriptions", json={
        "customerId": cust["id"], "lines": [{"mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "quantity": 5}]})
    assert created.status_code == 201
    new = created.json()
    assert new["id"] == "5000004"
    newest = sim.get("/subscriptions", limit=1).json()["data"][0]
    assert newest["id"] == new["id"] and newest["customerId"] == "1000003"
    assert requests.post(sim.base + "/_sim/subscriptions",
                         json={"customerId": "404", "lines": []}).status_code == 400

    sim.admin("GET", "/_sim/requests/count", params={"reset": 1})
    for sid in ("5000001", "5000002", "5000002"):
        sim.get(f"/subscriptions/{sid}")
    counts = sim.admin("GET", "/_sim/requests/count")
    assert counts["total"] == 3
    assert counts["by_endpoint"] == {"GET /marketplace/na/subscriptions/5000001": 1,
                                     "GET /marketplace/na/subscriptions/5000002": 2}
    assert counts["by_route"] == {"GET /marketplace/<region>/subscriptions/<sub_id>": 3}


def test_corrupt_record(sim):
    seed_small(sim, subs=3)
    sim.login()
    sim.admin("POST", "/_sim/subscriptions/5000002/corrupt", json={"field": "quantity", "value": "abc"})
    d = sim.get("/subscriptions/5000002").json()
    assert d["products"][0]["quantity"] == "abc"
    sim.admin("POST", "/_sim/subscriptions/5000003/corrupt", json={"drop_field": "customerId"})
    listed = {s["id"]: s for s in sim.get("/subscriptions").json()["data"]}
    assert "customerId" not in listed["5000003"] and listed["5000002"]["customerId"] == "1000002"
    assert "customerId" not in sim.get("/subscriptions/5000003").json()
    sim.admin("POST", "/_sim/subscriptions/5000003/corrupt", json={"field": "creationDate", "value": None})
    assert sim.get("/subscriptions/5000003").json()["creationDate"] is None
    # filters still work on the real data
    assert sim.get("/subscriptions", customerId="1000001").json()["pagination"]["total"] == 2
    sim.admin("POST", "/_sim/subscriptions/5000003/corrupt", json={"clear": True})
    assert sim.get("/subscriptions/5000003").json()["customerId"] == "1000001"


def test_reset_keeps_config(sim):
    seed_small(sim, subs=3)
    sim.admin("POST", "/_sim/config", json={"max_limit": 7})
    sim.admin("POST", "/_sim/reset")
    state = sim.admin("GET", "/_sim/state")
    assert state["counts"] == {"credentials": 0, "customers": 0, "products": 0, "subscriptions": 0, "lines": 0}
    assert state["config"]["max_limit"] == 7
    assert sim.get_token().status_code == 401


def test_seed_defaults_and_validation(sim):
    sim.admin("POST", "/_sim/seed", json={
        "customers": [{"id": "42", "name": "Acme"}],
        "subscriptions": [{"id": "S1", "customerId": "42", "lines": [{"mpn": "NEW-MPN", "quantity": 4}]}]})
    state = sim.admin("GET", "/_sim/state")
    assert state["products"][0]["mpn"] == "NEW-MPN" and state["products"][0]["unitPrice"] == "10.00"
    sub = state["subscriptions"][0]
    assert (sub["status"], sub["renewalStatus"], sub["totalPrice"]) == ("active", "on", "40.00")
    bad = requests.post(sim.base + "/_sim/seed", json={"subscriptions": [{"customerId": "nope"}]})
    assert bad.status_code == 400 and "customerId" in bad.json()["error"]
    bad = requests.post(sim.base + "/_sim/seed", json={"subscriptions": [
        {"customerId": "42", "lines": [{"mpn": "X", "quantity": "many"}]}]})
    assert bad.status_code == 400


# --- generator ----------------------------------------------------------------------------
def _generated_state(seed):
    app = create_app()
    client = app.test_client()
    resp = client.post("/_sim/generate", json={"seed": seed, "customers": 40, "lines": 300,
                                               "credentials": CRED})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return client.get("/_sim/state").get_json()


def test_generator_is_deterministic_and_realistic():
    a, b, c = _generated_state(3), _generated_state(3), _generated_state(4)
    assert a == b
    assert a["subscriptions"] != c["subscriptions"]
    assert a["counts"]["lines"] == 300 and a["counts"]["customers"] == 40
    names = {p["name"] for p in a["products"]}
    assert {"Microsoft 365 Business Premium", "Microsoft 365 Business Basic", "Microsoft 365 E3"} <= names
    assert all(re.fullmatch(r"CFQ7TTC0[0-9A-Z]{4}:\d{4}:P1[MY]:[MA]", p["mpn"]) for p in a["products"])
    assert all(0 < float(p["unitCost"]) < float(p["unitPrice"]) for p in a["products"])
    assert {p["billingPeriod"]["type"] for p in a["products"]} == {"month", "year"}
    assert all(re.fullmatch(r"[a-z0-9]+\.(com|net|co|us|org)", c["domain"]) for c in a["customers"])
    assert len({c["name"] for c in a["customers"]}) == 40
    subs = a["subscriptions"]
    assert all(1 <= len(s["products"]) <= 3 for s in subs)
    statuses = [s["status"] for s in subs]
    assert statuses.count("active") / len(statuses) > 0.75
    assert set(statuses) <= {"active", "hold", "terminated", "pending"}
    customer_ids = {c["id"] for c in a["customers"]}
    assert all(s["customerId"] in customer_ids for s in subs)
    assert all(s["creationDate"] <= s["lastModifiedDate"] < s["renewalDate"] for s in subs)


def test_fifty_thousand_lines_page_through(sim):
    resp = sim.admin("POST", "/_sim/generate", json={"seed": 1, "customers": 500, "lines": 50000})
    assert resp["lines"] == 50000 and resp["subscriptions"] > 50000 / 3
    sim.admin("POST", "/_sim/config", json={"rate_limit_per_minute": 100000})
    sim.login()
    items, total, pages = sim.page_all("/subscriptions", limit=100)
    assert total == resp["subscriptions"] and len(items) == total and pages == -(-total // 100)
    assert len({s["id"] for s in items}) == total
    keys = [(s["creationDate"], int(s["id"])) for s in items]
    assert keys == sorted(keys, reverse=True)
    active, active_total, _ = sim.page_all("/subscriptions", limit=100, status="active")
    assert len(active) == active_total and {s["status"] for s in active} == {"active"}
    assert active_total == sum(1 for s in items if s["status"] == "active")


# --- accounts -------------------------------------------------------------------------------
CRED_B = {"user": "reseller-b", "password": "pw-b", "subscription_key": "sub-key-b", "marketplace": "us",
          "account": "b"}


def seed_two_accounts(sim):
    """Account "default" (CRED): customers 1000001-2, subscriptions 5000001-4; account "b" (CRED_B):
    customer 1000003, subscriptions 5000005-7 (5000007 the newest of all)."""
    sim.admin("POST", "/_sim/seed", json={
        "credentials": [CRED_B],
        "customers": [{"id": "1000001", "name": "Contoso Dental LLC"}, {"id": "1000002", "name": "Fabrikam Legal"},
                      {"id": "1000003", "name": "Tailspin Toys", "account": "b"}],
        "subscriptions": [
            {"id": str(5000001 + i), "customerId": cust, "status": "hold" if i == 2 else "active",
             "creationDate": f"2026-02-{i + 1:02d}T10:00:00Z", "lines": [{"mpn": "CFQ7TTC0LCHC:0001:P1Y:M",
                                                                          "quantity": i + 1}]}
            for i, cust in enumerate(["1000001", "1000002", "1000001", "1000002", "1000003", "1000003",
                                      "1000003"])]})
    sim.login()
    return sim.get_token(**{k: CRED_B[k] for k in ("user", "password")}, key=CRED_B["subscription_key"]).json()["token"]


def get_b(sim, token_b, path, **params):
    return sim.get(path, token=token_b, key=CRED_B["subscription_key"], **params)


def test_accounts_see_disjoint_customers_and_subscriptions(sim):
    token_b = seed_two_accounts(sim)
    a_custs = sim.get("/customers", limit=100).json()
    b_custs = get_b(sim, token_b, "/customers", limit=100).json()
    assert [c["id"] for c in a_custs["data"]] == ["1000002", "1000001"] and a_custs["pagination"]["total"] == 2
    assert [c["id"] for c in b_custs["data"]] == ["1000003"] and b_custs["pagination"]["total"] == 1
    assert "account" not in b_custs["data"][0]  # bookkeeping of the simulator, not a vendor field
    a_subs = sim.get("/subscriptions", limit=100).json()
    b_subs = get_b(sim, token_b, "/subscriptions", limit=100).json()
    assert [s["id"] for s in a_subs["data"]] == ["5000004", "5000003", "5000002", "5000001"]
    assert [s["id"] for s in b_subs["data"]] == ["5000007", "5000006", "5000005"]
    assert (a_subs["pagination"]["total"], b_subs["pagination"]["total"]) == (4, 3)
    # the catalogue is shared
    assert sim.get("/products").json() == get_b(sim, token_b, "/products").json()
    assert get_b(sim, token_b, "/products/" + sim.get("/products").json()["data"][0]["id"]).status_code == 200
    # the same filter in two accounts is two answers
    assert [s["id"] for s in sim.get("/subscriptions", status="active").json()["data"]] == [
        "5000004", "5000002", "5000001"]
    assert [s["id"] for s in get_b(sim, token_b, "/subscriptions", status="active").json()["data"]] == [
        "5000007", "5000006", "5000005"]


def test_other_accounts_subscription_is_404_like_an_unknown_id(sim):
    token_b = seed_two_accounts(sim)
    assert sim.get("/subscriptions/5000001").status_code == 200
    assert get_b(sim, token_b, "/subscriptions/5000005").json()["customerId"] == "1000003"
    foreign = assert_error(sim.get("/subscriptions/5000005"), 404)
    unknown = assert_error(sim.get("/subscriptions/9999999"), 404)
    assert foreign["error"] == unknown["error"] == "Not Found"
    assert foreign["message"] == "Subscription 5000005 not found"
    assert_error(get_b(sim, token_b, "/subscriptions/5000001"), 404)
    # another account's customer id filters to nothing
    assert sim.get("/subscriptions", customerId="1000003").json()["pagination"]["total"] == 0
    assert get_b(sim, token_b, "/subscriptions", customerId="1000003").json()["pagination"]["total"] == 3
    assert get_b(sim, token_b, "/subscriptions", customerId="1000001").json()["data"] == []


def test_caches_follow_changes_per_account(sim):
    token_b = seed_two_accounts(sim)
    assert sim.get("/subscriptions", status="hold").json()["pagination"]["total"] == 1
    assert get_b(sim, token_b, "/subscriptions", status="hold").json()["pagination"]["total"] == 0
    sim.admin("POST", "/_sim/subscriptions/5000006/change", json={"status": "hold"})
    assert [s["id"] for s in get_b(sim, token_b, "/subscriptions", status="hold").json()["data"]] == ["5000006"]
    assert [s["id"] for s in sim.get("/subscriptions", status="hold").json()["data"]] == ["5000003"]
    # a customer moved to another account takes its subscriptions along
    sim.admin("POST", "/_sim/customers", json={"id": "1000002", "name": "Fabrikam Legal", "account": "b"})
    assert [s["id"] for s in sim.get("/subscriptions", limit=100).json()["data"]] == ["5000003", "5000001"]
    assert get_b(sim, token_b, "/subscriptions", limit=100).json()["pagination"]["total"] == 5
    assert get_b(sim, token_b, "/subscriptions/5000002").status_code == 200
    # an upsert that names no account keeps the customer's
    sim.admin("POST", "/_sim/customers", json={"id": "1000002", "name": "Fabrikam Legal LLP"})
    assert {c["id"]: c["name"] for c in get_b(sim, token_b, "/customers").json()["data"]} == {
        "1000003": "Tailspin Toys", "1000002": "Fabrikam Legal LLP"}
    new = sim.admin("POST", "/_sim/customers", json={"name": "Woodgrove Bank"})
    assert new["account"] == "default"


def test_state_filtered_by_account(sim):
    seed_two_accounts(sim)
    everything = sim.admin("GET", "/_sim/state")
    assert everything["counts"] == {"credentials": 2, "customers": 3, "products": 1, "subscriptions": 7, "lines": 7}
    assert {c["id"]: c["account"] for c in everything["customers"]} == {
        "1000001": "default", "1000002": "default", "1000003": "b"}
    assert {c["user"]: c["account"] for c in everything["credentials"]} == {"api-user": "default", "reseller-b": "b"}
    assert everything["accounts"] == ["b", "default"]
    b = sim.admin("GET", "/_sim/state", params={"account": "b"})
    assert b["account"] == "b" and b["config"] == everything["config"]
    assert b["counts"] == {"credentials": 1, "customers": 1, "products": 1, "subscriptions": 3, "lines": 3}
    assert [c["id"] for c in b["customers"]] == ["1000003"] and b["customers"][0]["account"] == "b"
    assert sorted(s["id"] for s in b["subscriptions"]) == ["5000005", "5000006", "5000007"]
    assert [c["user"] for c in b["credentials"]] == ["reseller-b"]
    assert b["tokens"] == 1 and everything["tokens"] == 2
    assert b["products"] == everything["products"]
    default = sim.admin("GET", "/_sim/state", params={"account": "default"})
    assert sorted(s["id"] for s in default["subscriptions"]) == ["5000001", "5000002", "5000003", "5000004"]
    none = sim.admin("GET", "/_sim/state", params={"account": "nobody"})
    assert none["customers"] == [] and none["subscriptions"] == [] and none["counts"]["subscriptions"] == 0
    assert requests.post(sim.base + "/_sim/customers", json={"name": "X", "account": 7}).status_code == 400


def _generate(client, **spec):
    resp = client.post("/_sim/generate", json=spec)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_generate_per_account_keeps_other_accounts_and_ids_apart():
    client = create_app().test_client()
    _generate(client, seed=3, customers=20, lines=120, account="a",
              credentials=[{"user": "a-api", "password": "p", "subscription_key": "ka"}])
    before_a = client.get("/_sim/state?account=a").get_json()
    _generate(client, seed=4, customers=15, lines=80, account="b",
              credentials=[{"user": "b-api", "password": "p", "subscription_key": "kb"},
                           {"user": "x-api", "password": "p", "subscription_key": "kx", "account": "x"}])
    after_a = client.get("/_sim/state?account=a").get_json()
    b = client.get("/_sim/state?account=b").get_json()
    everything = client.get("/_sim/state").get_json()
    assert after_a["customers"] == before_a["customers"] and after_a["subscriptions"] == before_a["subscriptions"]
    assert after_a["counts"] == {**before_a["counts"], "credentials": 1}
    assert (len(after_a["customers"]), len(b["customers"])) == (20, 15)
    assert after_a["counts"]["lines"] == 120 and b["counts"]["lines"] == 80
    assert {c["user"]: c["account"] for c in everything["credentials"]} == {"a-api": "a", "b-api": "b", "x-api": "x"}
    # ids continue: nothing collides, and b's come after a's
    a_ids, b_ids = {c["id"] for c in after_a["customers"]}, {c["id"] for c in b["customers"]}
    assert not a_ids & b_ids and min(map(int, b_ids)) > max(map(int, a_ids))
    a_subs, b_subs = {s["id"] for s in after_a["subscriptions"]}, {s["id"] for s in b["subscriptions"]}
    assert not a_subs & b_subs and len(everything["subscriptions"]) == len(a_subs) + len(b_subs)
    assert all(s["customerId"] in b_ids for s in b["subscriptions"])
    assert len(everything["products"]) == len(before_a["products"])  # one shared catalogue
    # deterministic: the same calls from a reset state give the same data
    assert client.post("/_sim/reset").status_code == 200
    _generate(client, seed=3, customers=20, lines=120, account="a",
              credentials=[{"user": "a-api", "password": "p", "subscription_key": "ka"}])
    assert client.get("/_sim/state?account=a").get_json() == before_a
    # the vendor API of b's credential sees b's data only
    token = client.post("/marketplace/na/token", headers={"X-Subscription-Key": "kb"}, json={"marketplace": "us"},
                        auth=("b-api", "p"))
    assert token.status_code == 401  # the reset forgot b
    _generate(client, seed=4, customers=15, lines=80, account="b",
              credentials=[{"user": "b-api", "password": "p", "subscription_key": "kb"}])
    token = client.post("/marketplace/na/token", headers={"X-Subscription-Key": "kb"}, json={"marketplace": "us"},
                        auth=("b-api", "p")).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}", "X-Subscription-Key": "kb"}
    custs = client.get("/marketplace/na/customers?limit=100", headers=headers).get_json()
    assert custs["pagination"]["total"] == 15
    assert {c["name"] for c in custs["data"]} == {c["name"] for c in b["customers"]}


def test_paging_totals_per_account(sim):
    a = sim.admin("POST", "/_sim/generate", json={"seed": 5, "customers": 30, "lines": 900})
    sim.admin("POST", "/_sim/generate", json={"seed": 6, "customers": 10, "lines": 250, "account": "b",
                                              "credentials": [{**CRED_B, "account": None}]})
    sim.admin("POST", "/_sim/config", json={"rate_limit_per_minute": 100000})
    counts_a = sim.admin("GET", "/_sim/state", params={"account": "default"})["counts"]
    state_b = sim.admin("GET", "/_sim/state", params={"account": "b"})
    assert counts_a["subscriptions"] == a["subscriptions"]  # generated before b existed
    sim.login()
    items, total, pages = sim.page_all("/subscriptions", limit=40)
    assert total == counts_a["subscriptions"] and len({s["id"] for s in items}) == total
    assert pages == -(-total // 40)
    token_b = sim.get_token(user=CRED_B["user"], password=CRED_B["password"], key=CRED_B["subscription_key"])
    sim.token = token_b.json()["token"]
    b_items, offset = [], 0
    while True:
        body = get_b(sim, sim.token, "/subscriptions", offset=offset, limit=40).json()
        b_items += body["data"]
        offset += 40
        if offset >= body["pagination"]["total"]:
            break
    assert body["pagination"]["total"] == state_b["counts"]["subscriptions"] == len(state_b["subscriptions"])
    assert {s["id"] for s in b_items} == {s["id"] for s in state_b["subscriptions"]}
    assert not {s["id"] for s in b_items} & {s["id"] for s in items}
    keys = [(s["creationDate"], int(s["id"])) for s in b_items]
    assert keys == sorted(keys, reverse=True)
    held = get_b(sim, sim.token, "/subscriptions", status="hold", limit=100).json()
    assert held["pagination"]["total"] == sum(1 for s in state_b["subscriptions"] if s["status"] == "hold")
    assert get_b(sim, sim.token, "/customers").json()["pagination"]["total"] == 10


# --- bulk changes -------------------------------------------------------------------------
def test_bulk_changes_apply_good_entries_and_report_bad_ones(sim):
    seed_small(sim, subs=4)
    resp = requests.post(sim.base + "/_sim/subscriptions/changes", json={"changes": [
        {"id": "5000001", "mpn": "CFQ7TTC0LCHC:0001:P1Y:M", "quantity": 11, "at": "2026-04-01T00:00:00Z"},
        {"id": "9999999", "quantity": 3},
        {"id": "5000002", "status": "hold", "quantity": -1},  # refused as a whole: the status stays
        {"id": "5000001", "quantity": 5},  # two lines, no mpn
        {"quantity": 5},
        "not an object",
        {"id": "5000003", "status": "bogus"},
        {"id": 5000002, "unitPrice": "19.50", "at": "2026-04-02"},
        {"id": "5000003", "mpn": "CFQ7TTC0LH16:0001:P1Y:M", "quantity": 2, "unitPrice": "4.00"},
        {"id": "5000004", "status": "terminated"},
    ]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["changed"] == 4
    assert [(e["index"], e["id"], e["status"]) for e in body["errors"]] == [
        (1, "9999999", 404), (2, "5000002", 400), (3, "5000001", 400), (4, None, 400), (5, None, 400),
        (6, "5000003", 400)]
    assert body["errors"][0]["message"] == "Subscription 9999999 not found"
    assert all(e["message"] for e in body["errors"])
    subs = {s["id"]: s for s in sim.admin("GET", "/_sim/state")["subscriptions"]}
    assert subs["5000001"]["products"][0]["quantity"] == 11
    assert subs["5000001"]["lastModifiedDate"] == "2026-04-01T00:00:00Z"
    assert subs["5000002"]["status"] == "active" and subs["5000002"]["products"][0]["quantity"] == 2
    assert subs["5000002"]["products"][0]["unitPrice"] == "19.50"
    assert subs["5000002"]["lastModifiedDate"] == "2026-04-02T00:00:00Z"
    assert [p["mpn"] for p in subs["5000003"]["products"]] == ["CFQ7TTC0LCHC:0001:P1Y:M", "CFQ7TTC0LH16:0001:P1Y:M"]
    assert subs["5000003"]["status"] == "active"
    assert subs["5000004"]["status"] == "terminated" and subs["5000004"]["lastModifiedDate"] > "2026-11-01"
    # the vendor API sees the changes (list caches follow)
    sim.login()
    assert [s["id"] for s in sim.get("/subscriptions", status="terminated").json()["data"]] == ["5000004"]
    assert requests.post(sim.base + "/_sim/subscriptions/changes", json={}).status_code == 400
    assert requests.post(sim.base + "/_sim/subscriptions/changes", json={"changes": []}).json() == {
        "changed": 0, "errors": []}


def test_bulk_change_of_ten_thousand_subscriptions_is_fast():
    client = create_app().test_client()
    generated = _generate(client, seed=1, customers=500, lines=25000)
    assert generated["subscriptions"] >= 10000
    changes = [{"id": str(5000001 + i), "status": "hold" if i % 2 else "active", "at": "2026-11-02T00:00:00Z"}
               for i in range(9999)] + [{"id": "1", "quantity": 1}]
    t0 = time.perf_counter()
    resp = client.post("/_sim/subscriptions/changes", json={"changes": changes})
    elapsed = time.perf_counter() - t0
    assert resp.status_code == 200
    assert resp.get_json() == {"changed": 9999, "errors": [
        {"index": 9999, "id": "1", "status": 404, "message": "Subscription 1 not found"}]}
    assert elapsed < 2.0, elapsed
    subs = {s["id"]: s for s in client.get("/_sim/state").get_json()["subscriptions"]}
    changed = [subs[str(5000001 + i)] for i in range(9999)]
    assert [s["status"] for s in changed] == ["hold" if i % 2 else "active" for i in range(9999)]
    assert {s["lastModifiedDate"] for s in changed} == {"2026-11-02T00:00:00Z"}
