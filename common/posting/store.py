"""SQL around the posting loop that runs in RPC and event workers: take in a desired state, list
the ledger and the failure log, retry. Every statement carries the tenant in its WHERE clause."""
import datetime as dt

from sqlalchemy import func, select, text, tuple_, update

from common.errors import BadRequest
from common.paging import page_params, paginate
from common.posting import schedule, states
from common.posting.engine import json_safe

LEDGER_FIELDS = ("id", "idempotency_key", "contract_id", "service_id", "operation", "state", "effective_date",
                 "quantity_before", "quantity_after", "unit_change", "unit_price", "unit_cost",
                 "desired_version", "attempts", "vendor_item_id", "vendor_message", "outcome_unknown",
                 "next_attempt_at", "created_at", "updated_at", "sent_at", "posted_at")


def _parse_time(value):
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def record_desired_many(session, tables, tenant_id, events):
    """Fold a message's LineDesired events (one tenant) into the schedule: the contract lines they
    name are locked with one statement (in key order, so two batches never deadlock), the events
    of each line folded in order, and each line that moved is written once. Returns how many
    lines moved (are now due for posting)."""
    if not events:
        return 0
    g = tables.groups
    by_key = {}
    for event in events:
        by_key.setdefault((str(event["contract_id"]), str(event["service_id"])), []).append(event)
    keys = sorted(by_key)

    def locked(wanted):
        query = (select(g).where(g.c.tenant_id == tenant_id, tuple_(g.c.contract_id, g.c.service_id).in_(wanted))
                 .order_by(g.c.contract_id, g.c.service_id).with_for_update())
        return {(r.contract_id, r.service_id): dict(r._mapping) for r in session.execute(query)}

    rows = locked(keys)
    missing = [k for k in keys if k not in rows]
    if missing:   # new lines (an existing one costs no insert attempt)
        session.execute(_insert_group_sql(g), [
            {"tenant_id": tenant_id, "contract_id": c, "service_id": sv,
             "company_id": next((e.get("company_id") for e in by_key[(c, sv)] if e.get("company_id")), None)}
            for c, sv in missing])
        rows.update(locked(missing))
    moved = 0
    for key in keys:
        values = _fold(rows[key], by_key[key])
        if values is None:
            continue
        first_seen = values.pop("first_seen")
        session.execute(update(g).where(g.c.tenant_id == tenant_id, g.c.contract_id == key[0],
                                        g.c.service_id == key[1]).values(
            **values, seq=g.c.seq + 1, due_at=func.now(), touched_at=func.now(),
            changed_at=func.coalesce(g.c.changed_at, first_seen or func.now()),
            status=states.PENDING, status_message=None, failures=0, updated_at=func.now()))
        moved += 1
    return moved


def _fold(row, events):
    """The schedule columns after folding ``events`` (in order) into the row, or None when none of
    them changes anything (duplicates, or covered by newer versions)."""
    desired = list(row["desired"] or [])
    version, pending_from, company = int(row["desired_version"]), row["pending_from"], row["company_id"]
    first_seen, any_accepted = None, False
    for event in events:
        bp = schedule.breakpoint_from_event(event)
        folded, accepted = schedule.apply_event(desired, bp)
        if not accepted:
            continue
        desired = folded
        any_accepted = True
        day = dt.date.fromisoformat(bp["date"])
        pending_from = day if pending_from is None else min(pending_from, day)
        desired = schedule.prune(desired, pending_from)
        version = max(version, bp["version"])
        company = event.get("company_id") or company
        first_seen = first_seen or _parse_time(event.get("occurred_at"))
    if not any_accepted:
        return None
    return {"desired": desired, "desired_version": version, "pending_from": pending_from, "company_id": company,
            "first_seen": first_seen}


_INSERT_GROUP = {}


def _insert_group_sql(groups):
    """Plain SQL, built once per table: SQLAlchemy cannot cache INSERT .. ON CONFLICT."""
    if groups.name not in _INSERT_GROUP:
        _INSERT_GROUP[groups.name] = text(
            f"INSERT INTO {groups.name} (tenant_id, contract_id, service_id, company_id) "
            "VALUES (:tenant_id, :contract_id, :service_id, :company_id) "
            "ON CONFLICT (tenant_id, contract_id, service_id) DO NOTHING")
    return _INSERT_GROUP[groups.name]


def _row_out(row):
    return json_safe({f: row[f] for f in LEDGER_FIELDS})


def ledger_page(session, tables, tenant_id, page=1, per_page=50, state=None, contract_id=None, service_id=None):
    page, per_page = page_params(page, per_page)
    led = tables.ledger
    query = select(*(led.c[f] for f in LEDGER_FIELDS)).where(led.c.tenant_id == str(tenant_id))
    if state:
        wanted = [state] if isinstance(state, str) else list(state)
        bad = [s for s in wanted if s not in states.STATES]
        if bad:
            raise BadRequest(f"state must be one of {', '.join(states.STATES)}")
        query = query.where(led.c.state.in_(wanted))
    if contract_id is not None:
        query = query.where(led.c.contract_id == str(contract_id))
    if service_id is not None:
        query = query.where(led.c.service_id == str(service_id))
    return paginate(session, query.order_by(led.c.id.desc()), page, per_page, lambda r: _row_out(r._mapping))


