"""SQL of the mapping service that is not a list query: the tenant lock, settings, the copies of
marketplace state, mapping rows, the audit trail and mapping_changed events. Every statement has
the tenant in its WHERE clause or its row."""
import contextlib
import datetime as dt
import decimal
import logging
import uuid

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from common.errors import NotFound
from common.events import make_event
from services.mapping import models as m
from services.mapping.domain import BillingSettings, SubscriptionLine, to_decimal

log = logging.getLogger(__name__)

SYSTEM = "system"
MAPPING_TABLES = {"customer": m.customer_mappings, "product": m.product_mappings, "line": m.line_links}
EVENT_KIND = {"customer": "customer", "product": "product", "line": "contract"}


def now():
    return dt.datetime.now(dt.timezone.utc)


def json_safe(value):
    """Decimals and dates as strings, recursively: what RPC and JSONB columns take."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return money_out(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def tidy(value):
    """A stored Numeric(18,4) as the decimal a person wrote: 20.0000 -> 20.00, 18.7000 -> 18.70,
    10.0050 -> 10.005, 15.0000 (a percentage) -> 15.00."""
    if value is None:
        return None
    value = to_decimal(value)
    cents = value.quantize(decimal.Decimal("0.01"))
    return cents if cents == value else value.normalize()


def money_out(value):
    return None if value is None else format(tidy(value), "f")


def score_out(value):
    return None if value is None else float(value)


# --- locking -------------------------------------------------------------------------------------
def lock_tenant(session, tenant_id):
    """Every recompute of a tenant's desired state runs under this transaction lock: desired
    versions stay monotonic and two events never plan one contract line at once. Taken once per
    transaction: a second call in the same transaction is free (the lock is held until it ends)."""
    held = session.info.setdefault("idsync_tenant_locks", set())
    if tenant_id in held:
        return
    session.execute(_LOCK_SQL, {"k": f"idsync.mapping.tenant:{tenant_id}"})
    held.add(tenant_id)


_LOCK_SQL = text("select pg_advisory_xact_lock(hashtextextended(:k, 0))")


def _forget_locks(session, *_):
    session.info.pop("idsync_tenant_locks", None)


# the transaction lock ends with the transaction: forget it then (a session may run several). The
# service takes no savepoints; one rolled back would release a lock taken inside it.
from sqlalchemy import event as _sa_event  # noqa: E402
from sqlalchemy.orm import Session as _Session  # noqa: E402

_sa_event.listen(_Session, "after_commit", _forget_locks)
_sa_event.listen(_Session, "after_rollback", _forget_locks)


def bulk_mode(session):
    """For statements over a whole tenant (refresh, bulk actions, full recomputes, preview): hash
    joins. Right after a tenant's first big load the planner's statistics do not know it yet and
    estimate one row, which makes nested loops over thousands of rows (the service's role may not
    ANALYZE the tables it does not own)."""
    session.execute(text("SET LOCAL enable_nestloop = off"))


@contextlib.contextmanager
def keyed_statements(session):
    """Statements about one contract line at a time (recompute's writes) want index lookups: nested
    loops back on for them, whatever bulk_mode set for the transaction's whole-tenant statements.
    Left off, every per-line UPDATE ... FROM (a few keys) hash-joined the tenant's whole lines table:
    a bulk accept of 50,000 lines (32,000 contract lines) ran for over 20 minutes in PostgreSQL."""
    was = session.execute(text("SHOW enable_nestloop")).scalar()
    if was != "on":
        session.execute(text("SET LOCAL enable_nestloop = on"))
    try:
        yield
    finally:
        if was != "on":
            session.execute(text("SET LOCAL enable_nestloop = off"))


# --- settings ------------------------------------------------------------------------------------
def settings_row(session, tenant_id, create=True):
    row = session.execute(select(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id)).first()
    if row is None and create:
        session.execute(insert(m.billing_settings).values(tenant_id=tenant_id).on_conflict_do_nothing())
        row = session.execute(select(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id)).first()
    return None if row is None else dict(row._mapping)


DEFAULT_SETTINGS = {"psa": None, "posting_mode": "auto", "threshold_units": None, "threshold_percent": None,
                    "bill_suspended": False, "credit_decreases_immediately": False, "edited_in_psa": "hold",
                    "references_refreshed_at": None, "refresh_requested_at": None, "refresh_attempted_at": None,
                    "refresh_error": None, "updated_by": None, "updated_at": None}


def settings_or_defaults(session, tenant_id):
    """The tenant's settings without creating a row (reads write nothing)."""
    return settings_row(session, tenant_id, create=False) or {"tenant_id": tenant_id, **DEFAULT_SETTINGS}


def billing_settings(row):
    """The domain's BillingSettings from a billing_settings row (defaults when there is none)."""
    if row is None:
        return BillingSettings()
    return BillingSettings(row["posting_mode"], row["threshold_units"], row["threshold_percent"],
                           row["bill_suspended"], row["credit_decreases_immediately"], row["edited_in_psa"])


SETTINGS_FIELDS = ("psa", "posting_mode", "threshold_units", "threshold_percent", "bill_suspended",
                   "credit_decreases_immediately", "edited_in_psa")


def settings_out(row):
    out = {f: row[f] for f in SETTINGS_FIELDS}
    out["threshold_percent"] = money_out(row["threshold_percent"])
    out["references_refreshed_at"] = json_safe(row["references_refreshed_at"])
    out["refresh_error"] = row["refresh_error"]
    out["updated_by"] = row["updated_by"]
    out["updated_at"] = json_safe(row["updated_at"])
    return out


def set_psa(session, tenant_id, psa):
    settings_row(session, tenant_id)
    session.execute(update(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id).values(psa=psa))


def request_refresh(session, tenant_id):
    """Ask the timer to read the PSA's records for this tenant (the cache is empty)."""
    settings_row(session, tenant_id)
    session.execute(update(m.billing_settings)
                    .where(m.billing_settings.c.tenant_id == tenant_id,
                           m.billing_settings.c.refresh_requested_at.is_(None))
                    .values(refresh_requested_at=func.now()))


# --- copies of marketplace state -----------------------------------------------------------------
def upsert_customer(session, tenant_id, event):
    """Returns (is_new, name_or_domain_moved)."""
    t = m.customers
    old = session.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.customer_id == event["customer_id"])
                          .with_for_update()).first()
    values = {"name": event["name"], "domain": event.get("domain"), "status": event.get("status") or "active",
              "placeholder": False}
    if old is None:
        session.execute(insert(t).values(tenant_id=tenant_id, customer_id=event["customer_id"], **values)
                        .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                               set_={**values, "updated_at": func.now()}))
        return True, True
    moved = old.name != values["name"] or (old.domain or None) != (values["domain"] or None) or old.placeholder
    session.execute(update(t).where(t.c.tenant_id == tenant_id, t.c.customer_id == event["customer_id"])
                    .values(**values, updated_at=func.now()))
    return False, moved


