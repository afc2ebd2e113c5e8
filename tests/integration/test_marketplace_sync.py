"""The marketplace sync over the real stack: the marketplace service syncs a tenant from the test
stack's marketplace simulator, with credentials from the gateway, and announces changes through
its outbox to RabbitMQ.

The simulator's data is shared by every credential and every test of the session: this module saves
the simulator's state, works in fresh states of its own, and puts the saved state back at the end.
Events are consumed from a queue of our own bound to `marketplace.events` (which also lets the relay
deliver `subscription_line_changed`, which has no consumer of its own yet).
"""
import datetime as dt
import uuid

import pytest
import requests
from kombu import Connection, Exchange, Queue, binding
from nameko.exceptions import RemoteError
from sqlalchemy import func, insert, select

from common.consumers import payloads_of
from common.db import Store
from common.topology import http_port
from common.vault import Vault, parse_keys
from gateway import directory
from services.marketplace import domain, schemas, snapshots
from services.marketplace import models as mp
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration

EVENT_TYPES = ("subscription_line_changed", "customer_changed", "product_changed")
DETAIL_ROUTE = "GET /marketplace/<region>/subscriptions/<sub_id>"
FINISHED = ("ok", "partial", "failed", "throttled")


class Sim:
    def __init__(self):
        self.base = f"http://127.0.0.1:{http_port('sim-marketplace')}"

    def call(self, method, path, **kw):
        resp = requests.request(method, self.base + path, timeout=60, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text[:300])
        return resp.json()

    def post(self, path, body=None):
        return self.call("POST", path, json=body or {})

    def state(self):
        return self.call("GET", "/_sim/state")

    def detail_calls(self):
        return self.call("GET", "/_sim/requests/count")["by_route"].get(DETAIL_ROUTE, 0)

    def fresh(self, credentials, **generate):
        """A state of our own: nothing but these credentials and generated data."""
        self.post("/_sim/reset")
        return self.post("/_sim/generate", {**generate, "credentials": credentials})

    def restore(self, saved, config):
        """Put back a state saved with state(): data, credentials, corruption rules, config."""
        self.post("/_sim/reset")
        self.post("/_sim/config", {k: v for k, v in config.items()})
        self.post("/_sim/seed", {
            "credentials": saved["credentials"], "customers": saved["customers"], "products": saved["products"],
            "subscriptions": [{**{k: s[k] for k in ("id", "customerId", "status", "renewalStatus", "creationDate",
                                                   "renewalDate", "lastModifiedDate")},
                               "lines": [{k: p[k] for k in ("mpn", "name", "quantity", "unitPrice")}
                                         for p in s["products"]]} for s in saved["subscriptions"]]})
        for s in saved["subscriptions"]:
            for field, value in s["corrupt"]["set"].items():
                self.post(f"/_sim/subscriptions/{s['id']}/corrupt", {"field": field, "value": value})
            for field in s["corrupt"]["drop"]:
                self.post(f"/_sim/subscriptions/{s['id']}/corrupt", {"drop_field": field})


class EventTap:
    """An exclusive queue bound to marketplace.events: what a consumer of the sync would receive."""

    def __init__(self, amqp_uri):
        self.conn = Connection(amqp_uri)
        self.channel = self.conn.channel()
        exchange = Exchange("marketplace.events", type="topic", passive=True)  # declared by the services
        self.queue = Queue(f"test.marketplace-sync.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True,
                           bindings=[binding(exchange, routing_key=k) for k in EVENT_TYPES])(self.channel)
        self.queue.declare()
        self.seen = []  # (event type, payload)

    def drain(self):
        while True:
            message = self.queue.get(no_ack=True)
            if message is None:
                return
            # the relay packs a pass's events of one type into one message (common/outbox.py)
            self.seen.extend((message.delivery_info["routing_key"], p) for p in payloads_of(message.payload))

    def events(self, tenant_id, event_type, since=0):
        self.drain()
        return [p for t, p in self.seen[since:] if t == event_type and p["tenant_id"] == tenant_id]

    def wait(self, tenant_id, event_type, count, since=0, timeout=30):
        found = wait_for(lambda: len(self.events(tenant_id, event_type, since)) >= count and
                         self.events(tenant_id, event_type, since), timeout=timeout, interval=0.2,
                         message=f"{count} {event_type} event(s)")
        return found

    def close(self):
        self.conn.release()


