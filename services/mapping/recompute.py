"""Recomputing the desired state of contract lines: load what planner.py needs, plan, then send
LineDesired events through the outbox or queue an approval, and keep the bookkeeping.

Callers hold the tenant lock (store.lock_tenant) for the whole transaction.
"""
import dataclasses
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import and_, or_, select, text, tuple_, update

from services.mapping import models as m
from services.mapping import planner, store
from services.mapping.domain import (MAPPED, UNMAPPED, LineMapping, LineState, MappingDomainError, PriceRule,
                                     classify_change, effective_rule, preview_rows)
from services.mapping.domain.pricing import NoPriceRule

log = logging.getLogger(__name__)

CHUNK = 500
ZERO_MONEY = "0.00"


@dataclass
class Context:
    tenant_id: str
    psa: str | None
    billing: object                       # domain BillingSettings
    plan_settings: planner.PlanSettings
    rows: dict = field(default_factory=dict)        # group -> desired_lines row (dict)
    lines: dict = field(default_factory=dict)       # line key -> planner.LineInput
    terms: dict = field(default_factory=dict)       # contract_id -> planner.Terms
    pending: dict = field(default_factory=dict)     # group -> pending approval row
    _by_group: dict | None = field(default=None, repr=False)   # group -> line keys (lines_for)
    _position: dict | None = field(default=None, repr=False)

    def groups(self):
        found = set(self.rows)
        for li in self.lines.values():
            if li.mapping.contract_id and li.mapping.service_id:
                found.add(li.mapping.group_key)
        return found

    def lines_for(self, group):
        """The lines a contract line's plan looks at: those in its timeline's basis, mapped to it,
        billed on it or being rebased from it; in load order (as the planner always saw them)."""
        if self._by_group is None:
            # indexed once per context: scanning every line per contract line made re-planning a
            # whole tenant quadratic (21 min at 20,000 contract lines x 40,000 lines)
            self._by_group, self._position = {}, {}
            for n, (key, li) in enumerate(self.lines.items()):
                self._position[key] = n
                targets = {li.mapping.group_key, li.billed, li.rebase[0] if li.rebase is not None else None}
                for target in targets - {None}:
                    self._by_group.setdefault(target, []).append(key)
        keys = set(self._by_group.get(group, ()))
        row = self.rows.get(group)
        for cp in (row or {}).get("timeline") or []:
            keys.update(k for k in planner.basis_dict(cp) if k in self.lines)
        return [self.lines[k] for k in sorted(keys, key=self._position.__getitem__)]


# --- which contract lines a change touches -------------------------------------------------------
def affected_groups(session, tenant_id, *, customer_ids=None, mpns=None, line_keys=None, everything=False,
                    state_only=False):
    """(contract_id, service_id) of every contract line whose desired state may move when these
    lines' states or mappings move: each line's current group, where it is billed, where it
    re-entered.

    ``state_only``: only the lines' states moved (a line event), not their mappings. Then a line
    that is not billable (domain blocking_reasons: customer, product and link mapped, each with its
    PSA id) is no member of its current group, so its new state cannot move that group's plan: the
    group is left out (where it is billed or re-entered still counts). Before a tenant is mapped -
    its first sync - this saves a recompute per line."""
    ln, k, pm, cm = m.lines, m.line_links, m.product_mappings, m.customer_mappings
    member = and_(k.c.status == MAPPED, k.c.psa_contract_id.is_not(None), pm.c.status == MAPPED,
                  pm.c.psa_service_id.is_not(None), cm.c.status == MAPPED, cm.c.psa_company_id.is_not(None))
    query = (select(ln.c.subscription_id, ln.c.mpn, k.c.psa_contract_id, pm.c.psa_service_id, ln.c.billed_contract_id,
                    ln.c.billed_service_id, ln.c.rebase_contract_id, ln.c.rebase_service_id,
                    member.label("member"))
             .outerjoin(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                                k.c.mpn == ln.c.mpn))
             .outerjoin(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))
             .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
             .where(ln.c.tenant_id == tenant_id))
    filters = []
    if customer_ids is not None:
        filters.append(ln.c.customer_id.in_(list(customer_ids)) if customer_ids else False)
    if mpns is not None:
        filters.append(ln.c.mpn.in_(list(mpns)) if mpns else False)
    key_parts = []
    if line_keys is not None:
        keys = [tuple(x) for x in line_keys]
        if not keys:
            filters.append(False)
        # a row-value IN of thousands of pairs exceeds PostgreSQL's stack depth (a bulk accept of
        # a 10,000-line tenant did): the keys go in chunks, each its own query (the filters are OR-ed)
        key_parts = [tuple_(ln.c.subscription_id, ln.c.mpn).in_(part) for part in _chunks(keys)]
    if everything:
        queries = [query]
    else:
        if not filters and not key_parts:
            return set()
        queries = ([query.where(or_(*filters))] if filters else []) + [query.where(part) for part in key_parts]
    rows = [r for q in queries for r in session.execute(q)]
    groups = set()
    for r in rows:
        current = (r.psa_contract_id, r.psa_service_id) if (r.member or not state_only) else (None, None)
        for contract, service in (current, (r.billed_contract_id, r.billed_service_id),
                                  (r.rebase_contract_id, r.rebase_service_id)):
            if contract and service:
                groups.add((contract, service))
    if everything:
        dl = m.desired_lines
        groups.update((r.psa_contract_id, r.psa_service_id) for r in session.execute(
            select(dl.c.psa_contract_id, dl.c.psa_service_id).where(dl.c.tenant_id == tenant_id)))
    return groups


