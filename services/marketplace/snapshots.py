"""Reading and writing the marketplace snapshot, sync runs and quarantine (all SQL lives here).

Every statement names the tenant_id except the three that work across tenants on purpose, for the
scheduler: claiming queued runs, failing abandoned ones, and pruning old ones.
"""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from sqlalchemy import and_, exists, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from common.errors import BadRequest, NotFound
from common.paging import envelope, page_params
from services.marketplace import domain
from services.marketplace.exceptions import RunStopped
from services.marketplace.models import (customers, products, quarantine, subscription_lines, subscriptions,
                                         sync_runs)
from services.marketplace.schemas import SUBSCRIPTION_STATUSES

CHUNK = 200  # rows per transaction for customers/products/quarantine batches
LINE_COLUMNS = ("subscription_id", "mpn", "customer_id", "name", "quantity", "status", "unit_price", "unit_cost",
                "currency", "renewal_date", "line_version", "seen_at")
PRODUCT_COLUMNS = ("mpn", "product_id", "name", "vendor", "service_name", "unit_price", "unit_cost", "currency",
                   "billing_period", "billing_model")
RUN_OUTCOMES = ("queued", "running", "ok", "partial", "failed", "throttled")
FINISHED = ("ok", "partial", "failed", "throttled")


def jsonable(value):
    """Decimals and datetimes as text, recursively: for JSONB columns and RPC answers."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(domain.money_out(value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _chunks(items, size=CHUNK):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- customers (also the apply_customers RPC) ----------------------------------------------------
def apply_customer(session, outbox, tenant_id, record):
    """Upsert one customer; announce `customer_changed` only if it is new or changed."""
    current = domain.customer_snapshot(record)
    row = session.execute(
        select(customers.c.name, customers.c.status, customers.c.domain)
        .where(customers.c.tenant_id == tenant_id, customers.c.customer_id == str(record["id"]))
        .with_for_update()).first()
    previous = dict(row._mapping) if row else None
    if not domain.customer_changed(previous, current):
        return False
    _upsert_customer(session, tenant_id, record, current)
    outbox.add(session, "customer_changed", tenant_id, customer_id=str(record["id"]), **current)
    return True


def _upsert_customer(session, tenant_id, record, current):
    raw = jsonable(record)
    session.execute(insert(customers).values(tenant_id=tenant_id, customer_id=str(record["id"]), raw=raw,
                                             **current)
                    .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                           set_={**current, "raw": raw, "updated_at": func.now()}))


def subscription_values(detail, seen_at) -> dict:
    """The subscriptions row (less its key) for an applied detail."""
    return {"customer_id": str(detail["customerId"]), "status": detail["status"],
            "renewal_status": detail.get("renewalStatus"), "creation_date": detail.get("creationDate"),
            "renewal_date": detail.get("renewalDate"), "last_modified": detail["lastModifiedDate"],
            "total_price": domain.money(detail.get("totalPrice")), "detail_fetched_at": seen_at,
            "unlisted_at": None}


SUBSCRIPTION_COLUMNS = ("customer_id", "status", "renewal_status", "creation_date", "renewal_date", "last_modified",
                        "total_price", "detail_fetched_at", "unlisted_at")


def _upsert_sql(table, key, columns):
    """INSERT .. ON CONFLICT (key) DO UPDATE as plain SQL: written per changed subscription, and
    SQLAlchemy cannot cache the compiled form of a PostgreSQL ON CONFLICT statement."""
    cols = ["tenant_id", *key, *[c for c in columns if c not in key]]
    return text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
                f"ON CONFLICT (tenant_id, {', '.join(key)}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("tenant_id", *key))
                + ", updated_at = now()")


_LINE_UPSERT = _upsert_sql("subscription_lines", ("subscription_id", "mpn"), LINE_COLUMNS)
_SUBSCRIPTION_UPSERT = _upsert_sql("subscriptions", ("subscription_id",), SUBSCRIPTION_COLUMNS)


# --- what one sync run reads and writes --------------------------------------------------------
class Repository:
    """The snapshot of one tenant as a sync run sees it. Each write method is its own transaction;
    `apply_subscription` is one transaction per subscription (lines, subscription row, events)."""

    def __init__(self, store, outbox, tenant_id, run_id, heartbeat_seconds=2.0, clock=time.monotonic):
        self.store, self.outbox = store, outbox
        self.tenant_id, self.run_id = tenant_id, run_id
        self.heartbeat_seconds = heartbeat_seconds
        self._clock = clock
        self._last_beat = clock()

    # customers
    def load_customers(self) -> dict[str, dict]:
        c = customers.c
        with self.store.transaction() as s:
            rows = s.execute(select(c.customer_id, c.name, c.status, c.domain).where(c.tenant_id == self.tenant_id))
            return {r.customer_id: {"name": r.name, "status": r.status, "domain": r.domain} for r in rows}

    def save_customers(self, records: list[dict]) -> None:
        """Upsert changed customer records (validated vendor dicts) with a `customer_changed` each."""
        for chunk in _chunks(records):
            with self.store.transaction() as s:
                for record in chunk:
                    current = domain.customer_snapshot(record)
                    _upsert_customer(s, self.tenant_id, record, current)
                    self.outbox.add(s, "customer_changed", self.tenant_id, customer_id=str(record["id"]), **current)

    # products
    def load_products(self) -> dict[str, dict]:
        c = products.c
        with self.store.transaction() as s:
            rows = s.execute(select(*(getattr(c, n) for n in PRODUCT_COLUMNS)).where(c.tenant_id == self.tenant_id))
            return {r.mpn: dict(r._mapping) for r in rows}

    def save_products(self, items: list[tuple[dict, dict, bool]], seen_at) -> int:
        """items: (record, snapshot, cost_moved). Upserts each with a `product_changed`; when the catalog
        cost moved, re-prices that MPN's lines in the same transaction. Returns lines changed."""
        lines_changed = 0
        for chunk in _chunks(items, 50):
            with self.store.transaction() as s:
                for record, snap, cost_moved in chunk:
                    values = {k: snap[k] for k in PRODUCT_COLUMNS}
                    raw = jsonable(record)
                    s.execute(insert(products).values(tenant_id=self.tenant_id, raw=raw, **values)
                              .on_conflict_do_update(index_elements=["tenant_id", "mpn"],
                                                     set_={**values, "raw": raw, "updated_at": func.now()}))
                    self.outbox.add(s, "product_changed", self.tenant_id, **domain.product_event(snap))
                    if cost_moved:
                        lines_changed += self._reprice(s, snap, seen_at)
        return lines_changed

    def _reprice(self, s, snap, seen_at) -> int:
        c = subscription_lines.c
        rows = s.execute(select(*(getattr(c, n) for n in LINE_COLUMNS))
                         .where(c.tenant_id == self.tenant_id, c.mpn == snap["mpn"])
                         .order_by(c.subscription_id).with_for_update()).all()
        changes = domain.reprice_lines([dict(r._mapping) for r in rows], snap, seen_at)
        for change in changes:
            self._write_line(s, change.line)
            self.outbox.add(s, "subscription_line_changed", self.tenant_id, **domain.line_event(change))
        return len(changes)

    # subscriptions
    def load_marks(self) -> dict[str, domain.SubscriptionMark]:
        c = subscriptions.c
        with self.store.transaction() as s:
            rows = s.execute(select(c.subscription_id, c.last_modified, c.detail_fetched_at, c.unlisted_at)
                             .where(c.tenant_id == self.tenant_id))
            return {r.subscription_id: domain.SubscriptionMark(r.last_modified, r.detail_fetched_at, r.unlisted_at)
                    for r in rows}

    def apply_subscription(self, subscription_id, detail, seen_at, catalog, resolve=False):
        """One transaction: the lines and subscription row from a fetched detail (None: the vendor no
        longer has it) and one `subscription_line_changed` per changed line. Returns the changes."""
        sid = str(subscription_id)
        c = subscription_lines.c
        with self.store.transaction() as s:
            # lock the subscription row first: two runs of one tenant never interleave on it
            s.execute(select(subscriptions.c.subscription_id)
                      .where(subscriptions.c.tenant_id == self.tenant_id, subscriptions.c.subscription_id == sid)
                      .with_for_update())
            old = {r.mpn: dict(r._mapping) for r in s.execute(
                select(*(getattr(c, n) for n in LINE_COLUMNS))
                .where(c.tenant_id == self.tenant_id, c.subscription_id == sid).with_for_update())}
            rows, changes = domain.plan_subscription(old, detail, seen_at, catalog, subscription_id=sid)
            for row in rows.values():
                self._write_line(s, row)
            self._write_subscription(s, sid, detail, seen_at, old)
            for change in changes:
                self.outbox.add(s, "subscription_line_changed", self.tenant_id, **domain.line_event(change))
            if resolve:
                self._resolve(s, "subscription", [sid])
        return changes

    def mark_unlisted(self, subscription_id, seen_at) -> None:
        with self.store.transaction() as s:
            s.execute(update(subscriptions).where(subscriptions.c.tenant_id == self.tenant_id,
                                                  subscriptions.c.subscription_id == str(subscription_id))
                      .values(unlisted_at=seen_at, detail_fetched_at=seen_at, updated_at=func.now()))

    def _write_line(self, s, row):
        s.execute(_LINE_UPSERT, {"tenant_id": self.tenant_id, **{k: row[k] for k in LINE_COLUMNS}})

    def _write_subscription(self, s, sid, detail, seen_at, old_lines):
        if detail is None:  # gone at the vendor: keep the row, say so
            s.execute(update(subscriptions).where(subscriptions.c.tenant_id == self.tenant_id,
                                                  subscriptions.c.subscription_id == sid)
                      .values(status="removed", unlisted_at=seen_at, detail_fetched_at=seen_at,
                              updated_at=func.now()))
            return
        s.execute(_SUBSCRIPTION_UPSERT, {"tenant_id": self.tenant_id, "subscription_id": sid,
                                         **subscription_values(detail, seen_at)})

    # quarantine
    def open_quarantine(self) -> set[tuple[str, str]]:
        q = quarantine.c
        with self.store.transaction() as s:
            rows = s.execute(select(q.record_type, q.record_id)
                             .where(q.tenant_id == self.tenant_id, q.resolved_at.is_(None)))
            return {(r.record_type, r.record_id) for r in rows}

    def quarantine(self, items: list[dict]) -> None:
        """items: {record_type, record_id, field, reason, payload}; one open row per record (repeats
        count up `occurrences` and move `last_seen`)."""
        for chunk in _chunks(items):
            with self.store.transaction() as s:
                for item in chunk:
                    values = {"run_id": self.run_id, "field": (item.get("field") or None),
                              "reason": str(item["reason"])[:2000], "payload": jsonable(item.get("payload") or {})}
                    s.execute(insert(quarantine).values(tenant_id=self.tenant_id, record_type=item["record_type"],
                                                        record_id=str(item["record_id"])[:120], **values)
                              .on_conflict_do_update(
                                  index_elements=["tenant_id", "record_type", "record_id"],
                                  index_where=quarantine.c.resolved_at.is_(None),
                                  set_={**values, "last_seen": func.now(),
                                        "occurrences": quarantine.c.occurrences + 1}))

    def resolve(self, record_type, record_ids) -> int:
        resolved = 0
        for chunk in _chunks(record_ids, 500):
            with self.store.transaction() as s:
                resolved += self._resolve(s, record_type, chunk)
        return resolved

    def _resolve(self, s, record_type, record_ids) -> int:
        q = quarantine.c
        result = s.execute(update(quarantine)
                           .where(q.tenant_id == self.tenant_id, q.record_type == record_type,
                                  q.record_id.in_([str(i) for i in record_ids]), q.resolved_at.is_(None))
                           .values(resolved_at=func.now()))
        return result.rowcount or 0

    # the run itself
    def beat(self, counts, force=False) -> None:
        """Record progress and prove the run is alive (at most every heartbeat_seconds unless forced).
        RunStopped when the run is no longer ours (declared abandoned meanwhile)."""
        now = self._clock()
        if not force and now - self._last_beat < self.heartbeat_seconds:
            return
        self._last_beat = now
        r = sync_runs.c
        with self.store.transaction() as s:
            row = s.execute(update(sync_runs)
                            .where(r.tenant_id == self.tenant_id, r.id == self.run_id, r.outcome == "running")
                            .values(counts=dict(counts), heartbeat_at=func.now()).returning(r.id)).first()
        if row is None:
            raise RunStopped("this run is no longer marked running (declared abandoned?)")


