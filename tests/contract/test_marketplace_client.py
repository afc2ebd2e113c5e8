"""MarketplaceClient against the in-process Ingram Marketplace simulator (simulators/marketplace)."""
import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
import requests
from prometheus_client import REGISTRY

from common.vendor_client import MalformedRecord, NotFound, RateLimited, Timeout, Transient, Unauthorized
from services.marketplace.client import MarketplaceClient
from simulators import kit
from simulators.marketplace import create_app

CRED = {"user": "api-user", "password": "s3cret-pw", "subscription_key": "sub-key-1", "marketplace": "us"}
PREMIUM, BASIC = "CFQ7TTC0LCHC:0001:P1Y:M", "CFQ7TTC0LH18:0001:P1Y:M"


class Sim:
    def __init__(self, base):
        self.base = base

    def admin(self, method, path, **kw):
        resp = requests.request(method, self.base + path, timeout=10, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp.json()

    def fault(self, **spec):
        return self.admin("POST", "/_sim/faults", json=spec)

    def config(self, **changes):
        return self.admin("POST", "/_sim/config", json=changes)

    def route_count(self, route):
        return self.admin("GET", "/_sim/requests/count")["by_route"].get(route, 0)


@pytest.fixture()
def sim():
    app = create_app(seed=0)
    server = kit.serve(app, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    s = Sim(f"http://127.0.0.1:{server.server_port}")
    s.admin("POST", "/_sim/seed", json=seed_doc(25))
    yield s
    server.shutdown()
    server.server_close()


def seed_doc(subs):
    """Two customers, two products; subscription i created on day i+1 of 2026 (higher = newer)."""
    return {
        "credentials": [CRED],
        "customers": [{"id": "1000001", "name": "Contoso Dental LLC", "externalId": "C1"},
                      {"id": "1000002", "name": "Fabrikam Legal"}],
        "products": [{"id": "3000001", "mpn": PREMIUM, "name": "Microsoft 365 Business Premium",
                      "unitPrice": "22.00", "unitCost": "18.70"},
                     {"id": "3000002", "mpn": BASIC, "name": "Microsoft 365 Business Basic", "unitPrice": "6.00"}],
        "subscriptions": [
            {"id": str(5000001 + i), "customerId": "1000001" if i % 2 == 0 else "1000002",
             "status": "hold" if i % 5 == 4 else "active", "creationDate": f"2026-01-{i + 1:02d}T10:00:00Z",
             "lines": [{"mpn": PREMIUM, "quantity": i + 1}]
             + ([{"mpn": BASIC, "quantity": 3, "unitPrice": "5.50"}] if i % 3 == 0 else [])}
            for i in range(subs)],
    }


class Sleeps(list):
    """Records the waits; real=True also sleeps them."""

    def __init__(self, real=False):
        super().__init__()
        self.real = real

    def __call__(self, seconds):
        self.append(seconds)
        if self.real:
            time.sleep(seconds)


def client_for(sim, sleeps=None, **kw):
    cred = {"base_url": f"{sim.base}/marketplace/na/", "region": "na", "api_user": CRED["user"],
            "password": CRED["password"], "subscription_key": CRED["subscription_key"], "marketplace": "us"}
    cred.update(kw.pop("cred", {}))
    kw.setdefault("timeout", (2.0, 5.0))
    return MarketplaceClient(cred, sleep=sleeps if sleeps is not None else Sleeps(), **kw)


def calls(endpoint, status):
    return REGISTRY.get_sample_value("vendor_requests_total",
                                     {"vendor": "ingram", "endpoint": endpoint, "status": status}) or 0.0


def malformed_count(endpoint):
    return REGISTRY.get_sample_value("vendor_malformed_records_total",
                                     {"vendor": "ingram", "endpoint": endpoint}) or 0.0


class Metrics:
    """Deltas of vendor_requests_total{vendor="ingram"} since creation."""

    def __init__(self, *pairs):
        self.before = {p: calls(*p) for p in pairs}

    def delta(self, endpoint, status):
        return calls(endpoint, status) - self.before[(endpoint, status)]


# --- auth ---------------------------------------------------------------------------------
def test_token_then_bearer_calls_reuse_it(sim):
    m = Metrics(("POST /token", "200"), ("GET /customers", "200"))
    client = client_for(sim)
    customers = list(client.customers())
    assert [(c["id"], c["name"], c["externalId"]) for c in customers] == [
        ("1000002", "Fabrikam Legal", None), ("1000001", "Contoso Dental LLC", "C1")]
    assert customers[1]["status"] == "active"
    list(client.customers())
    assert sim.admin("GET", "/_sim/state")["tokens"] == 1
    assert m.delta("POST /token", "200") == 1 and m.delta("GET /customers", "200") == 2


def test_default_base_url_from_region():
    client = MarketplaceClient({"region": "eu", "api_user": "u", "password": "pw-SECRET",
                                "subscription_key": "key-SECRET", "marketplace": "de"})
    assert client.base_url == "https://api.cloud.im/marketplace/eu/"
    assert repr(client) == "<MarketplaceClient https://api.cloud.im/marketplace/eu/ user=u>"


def test_expired_token_is_refreshed_once(sim):
    sim.config(token_ttl_seconds=0.3)
    m = Metrics(("POST /token", "200"), ("GET /products", "401"), ("GET /products", "200"))
    client = client_for(sim)
    assert len(list(client.products())) == 2
    time.sleep(0.5)
    assert [p["mpn"] for p in client.products()] == [BASIC, PREMIUM]
    assert m.delta("POST /token", "200") == 2
    assert m.delta("GET /products", "401") == 1 and m.delta("GET /products", "200") == 2


def test_refresh_then_still_unauthorized_fails(sim):
    client = client_for(sim)
    list(client.customers())
    # the credentials are revoked at the vendor: refresh fails with the vendor's message
    sim.admin("POST", "/_sim/reset")
    with pytest.raises(Unauthorized) as info:
        list(client.customers())
    err = info.value
    assert err.status == 401 and err.endpoint == "POST /token" and err.vendor == "ingram"
    assert "correlationId" in err.message


def test_wrong_password_is_unauthorized_with_vendor_message(sim, caplog):
    client = client_for(sim, cred={"password": "wrong-pw-XYZ"})
    with pytest.raises(Unauthorized) as info:
        list(client.subscriptions())
    assert info.value.status == 401 and info.value.endpoint == "POST /token"
    assert info.value.message.split(" (correlationId ")[0]  # the vendor's own text first
    assert "wrong-pw-XYZ" not in caplog.text and "wrong-pw-XYZ" not in str(info.value)
    assert "sub-key-1" not in caplog.text


# --- lists, paging, filters ---------------------------------------------------------------
def test_paging_over_many_pages(sim):
    client = client_for(sim)
    listing = client.subscriptions(page_size=7)
    items = list(listing)
    assert [s["id"] for s in items] == [str(5000025 - i) for i in range(25)]  # newest first
    assert (listing.pages, listing.total, listing.complete, listing.malformed) == (4, 25, True, [])
    assert sim.route_count("GET /marketplace/<region>/subscriptions") == 4
    first = items[-1]
    assert first == {"id": "5000001", "customerId": "1000001", "status": "active", "renewalStatus": "on",
                     "creationDate": dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc),
                     "renewalDate": first["renewalDate"],
                     "lastModifiedDate": dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)}
    assert first["renewalDate"] > first["creationDate"]


