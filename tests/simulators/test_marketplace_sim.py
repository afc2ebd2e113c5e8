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
