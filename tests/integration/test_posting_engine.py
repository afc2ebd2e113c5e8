"""The posting kit's engine (common/posting/engine.py) on real PostgreSQL, driven in this process
with an in-memory PSA, for what only a failure between two of its transactions shows.

The tables live in a schema of their own (made by the database owner, dropped at the end), so the
stack's PSA services never claim these lines.
"""
import datetime as dt
import uuid

import pytest
from sqlalchemy import MetaData, create_engine, insert, select, text, update

from common import dbsetup
from common.db import Store
from common.tables import add_messaging_tables
from common.outbox import Outbox
from common.posting import schedule, states
from common.posting.engine import PlannedOp, Plan, Poster, PsaAdapter
from common.posting.tables import posting_tables

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


class OneLinePsa(PsaAdapter):
    """A PSA with one contract line whose units are a plain number (a real class, not a mock): it
    plans like the real adapters - a fresh read resolves unknown writes, a line that differs from
    both what we last posted and what is wanted is edited by hand."""

    psa = "autotask"

    def __init__(self, units):
        self.units = units
        self.sent = []

    def client(self, tenant_id):
        return self

    def read(self, client, works):
        return {w.key: self.units for w in works}

    def plan(self, work, units):
        want = int(work.desired[-1]["quantity"])
        plan = Plan(resolved={u["id"]: (units == u["quantity_after"], None) for u in work.unknown})
        confirmed = [u for u in work.unknown if plan.resolved[u["id"]][0]]
        baseline = confirmed[-1]["quantity_after"] if confirmed else schedule.step_at(work.expected, TODAY)
        if baseline is not None and units not in (baseline, want):
            plan.edited = f"the PSA shows {units}, we last posted {baseline}, the marketplace says {want}"
        plan.expected = [[TODAY.isoformat(), units]]
        if units != want:
            plan.ops = [PlannedOp("adjust", TODAY, quantity_before=units, quantity_after=want,
                                  unit_change=want - units, expected_after=[[TODAY.isoformat(), want]])]
        return plan

    def execute(self, client, work, op):
        self.sent.append((op.quantity_before, op.quantity_after))
        self.units = op.quantity_after
        return None

    def edited_in_psa(self, tenant_id):
        return "hold"


class ReleaseFailsOnce(Poster):
    """PostgreSQL goes away just before the line is released (what chaos seed 1003 did)."""

    failed = False

    def release(self, work, outcome):
        if not self.failed:
            self.failed = True
            raise ConnectionError("server closed the connection unexpectedly")
        super().release(work, outcome)


@pytest.fixture(scope="module")
def tables(env):
    schema = f"engine_test_{uuid.uuid4().hex[:8]}"
    owner = create_engine(dbsetup.owner_url(env["IDSYNC_DB_NAME"]), pool_size=2,
                          connect_args={"options": f"-c search_path={schema}"})
    metadata = MetaData()
    outbox, _ = add_messaging_tables(metadata)
    posting = posting_tables(metadata)
    with owner.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        metadata.create_all(conn)
    yield owner, posting, outbox
    with owner.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    owner.dispose()


def a_line_with_a_write_of_unknown_outcome(engine, posting, tenant, before, after):
    """The line wanted ``after``; our write of it was sent and its answer lost (row `posting`)."""
    with engine.begin() as conn:
        conn.execute(insert(posting.groups).values(
            tenant_id=tenant, contract_id="C1", service_id="S1",
            desired=[{"date": TODAY.isoformat(), "quantity": after, "unit_price": "5", "unit_cost": "3"}],
            desired_version=2, pending_from=TODAY, expected=[[TODAY.isoformat(), before]], seq=2,
            due_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1), status=states.PENDING))
        conn.execute(insert(posting.ledger).values(
            tenant_id=tenant, contract_id="C1", service_id="S1", idempotency_key=uuid.uuid4().hex,
            operation="adjust", state=states.POSTING, effective_date=TODAY, quantity_before=before,
            quantity_after=after, unit_change=after - before, desired_version=2, attempts=1,
            outcome_unknown=True))


def poster(cls, engine, posting, outbox, adapter):
    return cls(psa="autotask", tables=posting, store=Store(engine), outbox=Outbox("autotask", outbox),
               adapter=adapter, settle_seconds=0, lease_seconds=30)