# --- runs: queue, claim, finish ----------------------------------------------------------------
def run_dict(row) -> dict:
    m = row._mapping
    return jsonable({"run_id": m["id"], "tenant_id": m["tenant_id"], "kind": m["kind"], "trigger": m["trigger"],
                     "outcome": m["outcome"], "queued_at": m["queued_at"], "started_at": m["started_at"],
                     "finished_at": m["finished_at"], "counts": m["counts"] or {}, "error": m["error"],
                     "retry_after": m["retry_after"]})


def queue_run(store, tenant_id, kind="incremental", trigger="manual", full_since=None) -> dict:
    """Queue a run, or return the tenant's run already waiting (asked for full, it becomes full)."""
    r = sync_runs.c
    for _ in range(5):
        with store.transaction() as s:
            row = s.execute(insert(sync_runs).values(tenant_id=tenant_id, kind=kind, trigger=trigger, outcome="queued",
                                                     full_since=full_since)
                            .on_conflict_do_nothing(index_elements=["tenant_id"],
                                                    index_where=text("outcome = 'queued'"))
                            .returning(*sync_runs.c)).first()
            if row is None:
                query = update(sync_runs).where(r.tenant_id == tenant_id, r.outcome == "queued")
                values = {"kind": "full"} if kind == "full" else {"kind": r.kind}
                row = s.execute(query.values(**values).returning(*sync_runs.c)).first()
            if row is not None:
                return run_dict(row)
    raise RuntimeError("could not queue a sync run")  # the queued run kept being claimed under us


