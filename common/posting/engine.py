"""The posting loop every PSA service runs: claim dirty contract lines, read the PSA for them in
one batch, plan the fewest operations, post them exactly once.

The PSA-specific parts come from an adapter (see ``PsaAdapter``); this module owns the parts that
make posting safe whatever the PSA:

1. Claim. A line needs work when its ``due_at`` has passed (a new desired state, a retry, a backoff
   that ran out). A replica claims up to ``batch_size`` lines of one tenant with
   ``FOR UPDATE SKIP LOCKED`` and writes a lease (owner, until) on them; another replica skips
   leased lines until the lease runs out (the owner died). The lease is renewed while the batch
   runs and, for each line, in the very transaction that marks an operation ``posting``.
2. Read. One adapter.read() for the whole batch (Autotask: `in` queries of 500 ids).
3. Plan. adapter.plan() per line: the operations, which unknown-outcome rows the fresh read shows
   applied, and whether the PSA line was edited by hand.
4. Post. Every operation gets a ledger row (deterministic idempotency key, unique) before anything
   is sent; the row moves to ``posting`` (committed) before the request, and to ``posted`` with
   the vendor's item id and a ``line_posted`` event (outbox, same transaction) after it. A row
   left in ``posting`` means "outcome unknown": never re-sent - the next cycle re-reads and
   resolves it. Failures retry with backoff (RetryPolicy); the last attempt makes it ``dead``.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import datetime as dt
import decimal
import logging
import os
import socket
import time
import uuid

import eventlet
import eventlet.semaphore
from sqlalchemy import bindparam, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB

from common.logs import log_context
from common.posting import keys, metrics, retry, states
from common.posting.budget import BudgetExhausted

log = logging.getLogger(__name__)


def default_owner():
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass
class GroupWork:
    """One claimed contract line, as the adapter sees it."""

    tenant_id: str
    contract_id: str
    service_id: str
    company_id: str | None
    desired: list                 # breakpoints (common.posting.schedule)
    desired_version: int
    pending_from: dt.date | None
    expected: list | None         # step function: what we believe the PSA shows
    posted_horizon: dt.date | None
    edit_round: int
    overwrite_once: bool
    vendor_line_id: str | None
    seq: int
    changed_at: dt.datetime | None
    failures: int
    unknown: list = dataclasses.field(default_factory=list)   # ledger rows left in `posting`

    @property
    def key(self):
        return (self.contract_id, self.service_id)

    @classmethod
    def from_row(cls, row, unknown=()):
        return cls(row["tenant_id"], row["contract_id"], row["service_id"], row["company_id"],
                   list(row["desired"] or []), int(row["desired_version"]), row["pending_from"], row["expected"],
                   row["posted_horizon"], int(row["edit_round"]), bool(row["overwrite_once"]),
                   row["vendor_line_id"], int(row["seq"]), row["changed_at"], int(row["failures"]),
                   list(unknown))


@dataclasses.dataclass
class PlannedOp:
    """One operation the adapter wants posted. ``params`` carries what the adapter needs to send it
    (stored in the ledger row); ``expected_after`` the step function the PSA shows once it (and
    the ops before it) are applied."""

    kind: str
    effective_date: dt.date
    quantity_before: int | None = None
    quantity_after: int | None = None
    unit_change: int | None = None
    unit_price: decimal.Decimal | None = None
    unit_cost: decimal.Decimal | None = None
    params: dict = dataclasses.field(default_factory=dict)
    expected_after: list | None = None
    key: str | None = None


@dataclasses.dataclass
class Plan:
    ops: list = dataclasses.field(default_factory=list)
    resolved: dict = dataclasses.field(default_factory=dict)   # unknown row id -> (applied, vendor item id)
    edited: str | None = None      # why the PSA line looks edited by hand (None: it does not)
    expected: list | None = None   # what the PSA shows now (with resolved rows), as a step function
    vendor_line_id: str | None = None


class Unreadable(Exception):
    """adapter.read() puts this in place of a line's state when the PSA's answer for it cannot be
    trusted (malformed records): the line waits and is read again."""


class PsaAdapter(abc.ABC):
    """What a PSA service supplies (the port the posting engine drives). All but plan() may do I/O."""

    psa = "psa"

    @abc.abstractmethod
    def client(self, tenant_id):
        """A vendor client for the tenant, every request of which goes through the budget."""

    @abc.abstractmethod
    def read(self, client, works):
        """{work.key: state or Unreadable} for every work, in as few requests as possible."""

    @abc.abstractmethod
    def plan(self, work, state):
        """A Plan (pure)."""

    @abc.abstractmethod
    def execute(self, client, work, op):
        """Send one operation; return the vendor's item id (str) or None. Raise VendorError."""

    @abc.abstractmethod
    def edited_in_psa(self, tenant_id):
        """The tenant's setting: "overwrite" or "hold"."""
        return "hold"


