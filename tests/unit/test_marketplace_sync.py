"""One sync run (services/marketplace/sync.py) with the real client against the in-process
marketplace simulator, over an in-memory repository (a fake with the real Repository's contract)."""
import threading

import pytest
import requests

from common.events import make_event
from services.marketplace import domain
from services.marketplace.client import MarketplaceClient
from services.marketplace.exceptions import RunStopped, ThrottleBudgetExhausted
from services.marketplace.sync import Pacer, SyncRun, SyncSettings
from simulators import kit
from simulators.marketplace import create_app

CRED = {"user": "sync-user", "password": "sync-pw", "subscription_key": "sync-key", "marketplace": "us"}
PREMIUM, BASIC, EXCHANGE = "CFQ7TTC0LCHC:0001:P1Y:M", "CFQ7TTC0LH18:0001:P1Y:M", "CFQ7TTC0LH16:0001:P1Y:M"
DETAIL_ROUTE = "GET /marketplace/<region>/subscriptions/<sub_id>"


def seed_doc(without=()):
    subs = [
        {"id": "5000001", "customerId": "1000001", "creationDate": "2026-01-01T10:00:00Z",
         "lines": [{"mpn": PREMIUM, "quantity": 12, "unitPrice": "21.00"}, {"mpn": BASIC, "quantity": 3}]},
        {"id": "5000002", "customerId": "1000001", "creationDate": "2026-01-02T10:00:00Z",
         "lines": [{"mpn": EXCHANGE, "quantity": 40}]},
        {"id": "5000003", "customerId": "1000002", "creationDate": "2026-01-03T10:00:00Z", "status": "hold",
         "lines": [{"mpn": PREMIUM, "quantity": 5}]},
        {"id": "5000004", "customerId": "1000002", "creationDate": "2026-01-04T10:00:00Z",
         "lines": [{"mpn": BASIC, "quantity": 7}]},
        {"id": "5000005", "customerId": "1000003", "creationDate": "2026-01-05T10:00:00Z",
         "lines": [{"mpn": BASIC, "quantity": 1}, {"mpn": EXCHANGE, "quantity": 2}]},
    ]
    return {
        "credentials": [CRED],
        "customers": [{"id": "1000001", "name": "Contoso Dental LLC", "domain": "contosodental.com"},
                      {"id": "1000002", "name": "Fabrikam Legal"}, {"id": "1000003", "name": "Tailspin Toys"}],
        "products": [{"id": "3000001", "mpn": PREMIUM, "name": "Microsoft 365 Business Premium",
                      "unitPrice": "22.00", "unitCost": "18.70"},
                     {"id": "3000002", "mpn": BASIC, "name": "Microsoft 365 Business Basic", "unitPrice": "6.00"},
                     {"id": "3000003", "mpn": EXCHANGE, "name": "Exchange Online (Plan 1)", "unitPrice": "4.00"}],
        "subscriptions": [s for s in subs if s["id"] not in without],
    }


LINES = 7  # lines in seed_doc()