# --- loading -------------------------------------------------------------------------------------
def _chunks(items, size=CHUNK):
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i:i + size]


def load_context(session, tenant_id, groups=None, lock=True):
    """Everything needed to plan ``groups`` (None: every contract line of the tenant); ``lock``
    takes their desired_lines rows FOR UPDATE."""
    if groups is None or len(groups) > 50:
        store.bulk_mode(session)
    settings_row = store.settings_or_defaults(session, tenant_id)
    ctx = Context(tenant_id, settings_row["psa"], store.billing_settings(settings_row),
                  planner.PlanSettings(settings_row["bill_suspended"], settings_row["credit_decreases_immediately"]))
    dl = m.desired_lines
    query = select(dl).where(dl.c.tenant_id == tenant_id)
    if groups is not None:
        wanted = sorted(groups)
        rows = []
        for part in _chunks(wanted):
            rows += session.execute(_locked(query.where(tuple_(dl.c.psa_contract_id, dl.c.psa_service_id).in_(part)),
                                            lock)).all()
    else:
        rows = session.execute(_locked(query, lock)).all()
    ctx.rows = {(r.psa_contract_id, r.psa_service_id): dict(r._mapping) for r in rows}

    basis_keys = set()
    for row in ctx.rows.values():
        for cp in row["timeline"] or []:
            basis_keys.update(planner.basis_dict(cp))
    ln, k, pm, cm = m.lines, m.line_links, m.product_mappings, m.customer_mappings
    line_query = (select(ln, k.c.status.label("link_status"), k.c.psa_contract_id, pm.c.status.label("product_status"),
                         pm.c.psa_service_id, pm.c.price_rule, pm.c.markup_pct, pm.c.fixed_price,
                         cm.c.status.label("customer_status"), cm.c.psa_company_id)
                  .outerjoin(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                                     k.c.mpn == ln.c.mpn))
                  .outerjoin(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))
                  .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
                  .where(ln.c.tenant_id == tenant_id))
    if groups is not None:
        contracts = sorted({c for c, _ in groups})
        line_rows = []
        for part in _chunks(contracts):
            line_rows += session.execute(line_query.where(or_(k.c.psa_contract_id.in_(part),
                                                              ln.c.billed_contract_id.in_(part),
                                                              ln.c.rebase_contract_id.in_(part)))).all()
        seen = {(r.subscription_id, r.mpn) for r in line_rows}
        missing = [key for key in basis_keys if key not in seen]
        for part in _chunks(missing):
            line_rows += session.execute(line_query.where(tuple_(ln.c.subscription_id, ln.c.mpn).in_(part))).all()
    else:
        line_rows = session.execute(line_query).all()

    keys = [(r.subscription_id, r.mpn) for r in line_rows]
    history = {}
    ls = m.line_states
    if groups is None:
        state_rows = session.execute(select(ls).where(ls.c.tenant_id == tenant_id)).all()
    else:
        state_rows = []
        for part in _chunks(keys):
            state_rows += session.execute(select(ls).where(ls.c.tenant_id == tenant_id, tuple_(
                ls.c.subscription_id, ls.c.mpn).in_(part))).all()
    for r in state_rows:
        history.setdefault((r.subscription_id, r.mpn), []).append(r)

    customers = sorted({r.customer_id for r in line_rows})
    po = m.price_overrides
    overrides = {}
    for part in _chunks(customers):
        for r in session.execute(select(po).where(po.c.tenant_id == tenant_id, po.c.customer_id.in_(part))):
            rule = _rule(r.price_rule, r.markup_pct, r.fixed_price)
            if rule is not None:
                overrides[(r.customer_id, r.mpn)] = rule

    from services.mapping import references

    contract_ids = {c for c, _ in (groups if groups is not None else ctx.groups())} | {
        r.psa_contract_id for r in line_rows if r.psa_contract_id}
    # contracts and services in one query (this runs for every line event)
    refs = references.load_many(session, tenant_id, {"contract": contract_ids,
                                                     "service": {r.psa_service_id for r in line_rows}})
    for cid, ref in refs["contract"].items():
        ctx.terms[cid] = planner.Terms(ref.start_date, ref.period_months or 1)
    services = refs["service"]

    for r in line_rows:
        key = (r.subscription_id, r.mpn)
        states = sorted((store.subscription_line(s) for s in history.get(key, [])), key=lambda s: s.line_version)
        if not states:
            states = [store.subscription_line(r)]
        product_rule = _rule(r.price_rule, r.markup_pct, r.fixed_price)
        try:
            rule = effective_rule(r.customer_id, r.mpn, product_rules={r.mpn: product_rule} if product_rule else {},
                                  overrides=overrides)
        except NoPriceRule:
            rule = None
        service = services.get(r.psa_service_id or "")
        mapping = LineMapping(r.customer_status or UNMAPPED, r.product_status or UNMAPPED, r.link_status or UNMAPPED,
                              r.psa_company_id, r.psa_service_id, r.psa_contract_id)
        billed = (r.billed_contract_id, r.billed_service_id) if r.billed_contract_id and r.billed_service_id else None
        rebase = None
        if r.rebase_contract_id and r.rebase_service_id and r.rebase_version is not None:
            rebase = ((r.rebase_contract_id, r.rebase_service_id), r.rebase_version, r.rebased_at)
        ctx.lines[key] = planner.LineInput(key, states, mapping, rule, service.unit_price if service else None,
                                           billed, r.billed_version, rebase)

    ap = m.approvals
    pending = select(ap).where(ap.c.tenant_id == tenant_id, ap.c.status == "pending")
    if groups is not None and len(groups) <= CHUNK:   # only the planned lines' approvals are needed
        pending = pending.where(tuple_(ap.c.contract_id, ap.c.service_id).in_(sorted(groups)))
    for r in session.execute(pending):
        group = (r.contract_id, r.service_id)
        if groups is None or group in groups:
            ctx.pending[group] = dict(r._mapping)
    return ctx