def claim_runs(store, limit, worker) -> list[dict]:
    """Mark up to `limit` queued runs running and return them: oldest first, FOR UPDATE SKIP LOCKED
    (replicas never claim the same run), never a second running run for one tenant (the partial
    unique index backs the NOT EXISTS up when two replicas race)."""
    if limit <= 0:
        return []
    r = sync_runs.c
    other = sync_runs.alias("other")
    claimed = []
    with store.transaction() as s:
        rows = s.execute(select(r.tenant_id, r.id, r.kind, r.full_since)
                         .where(r.outcome == "queued",
                                ~exists().where(other.c.tenant_id == r.tenant_id, other.c.outcome == "running"))
                         .order_by(r.queued_at, r.id).limit(limit)
                         .with_for_update(skip_locked=True, of=sync_runs)).all()
        for row in rows:
            values = {"outcome": "running", "started_at": func.now(), "heartbeat_at": func.now(), "worker": worker}
            if row.kind == "full" and row.full_since is None:
                values["full_since"] = func.now()
            try:
                with s.begin_nested():
                    done = s.execute(update(sync_runs).where(r.tenant_id == row.tenant_id, r.id == row.id)
                                     .values(**values).returning(*sync_runs.c)).first()
            except IntegrityError:
                continue
            claimed.append({**run_dict(done), "full_since": done.full_since})
    return claimed


