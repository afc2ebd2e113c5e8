"""Posting to ConnectWise over real RabbitMQ, PostgreSQL and the ConnectWise simulator, with two
replicas of the connectwise service consuming one queue.

Scenarios: first link of a new line, increase, decrease, cancel, price change, same-day collapse,
a line edited by hand in ConnectWise (held, then overwritten on retry), the request count of 200
changed lines, and a fault run (429 on 30 % of calls, 5xx on 10 %, dropped responses after the write
on 5 %, one replica SIGKILLed mid-run) after which the simulator equals the desired state and its
write log shows no operation applied twice.
"""
import collections
import random
import time

import pytest
import requests
from sqlalchemy import func, select

from services.connectwise import models as m
from services.connectwise.client import ConnectWiseClient
from tests.support import infra
from tests.support.connectwise_posting import (ConnectWiseTenant, Replicas, applied_operations, ledger_operations,
                                               next_month, sim, today)

pytestmark = pytest.mark.integration

OPEN = ("planned", "posting", "failed")
REPLICA_ENV = {
    "IDSYNC_POSTING_SETTLE": "0.4",
    "IDSYNC_POSTING_MAX_DELAY": "5",
    "IDSYNC_POSTING_POLL": "0.2",
    "IDSYNC_POSTING_LEASE": "12",        # a SIGKILLed replica's lines are taken over after 12 s
    "IDSYNC_CONNECTWISE_SLOT_WAIT": "2",
    "IDSYNC_CONNECTWISE_TIMEOUT": "[1, 4]",
    "IDSYNC_POSTING_MAX_ATTEMPTS": "12",
    "IDSYNC_POSTING_BACKOFF": "[0.2, 2]",
    "IDSYNC_POSTING_SETTINGS_TTL": "0.5",
}
ADDITIONS = r"^(GET|POST|PATCH) /v4_6_release/apis/3\.0/finance/agreements/\d+/additions"


@pytest.fixture(scope="module")
def replicas(stack, env):
    """Two connectwise replicas of our own (test tuning) instead of the stack's one."""
    infra.stack(env, "down", "connectwise")
    group = Replicas(env, REPLICA_ENV, base_port=8795 + int(env["IDSYNC_PORT_OFFSET"]))
    try:
        group.start("connectwise-r1")
        group.start("connectwise-r2")
        group.wait_healthy()
        yield group
    finally:
        group.stop_all()
        infra.stack(env, "up", "connectwise", "--no-seed")


@pytest.fixture
def tenant_factory(env, engines, stack):
    def make(**kw):
        return ConnectWiseTenant(env, engines("gateway"), stack.amqp_uri, **kw)
    return make


def converged(engine, tenant):
    g, led = m.posting_groups, m.postings
    with engine.connect() as conn:
        groups = {(int(r.contract_id), int(r.service_id)): r for r in conn.execute(
            select(g).where(g.c.tenant_id == tenant.tenant_id))}
        open_rows = conn.execute(select(func.count()).select_from(led).where(
            led.c.tenant_id == tenant.tenant_id, led.c.state.in_(OPEN))).scalar_one()
    for key, version in tenant.versions.items():
        row = groups.get(key)
        if row is None or row.desired_version != version:
            return False
    busy = [k for k, r in groups.items() if r.due_at is not None or r.lease_owner is not None]
    return not busy and open_rows == 0


def wait_converged(engine, tenant, timeout=60.0):
    infra.wait_for(lambda: converged(engine, tenant), timeout=timeout, interval=0.3,
                   message=f"tenant {tenant.tenant_id} in step with the desired state")


def ledger_rows(engine, tenant, *states):
    led = m.postings
    query = select(led).where(led.c.tenant_id == tenant.tenant_id)
    if states:
        query = query.where(led.c.state.in_(states))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(led.c.id))]