def _locked(query, lock):
    return query.with_for_update() if lock else query


def _rule(rule, markup_pct, fixed_price):
    if not rule:
        return None
    try:
        return PriceRule(rule, markup_pct, fixed_price)
    except MappingDomainError:
        return None


# --- planning and writing ------------------------------------------------------------------------
def today_and_now():
    now = store.now()
    return now.date(), now


def plan(ctx, group, today, now):
    row = ctx.rows.get(group) or {}
    timeline = row.get("timeline") or []
    result = planner.plan_with_rewind(group, timeline=timeline, lines=ctx.lines_for(group),
                                      settings=ctx.plan_settings, terms=ctx.terms.get(group[0]), today=today, now=now)
    return result, planner.split_for_approval(result, timeline, ctx.billing)


def recompute(session, outbox, tenant_id, groups=None, *, ctx=None):
    """Plan and write ``groups`` (None: all). Returns {"emitted": n, "approvals": n, "groups": n}."""
    if groups is not None and not groups:
        return {"emitted": 0, "approvals": 0, "groups": 0}
    ctx = ctx or load_context(session, tenant_id, groups)
    today, now = today_and_now()
    targets = sorted(groups if groups is not None else ctx.groups())
    totals = {"emitted": 0, "approvals": 0, "groups": len(targets)}
    with store.keyed_statements(session):
        for group in targets:
            result, outcome = plan(ctx, group, today, now)
            emitted, queued = write_plan(session, outbox, ctx, group, result, outcome, today, now)
            totals["emitted"] += emitted
            totals["approvals"] += queued
    return totals