def finish_run(store, tenant_id, run_id, outcome, counts=None, error=None, retry_after=None) -> bool:
    """Close a running run; False when it was not running any more (e.g. declared abandoned)."""
    assert outcome in FINISHED, outcome
    r = sync_runs.c
    values = {"outcome": outcome, "finished_at": func.now(), "heartbeat_at": func.now(),
              "error": (error or None) and str(error)[:2000], "retry_after": retry_after}
    if counts is not None:
        values["counts"] = dict(counts)
    with store.transaction() as s:
        row = s.execute(update(sync_runs).where(r.tenant_id == tenant_id, r.id == run_id, r.outcome == "running")
                        .values(**values).returning(r.id)).first()
    return row is not None


def fail_stale_runs(store, stale_seconds) -> list[tuple[str, int]]:
    """Runs whose process died (no heartbeat for stale_seconds) end `failed`; the tenant can run again."""
    r = sync_runs.c
    with store.transaction() as s:
        rows = s.execute(update(sync_runs)
                         .where(r.outcome == "running",
                                r.heartbeat_at < func.now() - literal(dt.timedelta(seconds=stale_seconds)))
                         .values(outcome="failed", finished_at=func.now(),
                                 error=f"abandoned: no heartbeat for {stale_seconds:g}s (the process running it "
                                       "stopped); the next run resumes")
                         .returning(r.tenant_id, r.id)).all()
    return [(row.tenant_id, row.id) for row in rows]