class Sim:
    def __init__(self, base):
        self.base = base

    def admin(self, method, path, **kw):
        resp = requests.request(method, self.base + path, timeout=10, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp.json()

    def post(self, path, body=None):
        return self.admin("POST", path, json=body or {})

    def details_fetched(self):
        return self.admin("GET", "/_sim/requests/count")["by_route"].get(DETAIL_ROUTE, 0)


@pytest.fixture(scope="module")
def server():
    app = create_app(seed=0)
    srv = kit.serve(app, port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Sim(f"http://127.0.0.1:{srv.server_port}")
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def sim(server):
    server.post("/_sim/reset")
    server.admin("DELETE", "/_sim/faults")
    server.post("/_sim/seed", seed_doc())
    return server


class FakeRepository:
    """In memory, same contract as snapshots.Repository; events are validated against the catalog."""

    def __init__(self):
        self.customers, self.products, self.subs, self.lines = {}, {}, {}, {}
        self.quarantined, self.events, self.beats = {}, [], 0

    def add_event(self, event_type, **payload):
        self.events.append((event_type, make_event("marketplace", event_type, "t-1", **payload)))

    def of_type(self, event_type):
        return [e for t, e in self.events if t == event_type]

    def load_customers(self):
        return {cid: dict(c) for cid, c in self.customers.items()}

    def save_customers(self, records):
        for record in records:
            self.customers[str(record["id"])] = domain.customer_snapshot(record)
            self.add_event("customer_changed", customer_id=str(record["id"]), **domain.customer_snapshot(record))

    def load_products(self):
        return {mpn: dict(p) for mpn, p in self.products.items()}

    def save_products(self, items, seen_at):
        changed = 0
        for _record, snap, cost_moved in items:
            self.products[snap["mpn"]] = snap
            self.add_event("product_changed", **domain.product_event(snap))
            if cost_moved:
                rows = [dict(r) for (sid, mpn), r in sorted(self.lines.items()) if mpn == snap["mpn"]]
                for change in domain.reprice_lines(rows, snap, seen_at):
                    self.lines[(change.subscription_id, change.mpn)] = change.line
                    self.add_event("subscription_line_changed", **domain.line_event(change))
                    changed += 1
        return changed

    def load_marks(self):
        return {sid: domain.SubscriptionMark(s["last_modified"], s["detail_fetched_at"], s["unlisted_at"])
                for sid, s in self.subs.items()}

    def apply_subscription(self, sid, detail, seen_at, catalog, resolve=False):
        old = {mpn: dict(r) for (s, mpn), r in self.lines.items() if s == sid}
        rows, changes = domain.plan_subscription(old, detail, seen_at, catalog, subscription_id=sid)
        for mpn, row in rows.items():
            self.lines[(sid, mpn)] = row
        if detail is None:
            self.subs[sid].update(status="removed", unlisted_at=seen_at, detail_fetched_at=seen_at)
        else:
            self.subs[sid] = {"last_modified": detail["lastModifiedDate"], "detail_fetched_at": seen_at,
                              "unlisted_at": None, "status": detail["status"]}
        for change in changes:
            self.add_event("subscription_line_changed", **domain.line_event(change))
        if resolve:
            self.resolve("subscription", [sid])
        return changes

    def mark_unlisted(self, sid, seen_at):
        self.subs[sid]["unlisted_at"] = seen_at

    def open_quarantine(self):
        return {key for key, row in self.quarantined.items() if row["resolved"] is False}

    def quarantine(self, items):
        for item in items:
            key = (item["record_type"], str(item["record_id"]))
            row = self.quarantined.get(key)
            if row and not row["resolved"]:
                row.update(item, occurrences=row["occurrences"] + 1)
            else:
                self.quarantined[key] = {**item, "occurrences": 1, "resolved": False}

    def resolve(self, record_type, ids):
        n = 0
        for rid in ids:
            row = self.quarantined.get((record_type, str(rid)))
            if row and not row["resolved"]:
                row["resolved"] = True
                n += 1
        return n

    def beat(self, counts, force=False):
        self.beats += 1


class Sleeps:
    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)


def client_for(sim, sleep=None, settings=SyncSettings(), **changes):
    cred = {"base_url": sim.base + "/marketplace/na/", "api_user": CRED["user"], "password": CRED["password"],
            "subscription_key": CRED["subscription_key"], "marketplace": "us", **changes}
    return MarketplaceClient(cred, max_wait=settings.max_wait_seconds, read_retries=settings.read_retries,
                             backoff=0.01, sleep=sleep or Pacer(settings.wait_budget_seconds, sleep=Sleeps()))


def run(sim, repo, kind="incremental", settings=SyncSettings(), full_since=None, **kw):
    sleeps = Sleeps()
    pacer = Pacer(settings.wait_budget_seconds, sleep=sleeps)
    client = client_for(sim, sleep=pacer, settings=settings, **kw.pop("credentials", {}))
    result = SyncRun(repo, client, {"kind": kind, "full_since": full_since}, settings, **kw).execute()
    result.sleeps = sleeps.calls
    return result


def line_events(repo, since=0):
    return [e for t, e in repo.events[since:] if t == "subscription_line_changed"]


# --- the happy path ----------------------------------------------------------------------------
def test_first_run_announces_every_customer_product_and_line_once(sim):
    repo = FakeRepository()
    result = run(sim, repo)
    assert result.outcome == "ok" and result.error is None
    events = line_events(repo)
    assert len(events) == LINES
    assert len({(e["subscription_id"], e["mpn"]) for e in events}) == LINES
    assert {e["change"] for e in events} == {"new"} and {e["line_version"] for e in events} == {1}
    assert len(repo.of_type("customer_changed")) == 3 and len(repo.of_type("product_changed")) == 3
    hold = next(e for e in events if e["subscription_id"] == "5000003")
    assert hold["status"] == "hold" and hold["unit_cost"] == "18.70" and hold["unit_price"] == "22.00"
    assert result.counts == {**result.counts, "subscriptions_listed": 5, "details_fetched": 5, "lines_changed": 7,
                             "customers_changed": 3, "products_changed": 3, "quarantined": 0,
                             "subscriptions_skipped": 0}


def test_an_unchanged_marketplace_costs_no_detail_call_and_says_nothing(sim):
    repo = FakeRepository()
    run(sim, repo)
    before, seen = sim.details_fetched(), len(repo.events)
    result = run(sim, repo)
    assert result.outcome == "ok" and sim.details_fetched() == before
    assert repo.events[seen:] == []
    assert result.counts["subscriptions_skipped"] == 5 and result.counts["details_fetched"] == 0


def test_a_quantity_change_fetches_one_detail_and_announces_one_line(sim):
    repo = FakeRepository()
    run(sim, repo)
    sim.post("/_sim/subscriptions/5000001/change", {"mpn": BASIC, "quantity": 9})
    before, seen = sim.details_fetched(), len(repo.events)
    result = run(sim, repo)
    assert sim.details_fetched() - before == 1
    [event] = line_events(repo, seen)
    assert (event["subscription_id"], event["mpn"], event["change"], event["quantity"], event["previous_quantity"],
            event["line_version"]) == ("5000001", BASIC, "quantity", 9, 3, 2)
    assert result.counts["lines_changed"] == 1


def test_a_full_run_reads_every_detail_but_announces_only_changes(sim):
    repo = FakeRepository()
    run(sim, repo)
    before, seen = sim.details_fetched(), len(repo.events)
    result = run(sim, repo, kind="full")
    assert result.outcome == "ok" and sim.details_fetched() - before == 5 and line_events(repo, seen) == []


def test_a_product_cost_move_reprices_its_lines_without_detail_calls(sim):
    repo = FakeRepository()
    run(sim, repo)
    sim.post("/_sim/seed", {"products": [{"id": "3000003", "mpn": EXCHANGE, "name": "Exchange Online (Plan 1)",
                                          "unitPrice": "4.00", "unitCost": "3.00"}]})
    before, seen = sim.details_fetched(), len(repo.events)
    run(sim, repo)
    assert sim.details_fetched() == before
    repriced = line_events(repo, seen)
    assert {(e["subscription_id"], e["change"], e["unit_cost"]) for e in repriced} == \
        {("5000002", "price", "3.00"), ("5000005", "price", "3.00")}


def test_a_subscription_gone_from_the_vendor_removes_its_lines(sim):
    repo = FakeRepository()
    run(sim, repo)
    sim.post("/_sim/reset")
    sim.post("/_sim/seed", seed_doc(without=("5000005",)))
    seen = len(repo.events)
    result = run(sim, repo)
    gone = line_events(repo, seen)
    assert {(e["subscription_id"], e["mpn"], e["status"], e["quantity"]) for e in gone} == \
        {("5000005", BASIC, "removed", 0), ("5000005", EXCHANGE, "removed", 0)}
    assert result.outcome == "ok"
    before = sim.details_fetched()
    run(sim, repo)  # checked once: not fetched again every run
    assert sim.details_fetched() == before


# --- malformed records -------------------------------------------------------------------------
def test_malformed_records_are_quarantined_the_rest_syncs_and_they_resolve_when_fixed(sim):
    repo = FakeRepository()
    run(sim, repo)
    sim.post("/_sim/subscriptions/5000002/change", {"quantity": 41})  # moved, and its detail is damaged
    sim.post("/_sim/subscriptions/5000002/corrupt", {"field": "quantity", "value": "forty"})
    sim.post("/_sim/subscriptions/5000004/corrupt", {"field": "status", "value": "frozen"})  # summary damaged
    sim.post("/_sim/subscriptions/5000001/change", {"mpn": PREMIUM, "quantity": 13})  # a healthy change
    seen = len(repo.events)
    result = run(sim, repo)
    assert result.outcome == "partial" and result.counts["quarantined"] == 2
    assert repo.open_quarantine() == {("subscription", "5000002"), ("subscription", "5000004")}
    detail_row = repo.quarantined[("subscription", "5000002")]
    assert detail_row["field"] == "products[0].quantity" and "integer" in detail_row["reason"]
    assert repo.quarantined[("subscription", "5000004")]["field"] == "status"
    assert [(e["subscription_id"], e["quantity"]) for e in line_events(repo, seen)] == [("5000001", 13)]
    # a malformed summary is present, not deleted: its lines are untouched
    assert repo.lines[("5000004", BASIC)]["status"] == "active"

    again = run(sim, repo)  # still broken: same open rows, counted again
    assert again.outcome == "partial" and repo.quarantined[("subscription", "5000002")]["occurrences"] == 2

    sim.post("/_sim/subscriptions/5000002/corrupt", {"clear": True})
    sim.post("/_sim/subscriptions/5000004/corrupt", {"clear": True})
    seen = len(repo.events)
    fixed = run(sim, repo)
    assert fixed.outcome == "ok" and fixed.counts["quarantine_resolved"] == 2 and repo.open_quarantine() == set()
    assert [(e["subscription_id"], e["quantity"], e["change"]) for e in line_events(repo, seen)] == \
        [("5000002", 41, "quantity")]


def test_a_malformed_customer_is_quarantined_and_the_sync_goes_on(sim):
    sim.post("/_sim/seed", {"customers": [{"id": "1000009", "name": "Bad Co"}]})
    repo = FakeRepository()
    client = client_for(sim)
    original = client._envelope

    def damaged(body, endpoint, offset):  # what a vendor sending a nameless customer looks like
        if endpoint == "GET /customers":
            for item in body["data"]:
                if item["id"] == "1000009":
                    item["name"] = None
        return original(body, endpoint, offset)

    client._envelope = damaged
    result = SyncRun(repo, client, {"kind": "incremental"}).execute()
    assert result.outcome == "partial" and ("customer", "1000009") in repo.open_quarantine()
    assert result.counts["lines_changed"] == LINES

    fixed = SyncRun(repo, client_for(sim), {"kind": "incremental"}).execute()
    assert fixed.outcome == "ok" and fixed.counts["quarantine_resolved"] == 1 and repo.open_quarantine() == set()


def test_a_record_without_an_id_is_quarantined_as_such_and_resolved_by_a_clean_listing(sim):
    repo = FakeRepository()
    client = client_for(sim)
    original = client._envelope

    def damaged(body, endpoint, offset):
        if endpoint == "GET /products":
            body["data"][0]["id"] = None
        return original(body, endpoint, offset)

    client._envelope = damaged
    assert SyncRun(repo, client, {"kind": "incremental"}).execute().outcome == "partial"
    assert repo.open_quarantine() == {("product", "(no id)")}
    assert SyncRun(repo, client_for(sim), {"kind": "incremental"}).execute().outcome == "ok"
    assert repo.open_quarantine() == set()


# --- pacing, outages, credentials --------------------------------------------------------------
def test_a_wait_longer_than_max_wait_ends_the_run_throttled_and_the_next_run_resumes(sim):
    repo = FakeRepository()
    sim.post("/_sim/faults", {"endpoint": "^GET /marketplace/na/subscriptions/5000002$", "kind": "status",
                              "status": 429, "seconds": 120})
    result = run(sim, repo)
    assert result.outcome == "throttled" and result.retry_after == 120
    assert "rate limited" in result.error
    committed = {sid for (sid, _mpn) in repo.lines}
    assert committed and "5000002" not in committed  # what came before the throttle stays
    sim.admin("DELETE", "/_sim/faults")
    before = sim.details_fetched()
    resumed = run(sim, repo)
    assert resumed.outcome == "ok"
    assert sim.details_fetched() - before == 5 - len(committed)  # only what the first run did not do
    assert len(line_events(repo)) == LINES


def test_waits_within_the_budget_are_slept_and_beyond_it_the_run_ends_throttled(sim):
    sim.post("/_sim/faults", {"endpoint": "^GET /marketplace/na/customers$", "kind": "status", "status": 429,
                              "seconds": 30, "count": 1})
    ok = run(sim, FakeRepository(), settings=SyncSettings(wait_budget_seconds=100))
    assert ok.outcome == "ok" and sum(ok.sleeps) == 30
    sim.post("/_sim/faults", {"endpoint": "^GET /marketplace/na/customers$", "kind": "status", "status": 429,
                              "seconds": 30, "count": 3})
    result = run(sim, FakeRepository(), settings=SyncSettings(wait_budget_seconds=50))
    assert result.outcome == "throttled" and result.retry_after == 30 and "budget" in result.error


def test_a_vendor_outage_ends_the_run_failed_with_what_it_did_kept(sim):
    repo = FakeRepository()
    sim.post("/_sim/faults", {"endpoint": "^GET /marketplace/na/subscriptions$", "kind": "status", "status": 503})
    result = run(sim, repo)
    assert result.outcome == "failed" and "not answering" in result.error and "503" in result.error
    assert len(repo.of_type("customer_changed")) == 3  # customers and products were committed
    assert len(result.sleeps) == SyncSettings().read_retries  # the client retried before giving up


def test_refused_credentials_end_the_run_failed(sim):
    result = run(sim, FakeRepository(), credentials={"password": "wrong"})
    assert result.outcome == "failed" and "refused the credentials" in result.error


def test_a_stopping_service_ends_the_run_between_subscriptions(sim):
    repo = FakeRepository()
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 2

    result = run(sim, repo, should_stop=should_stop)
    assert result.outcome == "failed" and result.error.startswith("stopped")
    assert 0 < len({sid for sid, _ in repo.lines}) < 5


# --- the pacer ---------------------------------------------------------------------------------
def test_pacer_sleeps_in_steps_beats_and_counts():
    sleeps, beats = Sleeps(), []
    pacer = Pacer(100, beat=lambda: beats.append(1), sleep=sleeps, step=5)
    pacer(12)
    assert sleeps.calls == [5, 5, 2] and len(beats) == 3 and pacer.waited == 12


def test_pacer_refuses_a_wait_beyond_its_budget():
    pacer = Pacer(20, sleep=Sleeps())
    pacer(15)
    with pytest.raises(ThrottleBudgetExhausted) as err:
        pacer(10)
    assert err.value.retry_after == 10 and err.value.waited == 15


def test_pacer_stops_when_the_service_stops():
    with pytest.raises(RunStopped):
        Pacer(100, should_stop=lambda: True, sleep=Sleeps())(3)


def test_settings_from_config():
    s = SyncSettings.from_config({"SYNC_INTERVAL_MINUTES": 5, "FULL_SYNC_HOUR_UTC": 26, "SYNC_CONCURRENCY": 0,
                                  "SYNC_WAIT_BUDGET_SECONDS": ""})
    assert (s.interval_minutes, s.full_hour, s.concurrency, s.wait_budget_seconds) == (5.0, 2, 1, 600.0)