# --- outcomes of one line's cycle ----------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    status: str
    message: str | None = None
    due_in: float | None = None     # seconds; None = nothing to do until something changes
    converged: bool = False
    failures: int = 0
    expected: list | None = None
    stop_batch: float | None = None  # budget exhausted: release the rest of the batch for this long


LOST_LEASE = object()
RELEASED = object()   # the line was released in the transaction that recorded its last post


def _now():
    return dt.datetime.now(dt.timezone.utc)


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


class Poster:
    """One replica's posting loop for one PSA. Build it per timer tick (it is cheap) with the
    worker's store and outbox; ``run_due()`` works until nothing is due or ``max_tick_seconds``."""

    def __init__(self, *, psa, tables, store, outbox, adapter, policy=None, owner=None, batch_size=500,
                 concurrency=3, tenants_in_parallel=1, lease_seconds=90.0, settle_seconds=0.3, max_delay_seconds=10.0,
                 max_tick_seconds=60.0, clock=time.monotonic):
        self.psa = psa
        self.t = tables
        self.store = store
        self.outbox = outbox
        self.adapter = adapter
        self.policy = policy or retry.RetryPolicy()
        self.owner = owner or default_owner()
        self.batch_size = int(batch_size)
        self.concurrency = max(1, int(concurrency))
        self.tenants_in_parallel = max(1, int(tenants_in_parallel))
        self.lease = float(lease_seconds)
        self.settle = float(settle_seconds)
        self.max_delay = float(max_delay_seconds)
        self.max_tick = float(max_tick_seconds)
        self.clock = clock

    # --- the loop ---------------------------------------------------------------------------------
    def run_due(self):
        """Claim and post batches until nothing is due or ``max_tick_seconds``. Up to
        ``tenants_in_parallel`` batches (one tenant each) run at once, each reading the PSA for its
        lines and posting them with at most ``concurrency`` sends in flight - the vendor's limit per
        tenant. A batch is claimed only when one of those places is free, so a replica never leases
        more than it is about to post, and one tenant's read never holds up another's (the reads
        ran in this loop, one tenant after another, and at 200 tenants that was the queue)."""
        started = self.clock()
        stats = {"batches": 0, "lines": 0}
        places = eventlet.semaphore.Semaphore(self.tenants_in_parallel)
        batches = eventlet.GreenPool(self.tenants_in_parallel)
        try:
            while self.clock() - started < self.max_tick:
                places.acquire()
                try:
                    tenant_id, rows = self.claim()
                except BaseException:
                    places.release()
                    raise
                if not rows:
                    places.release()
                    break
                stats["batches"] += 1
                stats["lines"] += len(rows)
                batches.spawn_n(self._run_batch, tenant_id, rows, places)
        finally:
            batches.waitall()
        return stats

    def _run_batch(self, tenant_id, rows, places):
        try:
            with log_context(tenant_id=tenant_id):
                self.process_batch(tenant_id, rows)
        except Exception:  # noqa: BLE001 - its lines' leases run out and another pass takes them
            log.exception("%s posting batch of %d lines failed", self.psa, len(rows))
        finally:
            places.release()

    def claim(self):
        """(tenant_id, [group rows]) leased to this replica; (None, []) when nothing is due."""
        g = self.t.groups.name
        # a tenant is picked when its stream of changes has been quiet for `settle` seconds, or
        # a full batch is waiting, or its oldest due line has waited `max_delay`: a burst of
        # changes becomes a few big batches (few reads) instead of many small ones
        sql = text(f"""
            WITH pick AS (
                SELECT tenant_id FROM {g}
                WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())
                GROUP BY tenant_id
                HAVING coalesce(max(touched_at), '-infinity') < now() - make_interval(secs => :settle)
                    OR count(*) >= :n OR min(due_at) < now() - make_interval(secs => :max_delay)
                ORDER BY min(due_at) LIMIT 1),
            batch AS (
                SELECT x.tenant_id, x.contract_id, x.service_id FROM {g} x JOIN pick USING (tenant_id)
                WHERE x.due_at <= now() AND (x.lease_until IS NULL OR x.lease_until < now())
                ORDER BY x.due_at LIMIT :n
                FOR UPDATE OF x SKIP LOCKED)
            UPDATE {g} AS u SET lease_owner = :me, lease_until = now() + make_interval(secs => :lease),
                               claimed_seq = u.seq
            FROM batch
            WHERE u.tenant_id = batch.tenant_id AND u.contract_id = batch.contract_id
              AND u.service_id = batch.service_id
            RETURNING u.*""")
        with self.store.transaction() as session:
            rows = [dict(r._mapping) for r in session.execute(
                sql, {"settle": self.settle, "n": self.batch_size, "me": self.owner, "lease": self.lease,
                      "max_delay": self.max_delay})]
        if not rows:
            return None, []
        return rows[0]["tenant_id"], rows

    def _heartbeat(self, tenant_id, keys_):
        g = self.t.groups
        with self.store.transaction() as session:
            session.execute(update(g).where(
                g.c.tenant_id == tenant_id, g.c.lease_owner == self.owner,
                tuple_(g.c.contract_id, g.c.service_id).in_(keys_))
                .values(lease_until=func.now() + dt.timedelta(seconds=self.lease)))

    def process_batch(self, tenant_id, rows):
        """Read the batch, then post its lines with at most ``concurrency`` senders; returns when
        every line is done. The batch's lease heartbeat runs until then."""
        works = self._works(tenant_id, rows)
        done = eventlet.event.Event()
        eventlet.spawn(self._beat_loop, tenant_id, [w.key for w in works], done)
        queue = collections.deque(works)

        def send_lines(client, states_, stop):
            # one of the batch's senders: takes the batch's next line until none is left
            while queue:
                work = queue.popleft()
                self._run_group(client, work, states_.get(work.key), stop)

        try:
            try:
                client = self.adapter.client(tenant_id)
                states_ = self.adapter.read(client, works)
            except retry.NotSent as exc:
                for w in works:
                    self.release(w, Outcome(states.WAITING, str(exc), due_in=exc.retry_after, failures=w.failures))
                return
            except Exception as exc:  # the read failed: nothing was written, try the batch again later
                log.warning("%s read of %d lines failed: %s", self.psa, len(works), exc)
                for w in works:
                    n = w.failures + 1
                    self.release(w, Outcome(states.WAITING, f"reading the PSA failed: {exc}"[:2000],
                                            due_in=self.policy.delay(n, getattr(exc, "retry_after", None)),
                                            failures=n))
                return
            stop = {"retry_after": None}
            senders = eventlet.GreenPool(self.concurrency)
            for _ in range(min(self.concurrency, len(works))):
                senders.spawn_n(send_lines, client, states_, stop)
            senders.waitall()
        finally:
            done.send(True)   # the heartbeat stops (a line not finished keeps its lease until it runs out)

    def _beat_loop(self, tenant_id, keys_, done):
        """Renew the batch's leases every lease/3 until ``done`` (its last line finished)."""
        while not done.wait(max(1.0, self.lease / 3)):
            try:
                self._heartbeat(tenant_id, keys_)
            except Exception:
                log.exception("lease heartbeat failed")

    def _works(self, tenant_id, rows):
        led = self.t.ledger
        keys_ = [(r["contract_id"], r["service_id"]) for r in rows]
        unknown = {}
        with self.store.transaction() as session:
            for r in session.execute(select(led).where(
                    led.c.tenant_id == tenant_id, led.c.state == states.POSTING,
                    tuple_(led.c.contract_id, led.c.service_id).in_(keys_)).order_by(led.c.id)):
                unknown.setdefault((r.contract_id, r.service_id), []).append(dict(r._mapping))
        return [GroupWork.from_row(r, unknown.get((r["contract_id"], r["service_id"]), ())) for r in rows]

    def _run_group(self, client, work, state, stop):
        with log_context(tenant_id=work.tenant_id):
            if stop["retry_after"] is not None:
                self.release(work, Outcome(states.WAITING, "request budget used up", due_in=stop["retry_after"],
                                           failures=work.failures))
                return
            try:
                outcome = self.process_group(client, work, state)
            except Exception as exc:
                log.exception("%s posting of contract %s service %s failed", self.psa, work.contract_id,
                              work.service_id)
                n = work.failures + 1
                outcome = Outcome(states.WAITING, f"internal error: {type(exc).__name__}: {exc}"[:2000],
                                  due_in=self.policy.delay(n), failures=n)
            if outcome is LOST_LEASE or outcome is RELEASED:
                return
            if outcome.stop_batch is not None:
                stop["retry_after"] = outcome.stop_batch
            try:
                self.release(work, outcome)
            except Exception:
                log.exception("could not release contract %s service %s (its lease will run out)",
                              work.contract_id, work.service_id)

    # --- one line ---------------------------------------------------------------------------------
    def process_group(self, client, work, state):
        if isinstance(state, Exception) or state is None:
            n = work.failures + 1
            reason = str(state) if state is not None else "the PSA read did not return this line"
            return Outcome(states.WAITING, reason, due_in=self.policy.delay(n), failures=n)
        plan = self.adapter.plan(work, state)
        if not self._resolve_unknown(work, plan):
            n = work.failures + 1
            return Outcome(states.WAITING, "an operation with an unknown outcome could not be resolved by "
                           "re-reading the PSA", due_in=self.policy.delay(n), failures=n)
        if plan.edited and not work.overwrite_once:
            if self.adapter.edited_in_psa(work.tenant_id) != "overwrite":
                return self._hold(work, plan)
            log.info("%s contract %s service %s was edited in the PSA (%s); tenant setting: overwrite",
                     self.psa, work.contract_id, work.service_id, plan.edited)
            work.edit_round += 1   # fresh keys: the PSA may be back at a state we posted before
        if not plan.ops:   # the PSA already says it: whatever older plans wanted is not needed any more
            with self.store.transaction() as session:
                self._supersede(session, work, [])
            return Outcome(states.IN_SYNC, None, converged=True, expected=plan.expected)
        rows = self._plan_rows(work, plan)
        for n, op in enumerate(plan.ops, 1):
            row = rows[op.key]
            if row["state"] == states.DEAD:
                return Outcome(states.LINE_FAILED, f"operation {row['id']} is dead: {row['vendor_message']}")
            if row["state"] not in (states.PLANNED, states.FAILED):
                n = work.failures + 1
                return Outcome(states.WAITING, f"operation {row['id']} is {row['state']}",
                               due_in=self.policy.delay(n), failures=n)
            if row["next_attempt_at"] is not None and row["next_attempt_at"] > _now():
                wait = (row["next_attempt_at"] - _now()).total_seconds()
                return Outcome(states.WAITING, row["vendor_message"], due_in=max(wait, 0.1),
                               failures=work.failures)
            result = self._post(client, work, op, row, last=n == len(plan.ops))
            if result is not None:
                return result
        return Outcome(states.IN_SYNC, None, converged=True)

    def _resolve_unknown(self, work, plan):
        """Rows left in `posting` (outcome unknown): the fresh read says whether they applied.
        False when one of them cannot be resolved (nothing may be sent for the line then).

        A row confirmed as applied moves the line's ``expected`` baseline (what the PSA shows now,
        ``plan.expected``) in the same transaction: were it left for the release, a release that
        fails (PostgreSQL gone at that moment) would leave the baseline before our write, and the
        next change would look like a hand edit in the PSA (chaos seed 1003). Not when the plan
        finds the line edited by hand: that edit must stay visible, not become the baseline."""
        led, g = self.t.ledger, self.t.groups
        resolved_all = True
        for row in work.unknown:
            applied, item_id = plan.resolved.get(row["id"], (None, None))
            if applied is None:
                resolved_all = False
                continue
            with self.store.transaction() as session:
                if applied:
                    done = session.execute(update(led).where(led.c.id == row["id"], led.c.state == states.POSTING)
                                           .values(state=states.POSTED, posted_at=func.now(), updated_at=func.now(),
                                                   outcome_unknown=False, vendor_item_id=item_id or row["vendor_item_id"],
                                                   vendor_message="applied (confirmed by re-reading the PSA)")
                                           ).rowcount
                    if done:
                        self._line_posted(session, work, row, item_id or row["vendor_item_id"])
                        metrics.POSTINGS.labels(self.psa, "confirmed").inc()
                        if plan.expected is not None and not plan.edited:
                            session.execute(update(g).where(
                                g.c.tenant_id == work.tenant_id, g.c.contract_id == work.contract_id,
                                g.c.service_id == work.service_id, g.c.lease_owner == self.owner)
                                .values(expected=plan.expected, updated_at=func.now()))
                else:
                    dead = self.policy.exhausted(row["attempts"])
                    msg = f"not applied (re-read the PSA after: {row['vendor_message'] or 'no answer'})"[:2000]
                    done = session.execute(update(led).where(led.c.id == row["id"], led.c.state == states.POSTING)
                                           .values(state=states.DEAD if dead else states.FAILED,
                                                   outcome_unknown=False, vendor_message=msg,
                                                   next_attempt_at=None, updated_at=func.now())).rowcount
                    if done:
                        metrics.POSTINGS.labels(self.psa, "dead" if dead else "failed").inc()
                        if dead:
                            self._posting_failed(session, work, row, msg, row["attempts"], True)
        return resolved_all

    def _hold(self, work, plan):
        """The tenant holds lines edited in the PSA: record what overwriting would post, as held,
        and announce it once (posting_failed, operation "edited_in_psa", dead false)."""
        message = f"edited in the PSA: {plan.edited}"[:2000]
        self._assign_keys(work, plan)
        keys_ = [op.key for op in plan.ops]
        new = 0
        with self.store.transaction() as session:
            for op in plan.ops:
                new += self._insert_row(session, work, op, states.HELD, message) is not None
            led = self.t.ledger
            session.execute(update(led).where(led.c.idempotency_key.in_(keys_),
                                              led.c.state.in_((states.PLANNED, states.FAILED)))
                            .values(state=states.HELD, vendor_message=message, next_attempt_at=None,
                                    updated_at=func.now()))
            self._supersede(session, work, keys_)
            if new:
                self.outbox.add(session, "posting_failed", work.tenant_id, psa=self.psa,
                                contract_id=work.contract_id, service_id=work.service_id,
                                operation="edited_in_psa", idempotency_key=keys_[0], vendor_message=message,
                                attempts=0, dead=False)
        if new:
            metrics.POSTINGS.labels(self.psa, "held").inc(new)
        log.info("%s contract %s service %s held: %s", self.psa, work.contract_id, work.service_id, message)
        return Outcome(states.LINE_HELD, message)

    def _assign_keys(self, work, plan):
        for op in plan.ops:
            op.key = keys.operation_key(self.psa, work.tenant_id, work.contract_id, work.service_id, op,
                                        desired_version=work.desired_version, edit_round=work.edit_round)

    def _insert_row(self, session, work, op, state, message=None):
        """Insert the op's ledger row unless its key exists: the new row (a dict), or None."""
        row = session.execute(_insert_sql(self.t.ledger), {
            "tenant_id": work.tenant_id, "contract_id": work.contract_id, "service_id": work.service_id,
            "idempotency_key": op.key, "operation": op.kind, "state": state, "effective_date": op.effective_date,
            "quantity_before": op.quantity_before, "quantity_after": op.quantity_after,
            "unit_change": op.unit_change, "unit_price": op.unit_price, "unit_cost": op.unit_cost,
            "desired_version": work.desired_version, "params": json_safe(op.params),
            "vendor_message": message}).first()
        return None if row is None else dict(row._mapping)

    def _supersede(self, session, work, keep_keys):
        led = self.t.ledger
        n = session.execute(update(led).where(
            led.c.tenant_id == work.tenant_id, led.c.contract_id == work.contract_id,
            led.c.service_id == work.service_id, led.c.state.in_(states.REPLACEABLE),
            led.c.idempotency_key.notin_(keep_keys or [""]))
            .values(state=states.SUPERSEDED, updated_at=func.now(), next_attempt_at=None)).rowcount
        if n:
            metrics.POSTINGS.labels(self.psa, "superseded").inc(n)

    def _plan_rows(self, work, plan):
        """Ledger rows for every op (made if new), older open rows of the line superseded.
        Four statements in the usual case: read the ops' rows, insert the new ones (RETURNING),
        supersede older open rows, mark the line pending."""
        led = self.t.ledger
        g = self.t.groups
        with self.store.transaction() as session:
            for _ in range(2):
                self._assign_keys(work, plan)
                keys_ = [op.key for op in plan.ops]
                rows = {r.idempotency_key: dict(r._mapping)
                        for r in session.execute(select(led).where(led.c.idempotency_key.in_(keys_)))}
                if not any(r["state"] == states.POSTED for r in rows.values()):
                    break
                # the PSA is back at a state we already posted from: someone undid our change by hand
                log.warning("%s contract %s service %s: planned operation already posted once; new round",
                            self.psa, work.contract_id, work.service_id)
                work.edit_round += 1
            for op in plan.ops:
                if op.key not in rows:
                    row = self._insert_row(session, work, op, states.PLANNED)
                    if row is not None:
                        rows[op.key] = row
            # rows held (now overwritten) or superseded earlier (never applied) for the same ops
            revive = [k for k, r in rows.items() if r["state"] in (states.HELD, states.SUPERSEDED)]
            if revive:
                for r in session.execute(update(led).where(led.c.idempotency_key.in_(revive),
                                                           led.c.state.in_((states.HELD, states.SUPERSEDED)))
                                         .values(state=states.PLANNED, updated_at=func.now()).returning(*led.c)):
                    rows[r.idempotency_key] = dict(r._mapping)
            self._supersede(session, work, keys_)
            values = {"updated_at": func.now(), "status": states.PENDING, "edit_round": work.edit_round}
            if plan.expected is not None:
                values["expected"] = plan.expected
            session.execute(update(g).where(g.c.tenant_id == work.tenant_id, g.c.contract_id == work.contract_id,
                                            g.c.service_id == work.service_id, g.c.lease_owner == self.owner)
                            .values(**values))
            missing = [k for k in keys_ if k not in rows]   # inserted meanwhile by another transaction
            if missing:
                for r in session.execute(select(led).where(led.c.idempotency_key.in_(missing))):
                    rows[r.idempotency_key] = dict(r._mapping)
        return rows

    def _begin_send(self, work, row):
        """planned|failed -> posting, committed, only while this replica holds the line's lease
        (renewed by the same statement). None: the lease is gone (or the row moved) - do not send."""
        with self.store.transaction() as session:
            out = session.execute(_begin_send_sql(self.t), {
                "t": work.tenant_id, "c": work.contract_id, "s": work.service_id, "me": self.owner,
                "lease": self.lease, "id": row["id"], "posting": states.POSTING,
                "from1": states.PLANNED, "from2": states.FAILED}).first()
            return None if out is None else out.attempts

    def _post(self, client, work, op, row, last=False):
        """Send one operation. None when it was posted; else the line's Outcome. ``last``: the
        plan's last op - once posted the line is released (in sync) in the same transaction and
        RELEASED is returned."""
        led, g = self.t.ledger, self.t.groups
        attempts = self._begin_send(work, row)
        if attempts is None:
            log.warning("%s contract %s service %s: lease lost before sending; leaving it to its new owner",
                        self.psa, work.contract_id, work.service_id)
            return LOST_LEASE
        try:
            item_id = self.adapter.execute(client, work, op)
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            return self._failed(work, op, row, attempts, exc)
        item_id = None if item_id is None else str(item_id)
        with self.store.transaction() as session:
            session.execute(update(led).where(led.c.id == row["id"]).values(
                state=states.POSTED, vendor_item_id=item_id, posted_at=func.now(), updated_at=func.now(),
                vendor_message=None, outcome_unknown=False))
            values = {"last_posted_at": func.now(), "updated_at": func.now()}
            if op.expected_after is not None:
                values["expected"] = op.expected_after
            if op.effective_date and (work.posted_horizon is None or op.effective_date > work.posted_horizon):
                values["posted_horizon"] = op.effective_date
                work.posted_horizon = op.effective_date
            if op.params.get("creates_line") and item_id:
                values["vendor_line_id"] = item_id
            session.execute(update(g).where(g.c.tenant_id == work.tenant_id, g.c.contract_id == work.contract_id,
                                            g.c.service_id == work.service_id).values(**values))
            self._line_posted(session, work, {**row, "operation": op.kind, "quantity_before": op.quantity_before,
                                              "quantity_after": op.quantity_after, "unit_price": op.unit_price,
                                              "effective_date": op.effective_date}, item_id)
            if last:
                converged = Outcome(states.IN_SYNC, None, converged=True)
                done = self._release_in(session, work, converged)
        metrics.POSTINGS.labels(self.psa, "posted").inc()
        if last:
            self._released(work, converged, done)
            return RELEASED
        return None

    def _failed(self, work, op, row, attempts, exc):
        led = self.t.ledger
        kind = retry.classify(exc)
        message = (getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:2000]
        if kind == retry.NOT_SENT:
            with self.store.transaction() as session:
                session.execute(update(led).where(led.c.id == row["id"], led.c.state == states.POSTING).values(
                    state=states.PLANNED, attempts=led.c.attempts - 1, updated_at=func.now(), vendor_message=message))
            stop = exc.retry_after if isinstance(exc, BudgetExhausted) else None
            return Outcome(states.WAITING, message, due_in=exc.retry_after, failures=work.failures, stop_batch=stop)
        if kind == retry.UNKNOWN:
            # never re-sent as is: the next cycle re-reads the PSA and resolves this row
            with self.store.transaction() as session:
                session.execute(update(led).where(led.c.id == row["id"]).values(
                    outcome_unknown=True, updated_at=func.now(),
                    vendor_message=f"outcome unknown: {type(exc).__name__}: {message}"[:2000]))
            log.warning("%s %s on contract %s service %s: outcome unknown (%s); will re-read",
                        self.psa, op.kind, work.contract_id, work.service_id, type(exc).__name__)
            n = work.failures + 1
            return Outcome(states.WAITING, f"outcome unknown: {message}", due_in=self.policy.delay(1), failures=n)
        dead = kind == retry.DEAD or self.policy.exhausted(attempts)
        delay = None if dead else self.policy.delay(attempts, getattr(exc, "retry_after", None))
        with self.store.transaction() as session:
            session.execute(update(led).where(led.c.id == row["id"]).values(
                state=states.DEAD if dead else states.FAILED, vendor_message=message, updated_at=func.now(),
                next_attempt_at=None if dead else func.now() + dt.timedelta(seconds=delay)))
            if dead:
                self._posting_failed(session, work, {**row, "operation": op.kind}, message, attempts, True)
        metrics.POSTINGS.labels(self.psa, "dead" if dead else "failed").inc()
        if dead:
            log.error("%s %s on contract %s service %s is dead after %d attempt(s): %s", self.psa, op.kind,
                      work.contract_id, work.service_id, attempts, message[:300])
            return Outcome(states.LINE_FAILED, message)
        return Outcome(states.WAITING, message, due_in=delay, failures=work.failures)

    # --- events -------------------------------------------------------------------------------------
    def _line_posted(self, session, work, row, item_id):
        after = row.get("quantity_after")
        if after is None:
            after = row.get("quantity_before") or 0
        self.outbox.add(session, "line_posted", work.tenant_id, psa=self.psa, contract_id=work.contract_id,
                        service_id=work.service_id, operation=row["operation"],
                        quantity_before=row.get("quantity_before"), quantity_after=int(after),
                        unit_price=None if row.get("unit_price") is None else str(row["unit_price"]),
                        effective_date=_as_date(row["effective_date"]),
                        idempotency_key=row["idempotency_key"], vendor_item_id=item_id)

    def _posting_failed(self, session, work, row, message, attempts, dead):
        self.outbox.add(session, "posting_failed", work.tenant_id, psa=self.psa, contract_id=work.contract_id,
                        service_id=work.service_id, operation=row["operation"],
                        idempotency_key=row["idempotency_key"], vendor_message=message or "failed",
                        attempts=int(attempts), dead=bool(dead))

    # --- release ------------------------------------------------------------------------------------
    def release(self, work, outcome):
        """Give the line back: when it is due again, its status, and - if it converged and no new
        desired state arrived meanwhile - nothing pending any more."""
        with self.store.transaction() as session:
            done = self._release_in(session, work, outcome)
        self._released(work, outcome, done)

    def _release_in(self, session, work, outcome):
        """release() inside the caller's transaction; the line's new seq row, or None (lease gone)."""
        g = self.t.groups
        same = g.c.seq == work.seq
        due = None if outcome.due_in is None else func.now() + dt.timedelta(seconds=float(outcome.due_in))
        values = {
            "lease_owner": None, "lease_until": None, "updated_at": func.now(),
            "due_at": _case(same, due, g.c.due_at),
            "status": _case(same, outcome.status, states.PENDING),
            "status_message": outcome.message,
            "failures": outcome.failures,
        }
        if outcome.converged:
            values["pending_from"] = _case(same, None, g.c.pending_from)
            values["changed_at"] = _case(same, None, g.c.changed_at)
            values["overwrite_once"] = False
            values["failures"] = 0
        if outcome.expected is not None:
            values["expected"] = outcome.expected
        return session.execute(update(g).where(
            g.c.tenant_id == work.tenant_id, g.c.contract_id == work.contract_id,
            g.c.service_id == work.service_id, g.c.lease_owner == self.owner)
            .values(**values).returning(g.c.seq)).first()

    def _released(self, work, outcome, done):
        if done is not None and outcome.converged and done.seq == work.seq and work.changed_at is not None:
            metrics.CHANGE_TO_POSTED.labels(self.psa).observe(max(0.0, (_now() - work.changed_at).total_seconds()))