def test_paging_follows_a_clamped_limit(sim):
    sim.config(max_limit=10)
    client = client_for(sim)
    listing = client.subscriptions(page_size=100)
    assert len(list(listing)) == 25 and listing.pages == 3


def test_empty_listing_and_page_size_bounds(sim):
    client = client_for(sim)
    listing = client.subscriptions(customer_id="nobody")
    assert list(listing) == [] and listing.total == 0 and listing.pages == 1
    with pytest.raises(ValueError):
        client.subscriptions(page_size=101)
    with pytest.raises(ValueError):
        client.customers(page_size=0)


def test_subscription_filters(sim):
    client = client_for(sim)
    assert [s["id"] for s in client.subscriptions(status="hold")] == \
        ["5000025", "5000020", "5000015", "5000010", "5000005"]
    assert len(list(client.subscriptions(status=["hold", "active"]))) == 25
    dated = client.subscriptions(created_from=dt.date(2026, 1, 3), created_to=dt.date(2026, 1, 5))
    assert [s["id"] for s in dated] == ["5000005", "5000004", "5000003"]
    combo = client.subscriptions(customer_id="1000001", status="active",
                                 created_from=dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc), page_size=2)
    assert [s["id"] for s in combo] == ["5000023", "5000021", "5000019", "5000017", "5000013", "5000011"]
    assert {s["customerId"] for s in client.subscriptions(customer_id="1000002")} == {"1000002"}