class Tenant:
    def __init__(self, name, user):
        self.id = f"t-mp-{name}-{uuid.uuid4().hex[:8]}"
        self.cred = {"user": f"{user}-{uuid.uuid4().hex[:6]}", "password": uuid.uuid4().hex,
                     "subscription_key": uuid.uuid4().hex, "marketplace": "us"}


def give_credentials(engines, env, tenant, sim):
    with Store(engines("gateway")).transaction() as session:
        directory.create_tenant(session, f"Marketplace sync test {tenant.id}", "autotask", tenant_id=tenant.id)
        directory.store_credentials(session, Vault(parse_keys(env["IDSYNC_FERNET_KEYS"])), tenant.id, "marketplace", {
            "base_url": f"{sim.base}/marketplace/na/", "region": "na", "api_user": tenant.cred["user"],
            "password": tenant.cred["password"], "subscription_key": tenant.cred["subscription_key"],
            "marketplace": "us"})


def sync(rpc, tenant_id, full=False, timeout=60):
    run = rpc.marketplace.sync_now(tenant_id, full=full)
    assert run["outcome"] == "queued"
    return wait_for(lambda: _finished(rpc.marketplace.sync_run(tenant_id, run["run_id"])), timeout=timeout,
                    interval=0.2, message=f"sync run {run['run_id']} to end")


def _finished(run):
    return run if run["outcome"] in FINISHED else None


def outbox_counts(engines, tenant_id):
    o = mp.outbox.c
    with engines("marketplace").connect() as conn:
        rows = conn.execute(select(o.event_type, func.count(), func.count(o.sent_at))
                            .where(o.tenant_id == tenant_id).group_by(o.event_type)).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def lines_of(state):
    return {(s["id"], p["mpn"]): p for s in state["subscriptions"] for p in s["products"]}


@pytest.fixture(scope="module")
def sim(stack):
    sim = Sim()
    saved, config = sim.state(), sim.call("GET", "/_sim/config")
    sim.post("/_sim/config", {"rate_limit_per_minute": 100000})  # tests are not about the vendor's pace
    yield sim
    sim.restore(saved, config)


@pytest.fixture(scope="module")
def rpc(stack):
    proxy = stack.rpc()
    yield proxy.start()
    proxy.stop()


@pytest.fixture(scope="module")
def tap(stack):
    tap = EventTap(stack.amqp_uri)
    yield tap
    tap.close()


@pytest.fixture(scope="module")
def world(sim, rpc, tap, engines, env):
    """A small marketplace for tenant A; tenant A synced once (the first test checks that sync)."""
    tenant = Tenant("a", "alpha-api")
    counts = sim.fresh(tenant.cred, seed=11, customers=8, lines=30)
    give_credentials(engines, env, tenant, sim)
    first = sync(rpc, tenant.id)
    return {"tenant": tenant, "first_run": first, "counts": counts, "state": sim.state()}