def upsert_product(session, tenant_id, event):
    t = m.products
    old = session.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.mpn == event["mpn"])
                          .with_for_update()).first()
    values = {"name": event["name"], "vendor": event.get("vendor"), "unit_price": to_decimal(event.get("unit_price")),
              "unit_cost": to_decimal(event.get("unit_cost")), "currency": event.get("currency") or "USD",
              "billing_period": event.get("billing_period"), "placeholder": False}
    if old is None:
        session.execute(insert(t).values(tenant_id=tenant_id, mpn=event["mpn"], **values)
                        .on_conflict_do_update(index_elements=["tenant_id", "mpn"],
                                               set_={**values, "updated_at": func.now()}))
        return True, True
    moved = old.name != values["name"] or old.placeholder
    session.execute(update(t).where(t.c.tenant_id == tenant_id, t.c.mpn == event["mpn"])
                    .values(**values, updated_at=func.now()))
    return False, moved


def ensure_placeholders(session, tenant_id, customer_id, mpn, present=None):
    """A line can arrive before its customer or product: keep a placeholder so lists and joins
    work; the real record replaces it when its event comes. ``present`` (from line_presence) skips
    the rows known to exist."""
    if present is None or not present["customer"]:
        session.execute(insert(m.customers).values(tenant_id=tenant_id, customer_id=customer_id, name=customer_id,
                                                   placeholder=True).on_conflict_do_nothing())
    if present is None or not present["product"]:
        session.execute(insert(m.products).values(tenant_id=tenant_id, mpn=mpn, name=mpn, placeholder=True)
                        .on_conflict_do_nothing())