def _as_date(value):
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _case(cond, then, otherwise):
    from sqlalchemy import case, literal, null

    then_ = null() if then is None else (then if hasattr(then, "compile") else literal(then))
    other = null() if otherwise is None else (otherwise if hasattr(otherwise, "compile") else literal(otherwise))
    return case((cond, then_), else_=other)


_SQL = {}


def _insert_sql(ledger):
    """INSERT of one ledger row unless its idempotency key exists, RETURNING it: plain SQL, built
    once per table (SQLAlchemy cannot cache the compiled form of INSERT .. ON CONFLICT)."""
    key = ("insert", ledger.name)
    if key not in _SQL:
        cols = ["tenant_id", "contract_id", "service_id", "idempotency_key", "operation", "state", "effective_date",
                "quantity_before", "quantity_after", "unit_change", "unit_price", "unit_cost", "desired_version",
                "params", "vendor_message"]
        _SQL[key] = text(
            f"INSERT INTO {ledger.name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {', '.join(c.name for c in ledger.c)}"
        ).bindparams(bindparam("params", type_=JSONB)).columns(*ledger.c)
    return _SQL[key]


def _begin_send_sql(tables):
    """Renew the line's lease (only while this owner holds it) and move the row to posting, in one
    statement: the row moves only if the lease was renewed."""
    key = ("begin_send", tables.groups.name, tables.ledger.name)
    if key not in _SQL:
        _SQL[key] = text(f"""
            WITH lease AS (
                UPDATE {tables.groups.name} SET lease_until = now() + make_interval(secs => :lease)
                WHERE tenant_id = :t AND contract_id = :c AND service_id = :s AND lease_owner = :me
                  AND lease_until > now()
                RETURNING 1)
            UPDATE {tables.ledger.name} SET state = :posting, attempts = attempts + 1, sent_at = now(),
                   updated_at = now(), next_attempt_at = NULL
            WHERE id = :id AND state IN (:from1, :from2) AND EXISTS (SELECT 1 FROM lease)
            RETURNING attempts""")
    return _SQL[key]