def test_first_sync_announces_every_line_once(world, tap, rpc, engines):
    tenant, run, state = world["tenant"], world["first_run"], world["state"]
    expected = lines_of(state)
    assert run["outcome"] == "ok", run
    assert run["counts"]["subscriptions_listed"] == len(state["subscriptions"])
    assert run["counts"]["details_fetched"] == len(state["subscriptions"])
    assert run["counts"]["lines_changed"] == len(expected) == world["counts"]["lines"]

    events = tap.wait(tenant.id, "subscription_line_changed", len(expected))
    assert sorted((e["subscription_id"], e["mpn"]) for e in events) == sorted(expected)
    assert {e["change"] for e in events} == {"new"} and {e["line_version"] for e in events} == {1}
    for e in events:
        vendor = expected[(e["subscription_id"], e["mpn"])]
        assert e["quantity"] == vendor["quantity"] and e["unit_price"] == vendor["unitPrice"]
    assert len(tap.wait(tenant.id, "customer_changed", len(state["customers"]))) == len(state["customers"])

    # every event row committed with the snapshot, and relayed (sent_at set)
    n = len(expected)
    wait_for(lambda: outbox_counts(engines, tenant.id).get("subscription_line_changed") == (n, n),
             message="every line event relayed")
    lines = rpc.marketplace.subscription_lines(tenant.id, 1, 200)
    assert lines["total"] == n
    assert rpc.marketplace.customers(tenant.id, 1, 200)["total"] == len(state["customers"])


def test_a_quantity_change_is_one_event_for_that_line_only(world, sim, tap, rpc):
    tenant, state = world["tenant"], world["state"]
    sub = next(s for s in state["subscriptions"] if len(s["products"]) >= 2 and s["status"] == "active")
    line = sub["products"][0]
    since = len(tap.seen)
    sim.post(f"/_sim/subscriptions/{sub['id']}/change", {"mpn": line["mpn"], "quantity": line["quantity"] + 5})
    before = sim.detail_calls()
    run = sync(rpc, tenant.id)
    assert run["outcome"] == "ok" and run["counts"]["details_fetched"] == 1 and run["counts"]["lines_changed"] == 1
    assert sim.detail_calls() - before == 1
    [event] = tap.wait(tenant.id, "subscription_line_changed", 1, since=since)
    assert (event["subscription_id"], event["mpn"], event["change"], event["quantity"], event["previous_quantity"],
            event["line_version"]) == (sub["id"], line["mpn"], "quantity", line["quantity"] + 5, line["quantity"], 2)
    # and nothing for the other line of that subscription, or any other line
    assert len(tap.events(tenant.id, "subscription_line_changed", since)) == 1
    search = rpc.marketplace.subscription_lines(tenant.id, 1, 50, search=sub["id"])
    assert {(i["mpn"], i["quantity"]) for i in search["items"]} >= {(line["mpn"], line["quantity"] + 5)}


def test_a_second_change_stamped_in_the_same_second_is_not_missed(world, sim, tap, rpc):
    """lastModifiedDate has whole seconds: two orders in one second give one stamp. The stamp is set a
    minute ahead here (a vendor clock ahead of ours), so the run that follows each change is always
    within SAME_STAMP_SECONDS of it, however slow this machine is."""
    tenant, state = world["tenant"], world["state"]
    sub = next(s for s in state["subscriptions"] if len(s["products"]) >= 2 and s["status"] == "active")
    line = sub["products"][1]
    stamp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)).replace(microsecond=0).isoformat()
    since = len(tap.seen)
    sim.post(f"/_sim/subscriptions/{sub['id']}/change", {"mpn": line["mpn"], "quantity": 41, "at": stamp})
    assert sync(rpc, tenant.id)["counts"]["lines_changed"] == 1
    sim.post(f"/_sim/subscriptions/{sub['id']}/change", {"mpn": line["mpn"], "quantity": 42, "at": stamp})
    run = sync(rpc, tenant.id)
    assert run["counts"]["details_fetched"] == 1 and run["counts"]["lines_changed"] == 1, run
    events = tap.wait(tenant.id, "subscription_line_changed", 2, since=since)
    assert [e["quantity"] for e in events if e["mpn"] == line["mpn"]] == [41, 42]


