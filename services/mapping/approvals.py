"""Deciding approvals: approve sends the waiting change (with the approver's date when given),
reject keeps what was last sent and records the note."""
import datetime as dt

from sqlalchemy import select, update

from common.errors import BadRequest, Conflict, NotFound
from services.mapping import models as m
from services.mapping import planner, recompute, store

DECISIONS = ("approve", "reject")


def parse_date(value):
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise BadRequest(f"effective_date must be an ISO date (YYYY-MM-DD), not {value!r}") from None


def decide(session, outbox, tenant_id, approval_ids, decision, note=None, effective_date=None, actor=None):
    if decision not in DECISIONS:
        raise BadRequest("decision must be approve or reject")
    if isinstance(approval_ids, (str, int)):
        approval_ids = [approval_ids]
    ids = [str(i) for i in (approval_ids or [])]
    if not ids:
        raise BadRequest("approval_ids must list at least one approval")
    if note is not None and not isinstance(note, str):
        raise BadRequest("note must be text")
    override = parse_date(effective_date)
    if override is not None and decision == "reject":
        raise BadRequest("effective_date only applies when approving")
    store.lock_tenant(session, tenant_id)
    ap = m.approvals
    rows = {r.id: dict(r._mapping) for r in session.execute(
        select(ap).where(ap.c.tenant_id == tenant_id, ap.c.id.in_(sorted(set(ids)))).with_for_update())}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFound(f"no such approval: {', '.join(missing)}")
    decided = [i for i in ids if rows[i]["status"] != "pending"]
    if decided:
        raise Conflict(f"already decided ({', '.join(sorted({rows[i]['status'] for i in decided}))}): "
                       f"{', '.join(decided)}")
    now = store.now()
    counts = {"approved": 0, "rejected": 0}
    groups = sorted({(rows[i]["contract_id"], rows[i]["service_id"]) for i in ids})
    ctx = recompute.load_context(session, tenant_id, set(groups)) if decision == "approve" else None
    for approval_id in sorted(set(ids), key=lambda i: (rows[i]["contract_id"], rows[i]["service_id"])):
        row = rows[approval_id]
        group = (row["contract_id"], row["service_id"])
        values = {"decided_by": actor or store.SYSTEM, "decided_at": now, "note": note}
        if decision == "approve":
            _approve(session, outbox, ctx, group, row, override, actor, now)
            values.update(status="approved", effective_date_override=override)
            counts["approved"] += 1
        else:
            dl = m.desired_lines
            session.execute(update(dl).where(dl.c.tenant_id == tenant_id, dl.c.psa_contract_id == group[0],
                                             dl.c.psa_service_id == group[1], dl.c.status == "awaiting_approval")
                            .values(status="ok", reasons=[f"change rejected by {actor or 'a person'}"],
                                    updated_at=now))
            values.update(status="rejected")
            counts["rejected"] += 1
        session.execute(update(ap).where(ap.c.tenant_id == tenant_id, ap.c.id == approval_id).values(**values))
        store.audit(session, tenant_id, actor, "approval", approval_id, decision, {"status": "pending"},
                    store.json_safe({"status": values["status"], "note": note, "effective_date": override}))
    return counts


def _approve(session, outbox, ctx, group, approval, override, actor, now):
    row = ctx.rows.get(group)
    proposal = approval["proposal"]
    if row is None or row["timeline_rev"] != proposal["rev"]:
        raise Conflict(f"approval {approval['id']} is out of date: the contract line changed since it was made")
    if ctx.psa is None:
        raise Conflict("the tenant's PSA is not known yet: refresh the PSA records first")
    timeline = row["timeline"] or []
    new_timeline = timeline[:proposal["replace_from"]] + planner.with_override(proposal["checkpoints"], override)
    if override is not None and not proposal["checkpoints"]:
        # an approved undo with a date: the state it returns to, from that date on
        back = timeline[proposal["replace_from"] - 1] if proposal["replace_from"] else None
        if back is not None:
            new_timeline = timeline[:proposal["replace_from"]] + [{**back, "day": planner.iso(override), "ops": [
                {"date": planner.iso(override), "quantity": back["quantity"], "unit_price": back["unit_price"],
                 "unit_cost": back["unit_cost"]}]}]
    recompute.commit_timeline(session, outbox, ctx, group, row, new_timeline, status="ok", reasons=[], now=now,
                              approved_by=actor or store.SYSTEM)