def test_subscription_detail_and_money_formats(sim):
    client = client_for(sim)
    d = client.subscription("5000001")
    assert d["id"] == "5000001" and d["status"] == "active" and d["customerId"] == "1000001"
    assert d["products"] == [
        {"mpn": PREMIUM, "name": "Microsoft 365 Business Premium", "quantity": 1,
         "unitPrice": Decimal("22.00"), "extendedPrice": Decimal("22.00")},
        {"mpn": BASIC, "name": "Microsoft 365 Business Basic", "quantity": 3,
         "unitPrice": Decimal("5.50"), "extendedPrice": Decimal("16.50")}]
    assert d["totalPrice"] == Decimal("38.50")
    sim.config(money_as="number")
    n = client.subscription("5000001")
    assert n["totalPrice"] == Decimal("38.5") and isinstance(n["products"][1]["unitPrice"], Decimal)
    assert n["products"][1]["unitPrice"] == Decimal("5.5")


def test_products_and_product_detail(sim):
    client = client_for(sim)
    assert [p["id"] for p in client.products(page_size=1)] == ["3000002", "3000001"]
    p = client.product("3000001")
    assert (p["mpn"], p["unitPrice"], p["unitCost"]) == (PREMIUM, Decimal("22.00"), Decimal("18.70"))
    assert p["prices"] == [{"currency": "USD", "amount": Decimal("22.00")}]
    assert p["billingPeriod"] == {"type": "month", "duration": 1}
    assert p["subscriptionPeriod"] == {"type": "year", "duration": 1}


def test_not_found_carries_vendor_message_and_correlation_id(sim):
    client = client_for(sim)
    with pytest.raises(NotFound) as info:
        client.subscription("9999999")
    err = info.value
    assert err.status == 404 and err.endpoint == "GET /subscriptions/{id}"
    assert err.message.startswith("Subscription 9999999 not found (correlationId ")


# --- malformed records --------------------------------------------------------------------
def test_corrupt_detail_raises_malformed_naming_id_and_field(sim):
    sim.admin("POST", "/_sim/subscriptions/5000002/corrupt", json={"field": "quantity", "value": "abc"})
    client = client_for(sim)
    before = malformed_count("GET /subscriptions/{id}")
    with pytest.raises(MalformedRecord) as info:
        client.subscription("5000002")
    err = info.value
    assert (err.record_id, err.field, err.problem) == ("5000002", "products[0].quantity", "Not a valid integer.")
    assert "5000002" in str(err) and "products[0].quantity" in str(err)
    assert malformed_count("GET /subscriptions/{id}") - before == 1
    sim.admin("POST", "/_sim/subscriptions/5000002/corrupt", json={"clear": True})
    sim.admin("POST", "/_sim/subscriptions/5000002/corrupt", json={"field": "unitPrice", "value": "twelve"})
    with pytest.raises(MalformedRecord) as info:
        client.subscription("5000002")
    assert info.value.field == "products[0].unitPrice"
    sim.admin("POST", "/_sim/subscriptions/5000002/corrupt", json={"field": "quantity", "value": -1})
    with pytest.raises(MalformedRecord) as info:
        client.subscription("5000002")
    assert set(info.value.errors) == {"products[0].quantity", "products[0].unitPrice"}


def test_corrupt_summary_is_reported_while_listing_continues(sim):
    sim.admin("POST", "/_sim/subscriptions/5000003/corrupt", json={"drop_field": "customerId"})
    sim.admin("POST", "/_sim/subscriptions/5000010/corrupt", json={"field": "status", "value": "frozen"})
    client = client_for(sim)
    before = malformed_count("GET /subscriptions")
    listing = client.subscriptions(page_size=4)
    ids = [s["id"] for s in listing]
    assert len(ids) == 23 and "5000003" not in ids and "5000010" not in ids and ids[-1] == "5000001"
    assert listing.complete and listing.total == 25
    assert [(e.record_id, e.field) for e in listing.malformed] == [("5000010", "status"), ("5000003", "customerId")]
    assert listing.malformed[1].problem == "Missing data for required field."
    assert malformed_count("GET /subscriptions") - before == 2
    # the summary list and the detail of a healthy record are unaffected
    assert client.subscription("5000004")["customerId"] == "1000002"