def test_a_corrupted_subscription_is_quarantined_while_the_others_sync_and_resolves_when_fixed(world, sim, tap, rpc):
    tenant, state = world["tenant"], world["state"]
    singles = [s for s in state["subscriptions"] if len(s["products"]) == 1 and s["status"] == "active"]
    broken, healthy = singles[0], singles[1]
    since = len(tap.seen)
    sim.post(f"/_sim/subscriptions/{broken['id']}/change", {"quantity": broken["products"][0]["quantity"] + 1})
    sim.post(f"/_sim/subscriptions/{broken['id']}/corrupt", {"field": "quantity", "value": "lots"})
    sim.post(f"/_sim/subscriptions/{healthy['id']}/change", {"quantity": healthy["products"][0]["quantity"] + 2})

    run = sync(rpc, tenant.id)
    assert run["outcome"] == "partial" and run["counts"]["quarantined"] == 1, run
    [row] = rpc.marketplace.quarantine(tenant.id)["items"]
    assert (row["record_type"], row["record_id"], row["field"]) == \
        ("subscription", broken["id"], "products[0].quantity")
    assert "integer" in row["reason"] and row["resolved_at"] is None and row["run_id"] == run["run_id"]
    events = tap.wait(tenant.id, "subscription_line_changed", 1, since=since)
    assert [e["subscription_id"] for e in events] == [healthy["id"]]

    sim.post(f"/_sim/subscriptions/{broken['id']}/corrupt", {"clear": True})
    since = len(tap.seen)
    fixed = sync(rpc, tenant.id)
    assert fixed["outcome"] == "ok" and fixed["counts"]["quarantine_resolved"] == 1, fixed
    assert rpc.marketplace.quarantine(tenant.id)["total"] == 0
    [resolved] = rpc.marketplace.quarantine(tenant.id, include_resolved=True)["items"]
    assert resolved["record_id"] == broken["id"] and resolved["resolved_at"] is not None
    [event] = tap.wait(tenant.id, "subscription_line_changed", 1, since=since)
    assert (event["subscription_id"], event["quantity"]) == (broken["id"], broken["products"][0]["quantity"] + 1)


def test_another_tenant_sees_none_of_it(world, rpc):
    tenant, other = world["tenant"], f"t-mp-other-{uuid.uuid4().hex[:8]}"
    assert rpc.marketplace.sync_runs(tenant.id)["total"] >= 3
    assert rpc.marketplace.sync_runs(other)["total"] == 0
    assert rpc.marketplace.quarantine(other, include_resolved=True)["total"] == 0
    assert rpc.marketplace.subscription_lines(other)["total"] == 0
    assert rpc.marketplace.customers(other)["total"] == 0
    assert rpc.marketplace.products(other)["total"] == 0
    for run_id in (world["first_run"]["run_id"], "not-a-run"):
        with pytest.raises(RemoteError) as err:
            rpc.marketplace.sync_run(other, run_id)
        assert err.value.exc_type == "NotFound"
    assert rpc.marketplace.sync_run(tenant.id, world["first_run"]["run_id"])["outcome"] == "ok"
    with pytest.raises(RemoteError) as err:
        rpc.marketplace.subscription_lines(tenant.id, 1, 50, status="frozen")
    assert err.value.exc_type == "BadRequest"


def baseline(engines, tenant_id, state, seen_at):
    """Our snapshot in step with the simulator, written directly: what 10,000 earlier detail reads
    (about three hours at the vendor's 60 a minute) would have left behind."""
    catalog = {}
    for p in state["products"]:
        snap = domain.product_snapshot(schemas.validate(schemas.PRODUCT, p))
        catalog[snap["mpn"]] = snap
    subs, lines = [], []
    for raw in state["subscriptions"]:
        detail = schemas.validate(schemas.SUBSCRIPTION_DETAIL, raw)
        subs.append({"tenant_id": tenant_id, "subscription_id": detail["id"],
                     **snapshots.subscription_values(detail, seen_at)})
        rows, _ = domain.plan_subscription({}, detail, seen_at, catalog)
        lines.extend({"tenant_id": tenant_id, **{k: r[k] for k in snapshots.LINE_COLUMNS}} for r in rows.values())
    with engines("marketplace").begin() as conn:
        conn.execute(insert(mp.subscriptions), subs)
        conn.execute(insert(mp.subscription_lines), lines)
    return len(lines)