def test_a_confirmed_write_moves_the_baseline_even_when_the_release_fails(tables):
    engine, posting, outbox = tables
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    a_line_with_a_write_of_unknown_outcome(engine, posting, tenant, before=39, after=41)
    psa = OneLinePsa(units=41)          # the lost answer's write did apply

    poster(ReleaseFailsOnce, engine, posting, outbox, psa).run_due()
    g = posting.groups
    with engine.connect() as conn:
        row = conn.execute(select(g).where(g.c.tenant_id == tenant)).one()
        [ledger] = conn.execute(select(posting.ledger).where(posting.ledger.c.tenant_id == tenant)).all()
    assert ledger.state == states.POSTED and ledger.vendor_message.startswith("applied (confirmed")
    assert row.lease_owner is not None, "the release failed: the line waits for its lease to run out"
    assert row.expected == [[TODAY.isoformat(), 41]], "the baseline moved with the confirmation"

    # the next marketplace change, after the lease ran out: posted, not held as edited in the PSA
    with engine.begin() as conn:
        conn.execute(update(g).where(g.c.tenant_id == tenant).values(
            desired=[{"date": TODAY.isoformat(), "quantity": 43, "unit_price": "5", "unit_cost": "3"}],
            desired_version=3, seq=3, lease_owner=None, lease_until=None,
            due_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    poster(Poster, engine, posting, outbox, psa).run_due()
    with engine.connect() as conn:
        row = conn.execute(select(g).where(g.c.tenant_id == tenant)).one()
    assert (row.status, row.status_message) == (states.IN_SYNC, None)
    assert psa.units == 43 and psa.sent == [(41, 43)]


def test_a_line_edited_by_hand_while_a_write_was_unknown_is_still_held(tables):
    """The baseline only moves when the plan does not see a hand edit: a person's edit stays held."""
    engine, posting, outbox = tables
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    a_line_with_a_write_of_unknown_outcome(engine, posting, tenant, before=39, after=41)
    psa = OneLinePsa(units=50)          # our write did not apply; someone typed 50 in the PSA

    poster(Poster, engine, posting, outbox, psa).run_due()
    g = posting.groups
    with engine.connect() as conn:
        row = conn.execute(select(g).where(g.c.tenant_id == tenant)).one()
    assert row.status == states.LINE_HELD and "the PSA shows 50" in row.status_message
    assert row.expected == [[TODAY.isoformat(), 39]]
    assert psa.sent == []


class SlowManyLinePsa(PsaAdapter):
    """A PSA whose writes take 0.1 s; records how many are in flight, per tenant and in all."""

    psa = "autotask"

    def __init__(self):
        self.units, self.in_flight, self.peak_tenant, self.peak_total = {}, {}, {}, 0

    def client(self, tenant_id):
        return self

    def read(self, client, works):
        return {w.key: self.units.get((w.tenant_id, w.key), 0) for w in works}

    def plan(self, work, units):
        want = int(work.desired[-1]["quantity"])
        plan = Plan(expected=[[TODAY.isoformat(), units]])
        if units != want:
            plan.ops = [PlannedOp("adjust", TODAY, quantity_before=units, quantity_after=want,
                                  unit_change=want - units, expected_after=[[TODAY.isoformat(), want]])]
        return plan

    def execute(self, client, work, op):
        import eventlet

        self.in_flight[work.tenant_id] = self.in_flight.get(work.tenant_id, 0) + 1
        self.peak_tenant[work.tenant_id] = max(self.peak_tenant.get(work.tenant_id, 0),
                                               self.in_flight[work.tenant_id])
        self.peak_total = max(self.peak_total, sum(self.in_flight.values()))
        eventlet.sleep(0.1)
        self.in_flight[work.tenant_id] -= 1
        self.units[(work.tenant_id, work.key)] = op.quantity_after
        return None

    def edited_in_psa(self, tenant_id):
        return "hold"


def test_a_replica_posts_for_several_tenants_at_once_and_never_over_the_per_tenant_limit(tables):
    engine, posting, outbox = tables
    tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    with engine.begin() as conn:
        for tenant in tenants:
            for n in range(8):
                conn.execute(insert(posting.groups).values(
                    tenant_id=tenant, contract_id="C1", service_id=f"S{n}",
                    desired=[{"date": TODAY.isoformat(), "quantity": 5, "unit_price": "5", "unit_cost": "3"}],
                    desired_version=1, pending_from=TODAY, seq=1,
                    due_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1), status=states.PENDING))
    psa = SlowManyLinePsa()
    replica = Poster(psa="autotask", tables=posting, store=Store(engine), outbox=Outbox("autotask", outbox),
                     adapter=psa, settle_seconds=0, lease_seconds=30, concurrency=3, tenants_in_parallel=2)
    replica.run_due()
    assert all(psa.units.get((t, ("C1", f"S{n}"))) == 5 for t in tenants for n in range(8))
    assert max(psa.peak_tenant.values()) == 3        # the vendor's limit per tenant, reached, never passed
    assert psa.peak_total > 3                        # two tenants' lines were in flight together
    assert psa.peak_total <= 6                       # concurrency x tenants_in_parallel
    with engine.connect() as conn:
        posted = conn.execute(select(posting.ledger.c.id).where(posting.ledger.c.tenant_id.in_(tenants),
                                                                posting.ledger.c.state == states.POSTED)).all()
    assert len(posted) == 24