# One round trip instead of five INSERT .. ON CONFLICT DO NOTHING for a line seen before (the
# usual case: a change of a known line). Callers hold the tenant lock, so what it says cannot be
# made stale by another worker of the service; ensure_* still insert with ON CONFLICT DO NOTHING.
_PRESENCE_SQL = text("""
    SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = :t AND customer_id = :c) AS customer,
           EXISTS (SELECT 1 FROM products WHERE tenant_id = :t AND mpn = :m) AS product,
           EXISTS (SELECT 1 FROM customer_mappings WHERE tenant_id = :t AND customer_id = :c) AS customer_mapping,
           EXISTS (SELECT 1 FROM product_mappings WHERE tenant_id = :t AND mpn = :m) AS product_mapping,
           EXISTS (SELECT 1 FROM line_links WHERE tenant_id = :t AND subscription_id = :s AND mpn = :m) AS line_link""")


def line_presence(session, tenant_id, customer_id, mpn, subscription_id):
    """Which of a line's customer, product (copies) and mapping rows exist: a dict of booleans."""
    row = session.execute(_PRESENCE_SQL, {"t": tenant_id, "c": customer_id, "m": mpn, "s": subscription_id}).one()
    return dict(row._mapping)


def ensure_mapping_row(session, kind, tenant_id, key):
    """Creates the unmapped row of a mapping item; True when it is new."""
    table = MAPPING_TABLES[kind]
    values = {"tenant_id": tenant_id, **key_columns(kind, key)}
    return session.execute(insert(table).values(**values).on_conflict_do_nothing()
                           .returning(table.c.tenant_id)).first() is not None


def record_line(session, tenant_id, event):
    """Keep a line state from a subscription_line_changed event. Every state goes to the history
    (for the day-by-day replay); the current copy moves only forward in line_version.
    Returns "changed" | "stale"."""
    seen_at = dt.datetime.fromisoformat(event["seen_at"].replace("Z", "+00:00"))
    if seen_at.tzinfo is None:
        seen_at = seen_at.replace(tzinfo=dt.timezone.utc)
    state = {"customer_id": event["customer_id"], "quantity": event["quantity"], "status": event["status"],
             "unit_price": to_decimal(event.get("unit_price")), "unit_cost": to_decimal(event.get("unit_cost")),
             "currency": event.get("currency") or "USD", "seen_at": seen_at}
    params = {"tenant_id": tenant_id, "subscription_id": event["subscription_id"], "mpn": event["mpn"],
              "line_version": event["line_version"], "event_id": event["event_id"], "change": event.get("change"),
              **state}
    # plain SQL: SQLAlchemy cannot cache the compiled form of a PostgreSQL INSERT .. ON CONFLICT, and
    # this runs for every line event
    session.execute(_LINE_STATE_SQL, params)
    if session.execute(_LINE_SQL, params).first() is None:
        return "stale"   # a newer version of the line is already here (its state stays in the history)
    return "changed"