def test_ten_thousand_subscriptions_with_50_changed_cost_50_detail_calls(sim, tap, rpc, engines, env):
    tenant = Tenant("big", "bravo-api")
    counts = sim.fresh(tenant.cred, seed=5, customers=300, lines=16888)
    assert counts["subscriptions"] == 10_000
    state = sim.state()
    n_lines = baseline(engines, tenant.id, state, dt.datetime.now(dt.timezone.utc))
    changed = state["subscriptions"][::200]
    assert len(changed) == 50
    for s in changed:
        line = s["products"][-1]
        sim.post(f"/_sim/subscriptions/{s['id']}/change", {"mpn": line["mpn"], "quantity": line["quantity"] + 1})
    since, before = len(tap.seen), sim.detail_calls()

    give_credentials(engines, env, tenant, sim)
    run = sync(rpc, tenant.id, timeout=120)
    # the scheduler may have queued the tenant's first run itself a moment before sync_now: wait for all
    wait_for(lambda: all(r["outcome"] in FINISHED for r in rpc.marketplace.sync_runs(tenant.id)["items"]),
             timeout=60, message="every run of the tenant to end")
    assert run["outcome"] == "ok", run
    assert run["counts"]["subscriptions_listed"] == 10_000
    assert sim.detail_calls() - before == 50
    runs = rpc.marketplace.sync_runs(tenant.id)["items"]
    assert sum(r["counts"].get("details_fetched", 0) for r in runs) == 50
    events = tap.wait(tenant.id, "subscription_line_changed", 50, since=since, timeout=60)
    assert len(events) == 50 and {e["change"] for e in events} == {"quantity"}
    assert {e["subscription_id"] for e in events} == {s["id"] for s in changed}
    assert rpc.marketplace.subscription_lines(tenant.id, 1, 1)["total"] == n_lines


def test_runs_queue_once_per_tenant_the_scheduler_queues_due_tenants_and_abandoned_runs_end(rpc, engines):
    from services.marketplace import sync as mp_sync

    store = Store(engines("marketplace"))
    lonely, newcomer, crashed = (f"t-mp-{n}-{uuid.uuid4().hex[:8]}" for n in ("lonely", "new", "crashed"))
    first = rpc.marketplace.sync_now(lonely)
    again = rpc.marketplace.sync_now(lonely, full=True)
    if again["run_id"] == first["run_id"]:  # unless the service claimed it meanwhile: still waiting, now full
        assert again["kind"] == "full"
    # the service claims it and cannot start it: no credentials for that tenant at the gateway
    ended = wait_for(lambda: _finished(rpc.marketplace.sync_run(lonely, first["run_id"])), timeout=20,
                     message="the run without credentials to end")
    assert ended["outcome"] == "failed" and "no marketplace credentials" in ended["error"]

    queued = mp_sync.schedule_due_runs(store, [lonely, newcomer], mp_sync.SyncSettings())
    assert [(r["tenant_id"], r["kind"], r["trigger"]) for r in queued] == [(newcomer, "incremental", "schedule")]
    assert mp_sync.schedule_due_runs(store, [lonely, newcomer], mp_sync.SyncSettings()) == []

    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
    with engines("marketplace").begin() as conn:
        run_id = conn.execute(insert(mp.sync_runs).values(
            tenant_id=crashed, kind="incremental", outcome="running", queued_at=stale, started_at=stale,
            heartbeat_at=stale).returning(mp.sync_runs.c.id)).scalar_one()
    abandoned = wait_for(lambda: _finished(rpc.marketplace.sync_run(crashed, run_id)), timeout=20,
                         message="the abandoned run to be ended")
    assert abandoned["outcome"] == "failed" and abandoned["error"].startswith("abandoned")