_SCHEDULER_VIEW = text("""
SELECT t.tenant_id,
       EXISTS (SELECT 1 FROM sync_runs q WHERE q.tenant_id = t.tenant_id AND q.outcome = 'queued')
         OR EXISTS (SELECT 1 FROM sync_runs q WHERE q.tenant_id = t.tenant_id AND q.outcome = 'running') AS active,
       (SELECT min(f.queued_at) FROM sync_runs f WHERE f.tenant_id = t.tenant_id) AS first_queued_at,
       (SELECT max(f.queued_at) FROM sync_runs f WHERE f.tenant_id = t.tenant_id AND f.kind = 'full')
         AS last_full_queued_at,
       l.kind, l.outcome, l.queued_at, l.finished_at, l.retry_after, l.full_since
FROM unnest(CAST(:tenant_ids AS text[])) AS t(tenant_id)
LEFT JOIN LATERAL (SELECT r.kind, r.outcome, r.queued_at, r.finished_at, r.retry_after, r.full_since
                   FROM sync_runs r WHERE r.tenant_id = t.tenant_id ORDER BY r.id DESC LIMIT 1) l ON true
""")


def scheduler_view(store, tenant_ids) -> tuple[dt.datetime, dict[str, domain.TenantRuns]]:
    """The database clock and, per tenant, what sync_due needs: index look-ups per tenant (primary key
    and (tenant_id, queued_at)), never a pass over every run ever made."""
    tenant_ids = sorted({str(t) for t in tenant_ids})
    view = {}
    with store.transaction() as s:
        now = s.execute(select(func.now())).scalar_one()
        if not tenant_ids:
            return now, view
        for row in s.execute(_SCHEDULER_VIEW, {"tenant_ids": tenant_ids}):
            latest = None if row.outcome is None else {
                "kind": row.kind, "outcome": row.outcome, "queued_at": row.queued_at,
                "finished_at": row.finished_at, "retry_after": row.retry_after, "full_since": row.full_since}
            view[row.tenant_id] = domain.TenantRuns(active=bool(row.active), latest=latest,
                                                    first_queued_at=row.first_queued_at,
                                                    last_full_queued_at=row.last_full_queued_at)
    return now, view


def prune_runs(store, tenant_ids, keep_days) -> int:
    """Forget the listed tenants' finished runs queued more than keep_days ago (a tenant makes ~100
    runs a day); by (tenant_id, queued_at), so it never scans the whole table."""
    tenant_ids = sorted({str(t) for t in tenant_ids})
    if not tenant_ids:
        return 0
    r = sync_runs.c
    with store.transaction() as s:
        result = s.execute(sync_runs.delete().where(
            r.tenant_id.in_(tenant_ids), r.queued_at < func.now() - literal(dt.timedelta(days=keep_days)),
            r.outcome.in_(FINISHED)))
    return result.rowcount or 0


# --- reads for the gateway (always inside the caller's tenant) ------------------------------------
def _run_id(run_id) -> int:
    try:
        return int(str(run_id))
    except (TypeError, ValueError):
        raise NotFound("no such sync run") from None