_STATE_COLUMNS = ("customer_id", "quantity", "status", "unit_price", "unit_cost", "currency", "seen_at")
_LINE_STATE_SQL = text(
    "INSERT INTO line_states (tenant_id, subscription_id, mpn, line_version, event_id, "
    + ", ".join(_STATE_COLUMNS) + ") VALUES (:tenant_id, :subscription_id, :mpn, :line_version, :event_id, "
    + ", ".join(f":{c}" for c in _STATE_COLUMNS) + ") "
    "ON CONFLICT (tenant_id, subscription_id, mpn, line_version) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STATE_COLUMNS) + ", event_id = excluded.event_id")
_LINE_SQL = text(
    "INSERT INTO lines (tenant_id, subscription_id, mpn, line_version, change, " + ", ".join(_STATE_COLUMNS)
    + ") VALUES (:tenant_id, :subscription_id, :mpn, :line_version, :change, "
    + ", ".join(f":{c}" for c in _STATE_COLUMNS) + ") "
    "ON CONFLICT (tenant_id, subscription_id, mpn) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STATE_COLUMNS)
    + ", line_version = excluded.line_version, change = excluded.change, updated_at = now() "
    "WHERE lines.line_version <= excluded.line_version RETURNING line_version")


def subscription_line(row):
    """A domain SubscriptionLine from a line_states (or lines) row."""
    return SubscriptionLine(row.subscription_id, row.mpn, row.customer_id, row.quantity, row.status,
                            tidy(row.unit_price), tidy(row.unit_cost), row.seen_at, row.currency or "USD", row.line_version)


# --- mapping rows, audit, events -----------------------------------------------------------------
def key_columns(kind, key):
    if kind == "customer":
        return {"customer_id": key}
    if kind == "product":
        return {"mpn": key}
    subscription_id, mpn = split_line_key(key)
    return {"subscription_id": subscription_id, "mpn": mpn}


def split_line_key(key):
    if isinstance(key, (tuple, list)):
        return str(key[0]), str(key[1])
    subscription_id, sep, mpn = str(key).partition("/")
    if not sep or not subscription_id or not mpn:
        from common.errors import BadRequest

        raise BadRequest(f"a line key is subscription_id/mpn, not {key!r}")
    return subscription_id, mpn


def line_key_text(subscription_id, mpn):
    return f"{subscription_id}/{mpn}"


def where_key(table, kind, tenant_id, key):
    cols = key_columns(kind, key)
    return and_(table.c.tenant_id == tenant_id, *[table.c[c] == v for c, v in cols.items()])


def mapping_row(session, kind, tenant_id, key, lock=False):
    table = MAPPING_TABLES[kind]
    query = select(table).where(where_key(table, kind, tenant_id, key))
    if lock:
        query = query.with_for_update()
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"no such {kind} {key!r}")
    return dict(row._mapping)


PSA_COLUMN = {"customer": "psa_company_id", "product": "psa_service_id", "line": "psa_contract_id"}
DECISION_FIELDS = ("status", "score", "method", "reason", "price_rule", "markup_pct", "fixed_price")


def decision_snapshot(kind, row):
    if row is None:
        return None
    out = {"psa_id": row.get(PSA_COLUMN[kind])}
    out.update({f: row[f] for f in DECISION_FIELDS if f in row})
    return json_safe(out)


def set_mapping(session, outbox, kind, tenant_id, key, values, *, actor, action, before=None):
    """Write one mapping item's decision, its audit row and its mapping_changed event."""
    if before is None:
        before = mapping_row(session, kind, tenant_id, key, lock=True)
    return set_mappings(session, outbox, kind, tenant_id, [(key, before, values)], actor=actor, action=action)[0]