def _ensure_row(session, ctx, group):
    row = ctx.rows.get(group)
    if row is None:
        dl = m.desired_lines
        session.execute(dl.insert().values(tenant_id=ctx.tenant_id, psa_contract_id=group[0], psa_service_id=group[1]))
        row = dict(session.execute(select(dl).where(dl.c.tenant_id == ctx.tenant_id, dl.c.psa_contract_id == group[0],
                                                    dl.c.psa_service_id == group[1])).one()._mapping)
        ctx.rows[group] = row
    return row


def write_plan(session, outbox, ctx, group, result, outcome, today, now):
    """Persist one planned contract line: the applied timeline (sending what changed), the pending
    approval, the rebases. Returns (events sent, approvals created)."""
    row = ctx.rows.get(group)
    existing = ctx.pending.get(group)
    if row is None and not result.new and not outcome.waiting and existing is None:
        return 0, 0   # nothing was ever planned here and nothing is now
    if ctx.psa is None:
        log.warning("contract line %s/%s not planned: the tenant's PSA is unknown yet", *group)
        return 0, 0
    row = _ensure_row(session, ctx, group)
    for key, (rebase_group, version, at) in result.rebases.items():
        session.execute(update(m.lines).where(m.lines.c.tenant_id == ctx.tenant_id, m.lines.c.subscription_id == key[0],
                                              m.lines.c.mpn == key[1])
                        .values(rebase_contract_id=rebase_group[0], rebase_service_id=rebase_group[1],
                                rebase_version=version, rebased_at=at))
    if outcome.waiting:
        status, reasons = "awaiting_approval", outcome.reasons
    elif result.status == "conflict":
        status, reasons = "conflict", result.reasons
    else:
        status, reasons = ("idle" if result.status == "idle" else "ok"), result.reasons
    emitted, rev = commit_timeline(session, outbox, ctx, group, row, outcome.timeline, status=status, reasons=reasons,
                                   now=now)
    queued = 0
    if outcome.waiting:
        queued = _propose(session, ctx, group, row, outcome, rev, existing, today)
    elif existing is not None:
        _supersede(session, ctx.tenant_id, existing["id"])
    return emitted, queued


def commit_timeline(session, outbox, ctx, group, row, new_timeline, *, status, reasons, now, approved_by=None):
    """Make ``new_timeline`` the contract line's timeline: send the schedule difference as
    LineDesired events (desired_version + 1 each), update the row and which lines it bills.
    Returns (events sent, timeline_rev)."""
    tenant_id = ctx.tenant_id
    old_timeline, origin = row["timeline"] or [], row["origin"] or []
    emissions = planner.schedule_diff(planner.build_schedule(origin, old_timeline),
                                      planner.build_schedule(origin, new_timeline))
    version = _send(session, outbox, ctx.psa, tenant_id, group, row, emissions, approved_by)
    changed = new_timeline != old_timeline
    rev = row["timeline_rev"] + (1 if changed else 0)
    new_origin, kept = planner.truncate(origin, new_timeline)
    last = kept[-1] if kept else None
    values = {"timeline": kept, "origin": new_origin, "timeline_rev": rev, "version": version, "status": status,
              "reasons": list(reasons or []), "updated_at": now}
    if last is not None:
        values.update(company_id=last["company_id"], quantity=last["quantity"], unit_price=last["unit_price"],
                      unit_cost=last["unit_cost"], currency=last["currency"], lines=last["lines"])
    if emissions:
        values.update(effective_date=dt.date.fromisoformat(emissions[-1]["date"]), emitted_at=now)
    dl = m.desired_lines
    session.execute(update(dl).where(dl.c.tenant_id == tenant_id, dl.c.psa_contract_id == group[0],
                                     dl.c.psa_service_id == group[1]).values(**values))
    row.update(values)
    if changed:
        _mark_billed(session, tenant_id, group, planner.basis_dict(last) if last else {})
    return len(emissions), rev


def _send(session, outbox, psa, tenant_id, group, row, breakpoints, approved_by=None):
    """One LineDesired per breakpoint (in date order), desired_version + 1 each; the last version."""
    version = row["version"]
    for bp in breakpoints:
        version += 1
        outbox.add(session, f"{psa}_line_desired", tenant_id, contract_id=group[0], service_id=group[1],
                   company_id=bp.get("company_id") or row.get("company_id") or "",
                   quantity=bp["quantity"], unit_price=Decimal(bp.get("unit_price") or ZERO_MONEY),
                   unit_cost=Decimal(bp.get("unit_cost") or ZERO_MONEY),
                   effective_date=dt.date.fromisoformat(bp["date"]), desired_version=version,
                   lines=bp.get("lines") or [], approved_by=approved_by)
    return version


