"""How each event moves reporting's read models."""
import json

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from services.reporting.models import customers, event_journal


def record(session, source, event_type, event):
    session.execute(insert(event_journal).values(
        event_id=event["event_id"], tenant_id=event["tenant_id"], source=source, event_type=event_type,
        occurred_at=event["occurred_at"], payload=event).on_conflict_do_nothing())


# The claim (processed_events) and the journal row in one round trip: the journal row is written
# only when this consumer claims the event, so a redelivered event changes nothing. Returns the
# number of claims made (0: a duplicate). Plain SQL: the compiled form is cached.
_CLAIM_AND_RECORD = text("""
    WITH claim AS (
        INSERT INTO processed_events (consumer, event_id, tenant_id) VALUES (:consumer, :event_id, :tenant_id)
        ON CONFLICT DO NOTHING RETURNING event_id),
    journal AS (
        INSERT INTO event_journal (event_id, tenant_id, source, event_type, occurred_at, payload)
        SELECT event_id, :tenant_id, :source, :event_type, :occurred_at, CAST(:payload AS jsonb) FROM claim
        ON CONFLICT DO NOTHING)
    SELECT count(*) FROM claim""")


def claim_and_record(session, consumer, source, event_type, event):
    """True when this consumer had not handled the event (now claimed and journaled)."""
    return session.execute(_CLAIM_AND_RECORD, {
        "consumer": consumer, "event_id": event["event_id"], "tenant_id": event["tenant_id"], "source": source,
        "event_type": event_type, "occurred_at": event["occurred_at"], "payload": json.dumps(event)}).scalar() > 0


def customer(session, event):
    values = {"name": event["name"], "status": event["status"]}
    session.execute(insert(customers).values(tenant_id=event["tenant_id"], customer_id=event["customer_id"],
                                             **values)
                    .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                           set_={**values, "changes_seen": customers.c.changes_seen + 1}))