def set_mappings(session, outbox, kind, tenant_id, changes, *, actor, action, audited=True):
    """Write many mapping decisions at once: [(key, row before, new values)]. One UPDATE per set of
    columns (executemany), the audit rows (unless ``audited`` is False: automatic suggestions are
    not decisions) and a mapping_changed event for every item whose status or PSA id moved."""
    if not changes:
        return []
    table = MAPPING_TABLES[kind]
    by_columns = {}
    for key, before, values in changes:
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {**key_columns(kind, key), **values})
    key_cols = list(key_columns(kind, changes[0][0]))
    for columns, rows in by_columns.items():
        bulk_update(session, table, tenant_id, key_cols, list(columns), rows)
    results, audits, events = [], [], []
    psa_column = PSA_COLUMN[kind]
    for key, before, values in changes:
        after = {**before, **values}
        results.append(after)
        if audited:
            audits.append({"tenant_id": tenant_id, "actor": actor or SYSTEM, "kind": kind, "key": key_text(kind, key),
                           "action": action, "before": decision_snapshot(kind, before),
                           "after": decision_snapshot(kind, after)})
        if (before.get("status"), before.get(psa_column)) != (after.get("status"), after.get(psa_column)):
            events.append({"kind": EVENT_KIND[kind], "key": key_text(kind, key), "status": after["status"],
                           "psa_id": after.get(psa_column)})
    if audits:
        session.execute(m.mapping_audit.insert(), audits)
    if outbox is not None:
        add_events(session, outbox, "mapping_changed", tenant_id, events)
    return results


def bulk_update(session, table, tenant_id, key_cols, value_cols, rows, page_size=1000):
    """UPDATE many rows of one tenant with one statement a page: UPDATE .. FROM (VALUES ..), the
    tenant in every VALUES row. ``rows``: dicts with the key and value columns."""
    from psycopg2.extras import execute_values
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    match_cols = ["tenant_id"] + list(key_cols)
    cols = match_cols + list(value_cols)
    template = "(" + ", ".join(f"%s::{table.c[c].type.compile(dialect=dialect)}" for c in cols) + ")"
    sets = ", ".join(f'"{c}" = v."{c}"' for c in value_cols)
    match = " AND ".join(f't."{c}" = v."{c}"' for c in match_cols)
    names = ", ".join(f'"{c}"' for c in cols)
    sql = f'UPDATE "{table.name}" AS t SET {sets}, "updated_at" = now() FROM (VALUES %s) AS v({names}) WHERE {match}'
    raw = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:
        execute_values(cursor, sql, [tuple(tenant_id if c == "tenant_id" else r[c] for c in cols) for r in rows],
                       template=template, page_size=page_size)
    return len(rows)


def add_events(session, outbox, event_type, tenant_id, payloads):
    """Many events through the outbox in one INSERT (Outbox.add writes one row a call). The first
    payload is validated by the catalog (make_event); the others have the same shape."""
    if not payloads:
        return
    if len(payloads) == 1:
        outbox.add(session, event_type, tenant_id, **payloads[0])
        return
    first = make_event(outbox.source, event_type, tenant_id, **payloads[0])
    envelope = {k: first[k] for k in ("tenant_id", "occurred_at", "schema_version")}
    rows = [{"event_id": first["event_id"], "event_type": event_type, "tenant_id": first["tenant_id"], "payload": first}]
    for payload in payloads[1:]:
        body = {"event_id": str(uuid.uuid4()), **envelope, **json_safe(payload)}
        rows.append({"event_id": body["event_id"], "event_type": event_type, "tenant_id": body["tenant_id"],
                     "payload": body})
    for i in range(0, len(rows), 1000):
        session.execute(outbox.table.insert(), rows[i:i + 1000])
    relay = getattr(outbox, "_relay", None)
    if relay is not None:
        relay.wake_after_commit(session)


def key_text(kind, key):
    if kind == "line":
        return line_key_text(*split_line_key(key))
    return str(key)


def audit(session, tenant_id, actor, kind, key, action, before=None, after=None):
    session.execute(m.mapping_audit.insert().values(tenant_id=tenant_id, actor=actor or SYSTEM, kind=kind, key=key,
                                                    action=action, before=json_safe(before), after=json_safe(after)))


def audit_trail(session, tenant_id, kind=None, key=None, limit=100):
    t = m.mapping_audit
    query = select(t).where(t.c.tenant_id == tenant_id)
    if kind:
        query = query.where(t.c.kind == kind)
    if key:
        query = query.where(t.c.key == key)
    rows = session.execute(query.order_by(t.c.id.desc()).limit(limit)).all()
    return [json_safe({k: v for k, v in r._mapping.items() if k != "tenant_id"}) for r in rows]