# --- faults -------------------------------------------------------------------------------
def test_fault_429_retry_after_is_honoured(sim):
    sim.fault(endpoint=r"^GET /marketplace/\w+/subscriptions$", kind="status", status=429, seconds=2, count=1)
    m = Metrics(("GET /subscriptions", "429"), ("GET /subscriptions", "200"))
    sleeps = Sleeps()
    client = client_for(sim, sleeps)
    assert len(list(client.subscriptions())) == 25
    assert sleeps == [2.0]
    assert m.delta("GET /subscriptions", "429") == 1 and m.delta("GET /subscriptions", "200") == 1


def test_fault_500_retried_then_transient(sim):
    sim.fault(endpoint=r"subscriptions/5000001$", kind="status", status=500, count=2)
    m = Metrics(("GET /subscriptions/{id}", "500"), ("GET /subscriptions/{id}", "200"))
    sleeps = Sleeps()
    client = client_for(sim, sleeps, backoff=0.2)
    assert client.subscription("5000001")["id"] == "5000001"
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4
    assert m.delta("GET /subscriptions/{id}", "500") == 2 and m.delta("GET /subscriptions/{id}", "200") == 1
    sim.fault(endpoint=r"subscriptions/5000001$", kind="status", status=503, count=10)
    with pytest.raises(Transient) as info:
        client.subscription("5000001")
    assert info.value.status == 503 and info.value.message.startswith("simulated fault 503 (correlationId ")
    assert m.delta("GET /subscriptions/{id}", "500") == 2


def test_fault_timeout_gives_timeout_after_retries(sim):
    sim.fault(endpoint=r"customers$", kind="timeout", seconds=0.6, count=3)
    m = Metrics(("GET /customers", "Timeout"))
    sleeps = Sleeps()
    client = client_for(sim, sleeps, timeout=(2.0, 0.2), read_retries=2)
    client.token()
    with pytest.raises(Timeout) as info:
        list(client.customers())
    assert info.value.status is None and info.value.request_sent is None
    assert len(sleeps) == 2
    assert m.delta("GET /customers", "Timeout") == 3
    assert sim.route_count("GET /marketplace/<region>/customers") == 3


def test_fault_latency_retried_then_ok(sim):
    sim.fault(endpoint=r"products/3000002$", kind="latency", seconds=0.5, count=1)
    m = Metrics(("GET /products/{id}", "Timeout"), ("GET /products/{id}", "200"))
    client = client_for(sim, timeout=(2.0, 0.2))
    assert client.product("3000002")["name"] == "Microsoft 365 Business Basic"
    assert m.delta("GET /products/{id}", "Timeout") == 1 and m.delta("GET /products/{id}", "200") == 1


# --- rate limits --------------------------------------------------------------------------
def test_61st_get_in_a_minute_is_rate_limited(sim):
    m = Metrics(("GET /subscriptions/{id}", "429"))
    sleeps = Sleeps()
    client = client_for(sim, sleeps)
    for i in range(60):
        client.subscription(str(5000001 + i % 25))
    with pytest.raises(RateLimited) as info:
        client.subscription("5000001")
    err = info.value
    assert err.status == 429 and 30 < err.retry_after <= 60  # beyond max_wait: raised, not slept
    assert err.message.startswith("Rate limit is exceeded.")
    assert sleeps == []
    assert m.delta("GET /subscriptions/{id}", "429") == 1
    # other endpoints have their own budget
    assert len(list(client.customers())) == 2


def test_short_rate_window_is_waited_out(sim):
    sim.config(rate_limit_per_minute=2, rate_window_seconds=1)
    sleeps = Sleeps(real=True)
    client = client_for(sim, sleeps)
    m = Metrics(("GET /subscriptions", "429"))
    listing = client.subscriptions(page_size=10)
    assert len(list(listing)) == 25 and listing.pages == 3
    assert sleeps == [1.0]  # X-RateLimit-Reset / Retry-After: whole seconds
    assert m.delta("GET /subscriptions", "429") == 1