def failures_page(session, tables, tenant_id, page=1, per_page=50):
    """The failure log: dead operations (need a person), failed ones (being retried) and held ones
    (edited in the PSA), newest change first."""
    page, per_page = page_params(page, per_page)
    led = tables.ledger
    query = (select(*(led.c[f] for f in LEDGER_FIELDS))
             .where(led.c.tenant_id == str(tenant_id), led.c.state.in_(states.FAILURE_LOG))
             .order_by(led.c.updated_at.desc(), led.c.id.desc()))
    return paginate(session, query, page, per_page, lambda r: _row_out(r._mapping))


def held_lines(session, tables, tenant_id, limit=1000):
    """The contract lines held because someone edited them in the PSA (one entry per line: the
    newest held operation, its id for a retry, and why): the mapping screens show them as conflicts."""
    led = tables.ledger
    rows = session.execute(select(led.c.id, led.c.contract_id, led.c.service_id, led.c.vendor_message,
                                  led.c.updated_at)
                           .where(led.c.tenant_id == str(tenant_id), led.c.state == states.HELD)
                           .order_by(led.c.id.desc()).limit(int(limit))).all()
    out = {}
    for r in rows:
        out.setdefault((r.contract_id, r.service_id), json_safe({
            "posting_id": r.id, "contract_id": r.contract_id, "service_id": r.service_id,
            "vendor_message": r.vendor_message, "held_since": r.updated_at}))
    return list(out.values())


def line_states(session, tables, tenant_id, keys, today=None):
    """{"contract_id/service_id": {status, status_message, psa_quantity, last_posted_at, failures}} for
    the given contract lines ([contract_id, service_id] pairs, at most 500): psa_quantity is what
    the PSA showed at our last read or confirmed write, for ``today``."""
    try:
        wanted = sorted({(str(c), str(s)) for c, s in (keys or [])})
    except (TypeError, ValueError):
        raise BadRequest("keys must be [contract_id, service_id] pairs") from None
    if len(wanted) > 500:
        raise BadRequest("at most 500 contract lines at a time")
    if not wanted:
        return {}
    today = today or dt.date.today()
    g = tables.groups
    rows = session.execute(select(g.c.contract_id, g.c.service_id, g.c.status, g.c.status_message, g.c.expected,
                                  g.c.last_posted_at, g.c.failures)
                           .where(g.c.tenant_id == str(tenant_id),
                                  tuple_(g.c.contract_id, g.c.service_id).in_(wanted))).all()
    return {f"{r.contract_id}/{r.service_id}": json_safe({
        "status": r.status, "status_message": r.status_message, "psa_quantity": schedule.step_at(r.expected, today),
        "last_posted_at": r.last_posted_at, "failures": r.failures}) for r in rows}


def retry(session, tables, tenant_id, posting_ids):
    """Send dead/failed/held operations' lines round again at once. A held line is overwritten
    (the person reviewed it); a dead or failed operation gets its attempts back. The line is re-read
    and re-planned, so what is posted is whatever the PSA needs now. Returns how many were retried."""
    try:
        ids = sorted({int(i) for i in (posting_ids or [])})
    except (TypeError, ValueError):
        raise BadRequest("posting_ids must be a list of integers") from None
    if not ids:
        return 0
    led, g = tables.ledger, tables.groups
    rows = session.execute(select(led.c.id, led.c.state, led.c.contract_id, led.c.service_id)
                           .where(led.c.tenant_id == str(tenant_id), led.c.id.in_(ids),
                                  led.c.state.in_(states.RETRYABLE)).with_for_update()).all()
    if not rows:
        return 0
    held_lines = {(r.contract_id, r.service_id) for r in rows if r.state == states.HELD}
    other = [r.id for r in rows if r.state != states.HELD]
    if other:
        session.execute(update(led).where(led.c.tenant_id == str(tenant_id), led.c.id.in_(other))
                        .values(state=states.PLANNED, attempts=0, next_attempt_at=None, outcome_unknown=False,
                                updated_at=func.now()))
    held_ids = [r.id for r in rows if r.state == states.HELD]
    if held_ids:
        session.execute(update(led).where(led.c.tenant_id == str(tenant_id), led.c.id.in_(held_ids))
                        .values(state=states.SUPERSEDED, updated_at=func.now(),
                                vendor_message=led.c.vendor_message + " - overwritten on request"))
    for contract_id, service_id in {(r.contract_id, r.service_id) for r in rows}:
        values = {"due_at": func.now(), "touched_at": func.now(), "seq": g.c.seq + 1, "status": states.PENDING, "failures": 0,
                  "updated_at": func.now(),
                  "pending_from": func.coalesce(g.c.pending_from, func.current_date())}
        if (contract_id, service_id) in held_lines:
            values.update(overwrite_once=True, edit_round=g.c.edit_round + 1)
        session.execute(update(g).where(g.c.tenant_id == str(tenant_id), g.c.contract_id == contract_id,
                                        g.c.service_id == service_id).values(**values))
    return len(rows)


def line_status(session, tables, tenant_id):
    """Counts of contract lines per status (in_sync, pending, waiting, held, failed)."""
    g = tables.groups
    counts = dict(session.execute(select(g.c.status, func.count()).where(g.c.tenant_id == str(tenant_id))
                                  .group_by(g.c.status)).all())
    return {s: int(counts.get(s, 0)) for s in states.GROUP_STATUSES}