def desired_versions(session, tenant_id):
    """[[contract_id, service_id, version]] of every contract line we ever sent a schedule for."""
    dl = m.desired_lines
    rows = session.execute(select(dl.c.psa_contract_id, dl.c.psa_service_id, dl.c.version)
                           .where(dl.c.tenant_id == tenant_id, dl.c.version > 0)
                           .order_by(dl.c.psa_contract_id, dl.c.psa_service_id))
    return [[r.psa_contract_id, r.psa_service_id, int(r.version)] for r in rows]


def resend(session, outbox, tenant_id, groups):
    """Send the whole current schedule of these contract lines again, under new versions: the PSA
    service found its copy behind ours (an event lost on the way - docs/chaos.md, finding 6). The
    breakpoints go out in date order, so the PSA service's schedule ends exactly as ours whatever
    it missed. Returns how many contract lines were sent."""
    psa = store.settings_or_defaults(session, tenant_id)["psa"]
    if psa is None or not groups:
        return 0
    dl = m.desired_lines
    sent = 0
    for part in _chunks(sorted({tuple(g) for g in groups})):
        rows = session.execute(select(dl).where(dl.c.tenant_id == tenant_id, dl.c.version > 0,
                                                tuple_(dl.c.psa_contract_id, dl.c.psa_service_id).in_(part))
                               .with_for_update()).all()
        for r in rows:
            row = dict(r._mapping)
            group = (row["psa_contract_id"], row["psa_service_id"])
            schedule = planner.build_schedule(row["origin"] or [], row["timeline"] or [])
            if not schedule:
                continue
            version = _send(session, outbox, psa, tenant_id, group, row, schedule)
            session.execute(update(dl).where(dl.c.tenant_id == tenant_id, dl.c.psa_contract_id == group[0],
                                             dl.c.psa_service_id == group[1]).values(version=version))
            sent += 1
    if sent:
        log.warning("%d contract line(s) sent again: the %s service's schedule was behind", sent, psa)
    return sent


def _mark_billed(session, tenant_id, group, basis):
    """The lines the contract line's latest checkpoint counts are billed there (with their version);
    other lines billed there are not any more. One statement; rows already right are not rewritten."""
    ln = m.lines
    if not basis:
        session.execute(update(ln).where(ln.c.tenant_id == tenant_id, ln.c.billed_contract_id == group[0],
                                         ln.c.billed_service_id == group[1])
                        .values(billed_contract_id=None, billed_service_id=None))
        return
    keys = sorted(basis)
    session.execute(_MARK_BILLED_SQL, {"t": tenant_id, "c": group[0], "s": group[1], "subs": [k[0] for k in keys],
                                       "mpns": [k[1] for k in keys], "versions": [int(basis[k]) for k in keys]})


# the two updates touch disjoint rows (in the basis / not in it), as one data-modifying CTE may
_MARK_BILLED_SQL = text("""
    WITH basis AS (SELECT * FROM unnest(CAST(:subs AS text[]), CAST(:mpns AS text[]), CAST(:versions AS int[]))
                   AS b(subscription_id, mpn, version)),
    cleared AS (
        UPDATE lines AS l SET billed_contract_id = NULL, billed_service_id = NULL
        WHERE l.tenant_id = :t AND l.billed_contract_id = :c AND l.billed_service_id = :s
          AND NOT EXISTS (SELECT 1 FROM basis b WHERE b.subscription_id = l.subscription_id AND b.mpn = l.mpn))
    UPDATE lines AS l SET billed_contract_id = :c, billed_service_id = :s, billed_version = b.version
    FROM basis b
    WHERE l.tenant_id = :t AND l.subscription_id = b.subscription_id AND l.mpn = b.mpn
      AND (l.billed_contract_id IS DISTINCT FROM :c OR l.billed_service_id IS DISTINCT FROM :s
           OR l.billed_version IS DISTINCT FROM b.version)""")


# --- approvals -----------------------------------------------------------------------------------
def _supersede(session, tenant_id, approval_id):
    ap = m.approvals
    session.execute(update(ap).where(ap.c.tenant_id == tenant_id, ap.c.id == approval_id, ap.c.status == "pending")
                    .values(status="superseded", decided_at=store.now(), decided_by=store.SYSTEM,
                            note="replaced by a newer change of the same contract line"))