def outbox_events(engine, tenant, event_type):
    with engine.connect() as conn:
        return [r.payload for r in conn.execute(select(m.outbox.c.payload).where(
            m.outbox.c.tenant_id == tenant.tenant_id, m.outbox.c.event_type == event_type))]


def assert_applied_once(engine, tenant, by_hand=()):
    """Every applied write in the simulator's log is one posted ledger row, and vice versa."""
    applied = applied_operations(tenant.writes()) - collections.Counter(by_hand)
    posted = ledger_operations(ledger_rows(engine, tenant, "posted"))
    assert applied == posted, (f"write log and ledger differ: only applied {applied - posted}, "
                               f"only in ledger {posted - applied}")
    assert max(applied.values(), default=1) == 1, f"an operation applied twice: {applied}"
    return applied


# --- scenarios ---------------------------------------------------------------------------------------
def test_posting_scenarios(replicas, tenant_factory, engines, stack):
    t = tenant_factory(agreements=2, products=4, lines={(0, 1): 10, (0, 2): 10, (1, 0): 8, (1, 1): 10, (1, 2): 10})
    (a0, a1), p = t.agreement_ids, t.product_ids
    day, nm = today(), next_month()
    before = t.state()
    ids = {(a, pr): t.additions(before, a, pr)[0]["id"] for a, pr in
           [(a0, p[1]), (a0, p[2]), (a1, p[0]), (a1, p[1]), (a1, p[2])]}
    pub = t.publisher()
    t.desire(a0, p[0], 5, publisher=pub)                      # first link of a new line
    t.desire(a0, p[1], 14, publisher=pub)                     # increase, from today
    t.desire(a0, p[2], 6, day=nm, publisher=pub)              # decrease, from the next period
    t.desire(a1, p[0], 0, day=nm, publisher=pub)              # cancel, from the next period
    t.desire(a1, p[1], 10, price="22.50", publisher=pub)      # price change only
    t.desire(a1, p[2], 12, publisher=pub)                     # two changes on one day ...
    t.desire(a1, p[2], 15, publisher=pub)                     # ... collapse into one PATCH
    engine = engines("connectwise")
    wait_converged(engine, t)

    st = t.state()
    new = t.additions(st, a0, p[0])
    assert len(new) == 1 and new[0]["billCustomer"] == "Billable" and new[0]["effectiveDate"][:10] == day.isoformat()
    assert (float(new[0]["unitPrice"]), float(new[0]["unitCost"])) == (20.0, 17.0)
    assert t.quantity(st, a0, p[0]) == 5
    assert t.quantity(st, a0, p[1]) == 14
    assert t.quantity(st, a0, p[2]) == 10 and t.quantity(st, a0, p[2], nm) == 6
    assert t.quantity(st, a1, p[0]) == 8 and t.quantity(st, a1, p[0], nm) == 0
    assert float(t.additions(st, a1, p[1])[0]["unitPrice"]) == 22.5 and t.quantity(st, a1, p[1]) == 10
    assert t.quantity(st, a1, p[2]) == 15

    applied = assert_applied_once(engine, t)
    iso, niso = day.isoformat(), nm.isoformat()
    assert applied == collections.Counter({
        ("add_addition", a0, p[0], (5, iso, None)): 1,
        ("quantity", a0, ids[(a0, p[1])], 14): 1,
        ("cancel", a0, ids[(a0, p[2])], niso): 1, ("add_addition", a0, p[2], (6, niso, None)): 1,
        ("cancel", a1, ids[(a1, p[0])], niso): 1,
        ("price", a1, ids[(a1, p[1])], "22.50"): 1,
        ("quantity", a1, ids[(a1, p[2])], 15): 1})

    rows = ledger_rows(engine, t)
    assert {r["state"] for r in rows} == {"posted"} and len(rows) == 7
    assert len({r["idempotency_key"] for r in rows}) == 7
    posted_events = outbox_events(engine, t, "line_posted")
    assert sorted(e["idempotency_key"] for e in posted_events) == sorted(r["idempotency_key"] for r in rows)
    cancel = [e for e in posted_events if e["contract_id"] == str(a1) and e["service_id"] == str(p[0])][0]
    assert (cancel["quantity_before"], cancel["quantity_after"], cancel["effective_date"]) == (8, 0, niso)

    with stack.rpc() as rpc:
        page = rpc.connectwise.ledger(t.tenant_id, 1, 5)
        assert (page["total"], page["pages"], len(page["items"])) == (7, 2, 5)
        assert {"id", "idempotency_key", "contract_id", "service_id", "operation", "state", "effective_date",
                "quantity_before", "quantity_after", "unit_change", "unit_price", "attempts", "vendor_item_id",
                "vendor_message", "posted_at"} <= set(page["items"][0])
        only = rpc.connectwise.ledger(t.tenant_id, 1, 50, state="posted", contract_id=str(a1))
        assert only["total"] == 3 and all(i["contract_id"] == str(a1) for i in only["items"])
        assert rpc.connectwise.ledger("another-tenant", 1, 50)["total"] == 0
        assert rpc.connectwise.failures(t.tenant_id, 1, 50)["total"] == 0
        status = rpc.connectwise.posting_status(t.tenant_id)
        assert status["lines"]["in_sync"] == 6 and status["budget"]["limit"] == 400
        assert status["budget"]["window_seconds"] == 60 and 0 < status["budget"]["used"] < 40
        assert rpc.connectwise.test_connection(t.tenant_id)["ok"] is True   # still there

    texts = [replicas.metrics(name) for name in replicas.alive()]

    def metric(name, **labels):
        return sum(infra.metric_value(text, name, **labels) for text in texts)
    assert metric("postings_total", psa="connectwise", result="posted") >= 7
    assert metric("psa_requests_total", psa="connectwise", endpoint="PATCH finance/agreements/{id}/additions/{id}",
                  status="200") >= 4
    assert metric("psa_requests_total", psa="connectwise", endpoint="GET finance/agreements/{id}/additions",
                  status="200") >= 2
    assert metric("change_to_posted_seconds_count", psa="connectwise") >= 6
    assert any(f'psa_budget_remaining{{psa="connectwise",tenant_id="{t.tenant_id}"}}' in text for text in texts)


