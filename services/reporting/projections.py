"""How each event moves reporting's read models."""
from sqlalchemy.dialects.postgresql import insert

from services.reporting.models import customers, event_journal


def record(session, source, event_type, event):
    session.execute(insert(event_journal).values(
        event_id=event["event_id"], tenant_id=event["tenant_id"], source=source, event_type=event_type,
        occurred_at=event["occurred_at"], payload=event).on_conflict_do_nothing())


def customer(session, event):
    values = {"name": event["name"], "status": event["status"]}
    session.execute(insert(customers).values(tenant_id=event["tenant_id"], customer_id=event["customer_id"],
                                             **values)
                    .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                           set_={**values, "changes_seen": customers.c.changes_seen + 1}))
