"""How each event moves reporting's read models."""
import json

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from services.reporting.models import customers


# The claims (processed_events) and the journal rows of a whole message in one round trip: a journal
# row is written only when this consumer claims the event, so a redelivered event changes nothing.
# The rows come as one JSON array; plain SQL, so the compiled form is cached.
_CLAIM_AND_RECORD_MANY = text("""
    WITH input AS (
        SELECT DISTINCT ON (x.event_id) x.event_id, x.tenant_id, x.occurred_at, x.payload
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(event_id text, tenant_id text, occurred_at text,
                                                            payload jsonb)),
    claim AS (
        INSERT INTO processed_events (consumer, event_id, tenant_id) SELECT :consumer, event_id, tenant_id FROM input
        ON CONFLICT DO NOTHING RETURNING event_id),
    journal AS (
        INSERT INTO event_journal (event_id, tenant_id, source, event_type, occurred_at, payload)
        SELECT i.event_id, i.tenant_id, :source, :event_type, i.occurred_at, i.payload FROM input i JOIN claim USING (event_id)
        ON CONFLICT DO NOTHING)
    SELECT event_id FROM claim""")


def claim_and_record_many(session, consumer, source, event_type, payloads):
    """The event ids of ``payloads`` this consumer had not handled (now claimed and journaled)."""
    rows = [{"event_id": p["event_id"], "tenant_id": p["tenant_id"], "occurred_at": p["occurred_at"], "payload": p}
            for p in payloads]
    return set(session.execute(_CLAIM_AND_RECORD_MANY, {
        "consumer": consumer, "source": source, "event_type": event_type, "rows": json.dumps(rows)}).scalars())


def customer(session, event):
    values = {"name": event["name"], "status": event["status"]}
    session.execute(insert(customers).values(tenant_id=event["tenant_id"], customer_id=event["customer_id"],
                                             **values)
                    .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                           set_={**values, "changes_seen": customers.c.changes_seen + 1}))