def test_the_nightly_reconciliation_finds_an_addition_edited_by_hand(replicas, tenant_factory, engines, stack):
    t = tenant_factory(agreements=2, products=1, lines={(0, 0): 10, (1, 0): 4})
    (a0, a1), p = t.agreement_ids, t.product_ids[0]
    engine = engines("connectwise")
    t.desire(a0, p, 12)
    t.desire(a1, p, 6)
    wait_converged(engine, t)
    posted = len(ledger_rows(engine, t, "posted"))
    addition = t.additions(t.state(), a0, p)[0]["id"]
    ConnectWiseClient(t.credentials()).update_addition(a0, addition, quantity=15)   # by hand; nothing else moves

    with stack.rpc() as rpc:
        assert rpc.connectwise.reconcile_now(t.tenant_id)["lines"] == 2
    held = infra.wait_for(lambda: ledger_rows(engine, t, "held"), timeout=30, message="the edit found and held")
    wait_converged(engine, t)
    assert [r["contract_id"] for r in held] == [str(a0)]
    assert "edited in the PSA" in held[0]["vendor_message"]
    assert len(ledger_rows(engine, t, "posted")) == posted
    st = t.state()
    assert t.quantity(st, a0, p) == 15 and t.quantity(st, a1, p) == 6


def test_line_edited_by_hand_is_held_then_overwritten_on_retry(replicas, tenant_factory, engines, stack):
    t = tenant_factory(agreements=1, products=1, lines={(0, 0): 10})
    a, p = t.agreement_ids[0], t.product_ids[0]
    engine = engines("connectwise")
    t.desire(a, p, 12)
    wait_converged(engine, t)
    st = t.state()
    assert t.quantity(st, a, p) == 12
    addition = t.additions(st, a, p)[0]["id"]

    # someone sets the addition to 15 in ConnectWise by hand; then the marketplace says 13
    ConnectWiseClient(t.credentials()).update_addition(a, addition, quantity=15)
    t.desire(a, p, 13)
    infra.wait_for(lambda: ledger_rows(engine, t, "held"), timeout=30, message="the edited line held")
    wait_converged(engine, t)
    assert t.quantity(t.state(), a, p) == 15                    # nothing overwritten while held

    with stack.rpc() as rpc:
        failures = rpc.connectwise.failures(t.tenant_id, 1, 50)
        assert failures["total"] == 1
        held = failures["items"][0]
        assert held["state"] == "held" and "edited in the PSA" in held["vendor_message"]
        assert "15" in held["vendor_message"] and "12" in held["vendor_message"]
        assert (held["quantity_before"], held["quantity_after"]) == (15, 13)
        events = outbox_events(engine, t, "posting_failed")
        assert [e["operation"] for e in events] == ["edited_in_psa"] and events[0]["dead"] is False
        assert rpc.connectwise.retry(t.tenant_id, [held["id"]]) == {"retried": 1}
        assert rpc.connectwise.retry(t.tenant_id, [held["id"]]) == {"retried": 0}
    infra.wait_for(lambda: converged(engine, t) and t.quantity(t.state(), a, p) == 13, timeout=30,
                   message="the held line overwritten after retry")
    assert_applied_once(engine, t, by_hand=[("quantity", a, addition, 15)])
    rows = ledger_rows(engine, t)
    assert [r["state"] for r in rows] == ["posted", "superseded", "posted"]
    assert rows[-1]["quantity_after"] == 13


