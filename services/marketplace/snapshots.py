"""Writing the marketplace snapshot, with the events it implies, in the caller's transaction."""
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from services.marketplace import domain
from services.marketplace.models import customers


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
    session.execute(insert(customers).values(tenant_id=tenant_id, customer_id=str(record["id"]), raw=record,
                                             **current)
                    .on_conflict_do_update(index_elements=["tenant_id", "customer_id"],
                                           set_={**current, "raw": record}))
    outbox.add(session, "customer_changed", tenant_id, customer_id=str(record["id"]), **current)
    return True
