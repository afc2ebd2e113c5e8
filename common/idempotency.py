"""Processed-event ids: a consumer handles each event once, even when it is delivered twice.

The claim row is inserted in the same transaction as the handler's changes: if the handler
fails, the claim rolls back with it; if a duplicate arrives concurrently, its insert waits on
the unique key and then finds the row, so exactly one of them does the work.
"""
from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, func, text


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events", metadata,
        Column("consumer", String(120), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )


def claim_event(session, table, consumer, event):
    """True if this consumer has not handled the event before (and now owns it)."""
    result = session.execute(_claim_sql(table), {"consumer": consumer, "event_id": event["event_id"],
                                                 "tenant_id": event["tenant_id"]})
    return result.first() is not None


_CLAIM_SQL = {}


def _claim_sql(table):
    """The claim as plain SQL, one per table: SQLAlchemy cannot cache the compiled form of a
    PostgreSQL INSERT .. ON CONFLICT, and this runs for every event every consumer handles."""
    stmt = _CLAIM_SQL.get(table.name)
    if stmt is None:
        stmt = _CLAIM_SQL[table.name] = text(
            f'INSERT INTO "{table.name}" (consumer, event_id, tenant_id) VALUES (:consumer, :event_id, :tenant_id) '
            "ON CONFLICT DO NOTHING RETURNING event_id")
    return stmt


def claim_events(session, table, consumer, events):
    """The events of ``events`` this consumer has not handled before (now claimed), in their order:
    one statement for a whole envelope instead of one per event."""
    if len(events) == 1:
        return list(events) if claim_event(session, table, consumer, events[0]) else []
    claimed = set(session.execute(_claim_many_sql(table), {
        "consumer": consumer, "ids": [e["event_id"] for e in events],
        "tenants": [e["tenant_id"] for e in events]}).scalars())
    fresh, seen = [], set()
    for e in events:   # an id twice in one envelope is claimed once
        if e["event_id"] in claimed and e["event_id"] not in seen:
            seen.add(e["event_id"])
            fresh.append(e)
    return fresh


_CLAIM_MANY_SQL = {}


def _claim_many_sql(table):
    stmt = _CLAIM_MANY_SQL.get(table.name)
    if stmt is None:
        stmt = _CLAIM_MANY_SQL[table.name] = text(
            f'INSERT INTO "{table.name}" (consumer, event_id, tenant_id) '
            "SELECT DISTINCT ON (event_id) :consumer, event_id, tenant_id "
            "FROM unnest(CAST(:ids AS text[]), CAST(:tenants AS text[])) AS e(event_id, tenant_id) "
            "ON CONFLICT DO NOTHING RETURNING event_id")
    return stmt