def describe_proposal(ctx, group, row, replace_from, pending, today):
    """kind, before/after state and the first date a proposal would post (for the queue)."""
    timeline = row["timeline"] or []
    before = planner.state_of(timeline[-1]) if timeline else None
    after_cp = pending[-1] if pending else (timeline[replace_from - 1] if replace_from else None)
    after = planner.state_of(after_cp)
    if after is None:
        after = LineState(0, before.unit_price if before else None, before.unit_cost if before else None)
    terms = ctx.terms.get(group[0])
    seen_on = planner.parse_day(pending[0]["day"]) if pending else today
    change = classify_change(before, after, seen_on=seen_on, contract_start=terms.start_date if terms else None,
                             period_months=(terms.period_months if terms else 1) or 1,
                             credit_decreases_immediately=ctx.plan_settings.credit_decreases_immediately,
                             contract_id=group[0], service_id=group[1])
    diff = planner.schedule_diff(planner.build_schedule(row["origin"], timeline),
                                 planner.build_schedule(row["origin"], timeline[:replace_from] + list(pending)))
    first = planner.parse_day(diff[0]["date"]) if diff else change.effective_date
    return change, before, after, first


def _propose(session, ctx, group, row, outcome, rev, existing, today):
    fingerprint = planner.proposal_fingerprint(outcome.replace_from, outcome.pending, rev)
    if existing is not None and existing["fingerprint"] == fingerprint:
        return 0
    if existing is not None:
        _supersede(session, ctx.tenant_id, existing["id"])
    ap = m.approvals
    rejected = session.execute(select(ap.c.id, ap.c.decided_by).where(
        ap.c.tenant_id == ctx.tenant_id, ap.c.contract_id == group[0], ap.c.service_id == group[1],
        ap.c.status == "rejected", ap.c.fingerprint == fingerprint)).first()
    dl = m.desired_lines
    if rejected is not None:   # the very same change was rejected: do not ask again
        session.execute(update(dl).where(dl.c.tenant_id == ctx.tenant_id, dl.c.psa_contract_id == group[0],
                                         dl.c.psa_service_id == group[1])
                        .values(status="ok", reasons=[f"change rejected by {rejected.decided_by}"]))
        return 0
    change, before, after, first = describe_proposal(ctx, group, row, outcome.replace_from, outcome.pending, today)
    session.execute(ap.insert().values(
        tenant_id=ctx.tenant_id, id=str(uuid.uuid4()), contract_id=group[0], service_id=group[1], kind=change.kind,
        quantity_before=before.quantity if before else None, quantity_after=after.quantity,
        unit_price_before=before.unit_price if before else None, unit_price=after.unit_price,
        unit_cost=after.unit_cost, effective_date=first, reasons=list(outcome.reasons),
        proposal={"replace_from": outcome.replace_from, "rev": rev, "checkpoints": outcome.pending},
        fingerprint=fingerprint, status="pending"))
    return 1


# --- preview -------------------------------------------------------------------------------------
def preview(session, tenant_id):
    """Every operation waiting to reach the PSA (pending approvals, and anything a recompute would
    send now), as domain PreviewRows. Writes nothing."""
    ctx = load_context(session, tenant_id, None, lock=False)
    today, now = today_and_now()
    changes, approval_ids = [], {}
    for group in sorted(ctx.groups()):
        result, outcome = plan(ctx, group, today, now)
        for cp in outcome.fresh:
            changes.append(planner.change_from_json(group[0], group[1], cp["change"]))
        if group in ctx.pending:
            approval_ids[group] = ctx.pending[group]["id"]
    b = ctx.billing
    rows = preview_rows(changes, mode=b.posting_mode, threshold_units=b.threshold_units,
                        threshold_percent=b.threshold_percent)
    from services.mapping import references

    contracts = references.load(session, tenant_id, "contract", ids={r.contract_id for r in rows})
    services = references.load(session, tenant_id, "service", ids={r.service_id for r in rows})
    out, total = [], Decimal("0")
    for r in rows:
        item = store.json_safe(dataclasses.asdict(r))
        item["contract_name"] = contracts[r.contract_id].name if r.contract_id in contracts else None
        item["service_name"] = services[r.service_id].name if r.service_id in services else None
        item["approval_id"] = approval_ids.get((r.contract_id, r.service_id))
        out.append(item)
        if r.amount is not None:
            total += r.amount
    return {"rows": out, "total_amount": str(total.quantize(Decimal("0.01")))}