def list_runs(store, tenant_id, page=1, per_page=50) -> dict:
    page, per_page = page_params(page, per_page)
    r = sync_runs.c
    with store.transaction() as s:
        total = s.execute(select(func.count()).where(r.tenant_id == tenant_id)).scalar_one()
        rows = s.execute(select(sync_runs).where(r.tenant_id == tenant_id).order_by(r.id.desc())
                         .limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([run_dict(row) for row in rows], total, page, per_page)


def get_run(store, tenant_id, run_id) -> dict:
    r = sync_runs.c
    with store.transaction() as s:
        row = s.execute(select(sync_runs).where(r.tenant_id == tenant_id, r.id == _run_id(run_id))).first()
    if row is None:
        raise NotFound("no such sync run")
    return run_dict(row)


def list_quarantine(store, tenant_id, page=1, per_page=50, include_resolved=False) -> dict:
    page, per_page = page_params(page, per_page)
    q = quarantine.c
    where = [q.tenant_id == tenant_id]
    if not _flag(include_resolved):
        where.append(q.resolved_at.is_(None))
    with store.transaction() as s:
        total = s.execute(select(func.count()).select_from(quarantine).where(*where)).scalar_one()
        rows = s.execute(select(quarantine).where(*where).order_by(q.last_seen.desc(), q.id.desc())
                         .limit(per_page).offset((page - 1) * per_page)).all()
    items = [jsonable({"id": r.id, "run_id": r.run_id, "record_type": r.record_type, "record_id": r.record_id,
                       "field": r.field, "reason": r.reason, "payload": r.payload, "occurrences": r.occurrences,
                       "first_seen": r.first_seen, "last_seen": r.last_seen, "resolved_at": r.resolved_at})
             for r in rows]
    return envelope(items, total, page, per_page)


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _like(search) -> str:
    text = str(search).strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{text}%"


def list_lines(store, tenant_id, page=1, per_page=50, search=None, status=None) -> dict:
    page, per_page = page_params(page, per_page)
    line, cust = subscription_lines.c, customers.c
    joined = subscription_lines.outerjoin(customers, and_(customers.c.tenant_id == line.tenant_id,
                                                          customers.c.customer_id == line.customer_id))
    where = [line.tenant_id == tenant_id]
    if status not in (None, ""):
        if status not in SUBSCRIPTION_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(SUBSCRIPTION_STATUSES)}")
        where.append(line.status == status)
    if search not in (None, "") and str(search).strip():
        pattern = _like(search)
        where.append(or_(line.subscription_id.ilike(pattern), line.mpn.ilike(pattern), line.name.ilike(pattern),
                         line.customer_id.ilike(pattern), cust.name.ilike(pattern)))
    columns = [*(getattr(line, n) for n in LINE_COLUMNS), line.updated_at, cust.name.label("customer_name")]
    with store.transaction() as s:
        total = s.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
        rows = s.execute(select(*columns).select_from(joined).where(*where)
                         .order_by(cust.name, line.customer_id, line.subscription_id, line.mpn)
                         .limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([jsonable(dict(r._mapping)) for r in rows], total, page, per_page)


def list_customers(store, tenant_id, page=1, per_page=50, search=None) -> dict:
    page, per_page = page_params(page, per_page)
    c = customers.c
    where = [c.tenant_id == tenant_id]
    if search not in (None, "") and str(search).strip():
        pattern = _like(search)
        where.append(or_(c.name.ilike(pattern), c.domain.ilike(pattern), c.customer_id.ilike(pattern)))
    with store.transaction() as s:
        total = s.execute(select(func.count()).select_from(customers).where(*where)).scalar_one()
        rows = s.execute(select(c.customer_id, c.name, c.status, c.domain, c.updated_at,
                                c.raw["externalId"].astext.label("external_id"))
                         .where(*where).order_by(c.name, c.customer_id)
                         .limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([jsonable(dict(r._mapping)) for r in rows], total, page, per_page)


def list_products(store, tenant_id, page=1, per_page=50, search=None) -> dict:
    page, per_page = page_params(page, per_page)
    c = products.c
    where = [c.tenant_id == tenant_id]
    if search not in (None, "") and str(search).strip():
        pattern = _like(search)
        where.append(or_(c.name.ilike(pattern), c.mpn.ilike(pattern), c.vendor.ilike(pattern)))
    with store.transaction() as s:
        total = s.execute(select(func.count()).select_from(products).where(*where)).scalar_one()
        rows = s.execute(select(*(getattr(c, n) for n in PRODUCT_COLUMNS), c.updated_at)
                         .where(*where).order_by(c.name, c.mpn)
                         .limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([jsonable(dict(r._mapping)) for r in rows], total, page, per_page)
