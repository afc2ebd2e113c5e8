"""The nightly PSA reconciliation: once a day, after RECONCILE_HOUR_UTC (default 3, an hour after the
marketplace's nightly full sync), every contract line that is in sync is sent round the posting loop
again. The loop reads the PSA before it plans (in batches: Autotask 2 queries per 500 lines), so a
line someone changed by hand is found and held or overwritten per the tenant's setting, a line
the PSA lost is posted again, and a line that matches costs no write. Held and dead lines are left
to the person who deals with them; lines already due are on their way anyway.

Once per tenant per day across replicas: ``start`` claims the day in posting_reconciliations in
the same statement that checks it (``run_on < today``).
"""
import datetime as dt

from sqlalchemy import text

from common.posting import states


def due(now: dt.datetime, last_run_on: dt.date | None, hour: int) -> bool:
    """Whether a tenant last reconciled on ``last_run_on`` is due at ``now`` (UTC)."""
    if now.hour < hour:
        return False
    return last_run_on is None or last_run_on < now.date()


def tenants_due(session, tables, now, hour):
    """Tenants with contract lines whose nightly reconciliation has not started today."""
    if now.hour < hour:
        return []
    sql = text(f"""
        SELECT g.tenant_id FROM (SELECT DISTINCT tenant_id FROM {tables.groups.name}) g
        LEFT JOIN {tables.reconciliations.name} r USING (tenant_id)
        WHERE r.run_on IS NULL OR r.run_on < :today ORDER BY g.tenant_id""")
    return [r.tenant_id for r in session.execute(sql, {"today": now.date()})]


def start(session, tables, tenant_id, today, trigger="nightly"):
    """Claim ``today`` for the tenant and send its in-sync lines round; returns how many, or None
    when the day was already claimed (another replica, or earlier today). ``trigger`` "manual"
    runs whatever the day."""
    claim = text(f"""
        INSERT INTO {tables.reconciliations.name} AS r (tenant_id, run_on, started_at, trigger, lines)
        VALUES (:t, :today, now(), :trigger, 0)
        ON CONFLICT (tenant_id) DO UPDATE SET run_on = :today, started_at = now(), trigger = :trigger, lines = 0
            WHERE r.run_on < :today OR :trigger = 'manual'
        RETURNING tenant_id""")
    if session.execute(claim, {"t": str(tenant_id), "today": today, "trigger": trigger}).first() is None:
        return None
    marked = session.execute(text(f"""
        UPDATE {tables.groups.name} SET due_at = now(), touched_at = now(), updated_at = now()
        WHERE tenant_id = :t AND status = :in_sync AND due_at IS NULL"""),
        {"t": str(tenant_id), "in_sync": states.IN_SYNC}).rowcount
    session.execute(text(f"UPDATE {tables.reconciliations.name} SET lines = :n WHERE tenant_id = :t"),
                    {"n": marked, "t": str(tenant_id)})
    return marked


def last_run(session, tables, tenant_id):
    row = session.execute(text(f"""SELECT run_on, started_at, trigger, lines FROM {tables.reconciliations.name}
                                   WHERE tenant_id = :t"""), {"t": str(tenant_id)}).first()
    if row is None:
        return None
    return {"run_on": row.run_on.isoformat(), "started_at": row.started_at.isoformat(), "trigger": row.trigger,
            "lines": row.lines}
