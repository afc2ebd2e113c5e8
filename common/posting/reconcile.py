"""The nightly PSA reconciliation: once a day, after RECONCILE_HOUR_UTC (default 3, an hour after the
marketplace's nightly full sync), every contract line that is in sync is sent round the posting loop
again. The loop reads the PSA before it plans (in batches: Autotask 2 queries per 500 lines), so a
line someone changed by hand is found and held or overwritten per the tenant's setting, a line
the PSA lost is posted again, and a line that matches costs no write. Held and dead lines are left
to the person who deals with them; lines already due are on their way anyway.

Once per tenant per day across replicas: ``start`` claims the day in posting_reconciliations in
the same statement that checks it (``run_on < today``).

The same run checks that no desired state was lost between the mapping service and this one: the
mapping service's last schedule version per contract line is compared with the posting
schedule's (``behind``), and the lines where ours is behind (or missing) are asked for again -
the mapping service sends their whole schedule under new versions. Re-reading the PSA alone would
not find such a loss: it compares the PSA with the posting schedule, which is the part that
missed the event (docs/chaos.md, finding 6).
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


def behind(theirs, ours):
    """[[contract_id, service_id]] where the mapping service sent a newer schedule version than the
    posting schedule holds (or one the posting schedule never got). ``theirs``: [[contract, service,
    version]] from mapping.desired_versions; ``ours``: {(contract, service): desired_version}."""
    return [[c, s] for c, s, v in theirs if ours.get((str(c), str(s)), 0) < int(v)]


def desired_versions(session, tables, tenant_id):
    """{(contract_id, service_id): desired_version} of the tenant's posting schedule."""
    g = tables.groups
    rows = session.execute(text(f"SELECT contract_id, service_id, desired_version FROM {g.name} WHERE tenant_id = :t"),
                           {"t": str(tenant_id)})
    return {(r.contract_id, r.service_id): int(r.desired_version) for r in rows}