def test_changed_lines_cost_one_write_each_plus_one_read_per_agreement(replicas, tenant_factory, engines):
    t = tenant_factory(agreements=50, products=4, lines={(i, j): 10 for i in range(50) for j in range(4)})
    engine = engines("connectwise")
    before = t.requests_by_endpoint()
    pub = t.publisher()
    rng = random.Random(6)
    started = time.time()
    for a in t.agreement_ids:
        for p in t.product_ids:
            t.desire(a, p, 10 + rng.randint(1, 5), publisher=pub)
    wait_converged(engine, t, timeout=60)
    elapsed = time.time() - started
    after = t.requests_by_endpoint()
    delta = {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}
    writes = sum(n for k, n in delta.items() if not k.startswith("GET"))
    reads = sum(n for k, n in delta.items() if k.startswith("GET"))
    print(f"\n200 changed lines on 50 agreements: {writes} writes, {reads} reads, {elapsed:.1f}s to post")
    assert writes == 200
    assert reads <= 100, delta                 # ideal: one additions read per agreement per batch
    st = t.state()
    assert all(t.quantity(st, a, p) > 10 for a in t.agreement_ids for p in t.product_ids)


# --- chaos: faults and a replica SIGKILLed mid-run --------------------------------------------
def test_faults_and_a_killed_replica_still_post_everything_exactly_once(replicas, tenant_factory, engines, stack):
    rng = random.Random(11)
    agreements, products = 6, 5
    lines = {(i, j): rng.randint(1, 20) for i in range(agreements) for j in range(products) if rng.random() < 0.6}
    t = tenant_factory(agreements=agreements, products=products, lines=lines)
    engine = engines("connectwise")
    nm = next_month()
    want, prices = {}, {}
    mine = "(" + "|".join(str(a) for a in t.agreement_ids) + ")"
    api = rf"^(GET|POST|PATCH) /v4_6_release/apis/3\.0/finance/agreements/{mine}/additions"
    rule_ids = []
    for rule in ({"endpoint": api, "kind": "status", "status": 429, "rate": 0.3, "seconds": 1},
                 {"endpoint": api, "kind": "status", "status": 503, "rate": 0.1},
                 {"endpoint": rf"^(POST|PATCH) /v4_6_release/apis/3\.0/finance/agreements/{mine}/additions",
                  "kind": "drop_after_write", "rate": 0.05}):
        r = requests.post(sim("/_sim/faults"), json=rule, timeout=10)
        assert r.status_code == 201
        rule_ids.append(r.json()["id"])
    started = time.time()
    dead = []
    try:
        pub = t.publisher()
        pairs = [(a, p) for a in t.agreement_ids for p in t.product_ids]
        for a, p in pairs:                                     # round 1: every line changes
            qty = rng.choice([0, 3, 7, 12, 18, 25])
            day = nm if rng.random() < 0.3 else today()        # some decreases/cancels from next period
            want[(a, p)] = (qty, day)
            prices[(a, p)] = rng.choice(["20.00", "20.00", "24.90"])
            t.desire(a, p, qty, day=day, price=prices[(a, p)], publisher=pub)
        victim_name, *survivors = replicas.alive()
        victim = f":{replicas.pid(victim_name)}:"

        def leased_by_victim():
            g = m.posting_groups
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(g).where(
                    g.c.tenant_id == t.tenant_id, g.c.lease_owner.contains(victim))).scalar_one()
        held_by_victim = infra.wait_for(lambda: time.time() - started > 2 and leased_by_victim(), timeout=30,
                                        interval=0.05, message="the victim working on the tenant's lines")
        replicas.sigkill(victim_name)                          # mid-run: leases held, sends in flight
        killed_at = time.time()
        for a, p in rng.sample(pairs, len(pairs) // 2):        # round 2 on the survivor
            qty = rng.choice([0, 2, 9, 14, 30])
            want[(a, p)] = (qty, today())
            t.desire(a, p, qty, price=prices[(a, p)], publisher=pub)
        try:
            wait_converged(engine, t, timeout=90)
        finally:
            requests.delete(sim("/_sim/faults"), timeout=10)
        dead = ledger_rows(engine, t, "dead")
        if dead:
            with stack.rpc() as rpc:
                assert rpc.connectwise.retry(t.tenant_id, [r["id"] for r in dead])["retried"] == len(dead)
            wait_converged(engine, t, timeout=30)
    finally:
        requests.delete(sim("/_sim/faults"), timeout=10)
    elapsed = time.time() - started

    st = t.state()
    wrong = {}
    for (a, p), (qty, day) in want.items():
        for check in {day, nm}:
            expected = qty if check >= day else None
            if expected is None:
                continue
            got = t.quantity(st, a, p, check)
            if got != expected:
                wrong[(a, p, check.isoformat())] = (got, expected)
        live = [x for x in t.additions(st, a, p) if x["cancelledDate"] is None]
        if qty > 0 and live:
            assert f"{float(live[-1]['unitPrice']):.2f}" == prices[(a, p)], (a, p, live)
    assert not wrong, f"ConnectWise differs from the desired state (psa, desired): {wrong}"
    assert not ledger_rows(engine, t, "held"), "a fault was mistaken for an edit in the PSA"
    applied = assert_applied_once(engine, t)
    dropped = [w for w in t.writes() if w["dropped"]]
    confirmed = [r for r in ledger_rows(engine, t, "posted") if (r["vendor_message"] or "").startswith("applied")]
    print(f"\nchaos: {len(want)} lines, {sum(applied.values())} writes applied once each, {len(dropped)} dropped "
          f"answers ({len(confirmed)} confirmed by re-reading), {len(dead)} dead then retried; "
          f"{elapsed:.1f}s; {victim_name} killed holding {held_by_victim} leases, converged "
          f"{time.time() - killed_at:.1f}s later")
    assert dropped, "the fault run dropped no answer"
    assert replicas.alive() == survivors and len(survivors) == 1
