"""Planning the desired state of one PSA contract line (contract, service) from line history.

Pure: no I/O. recompute.py loads the inputs and writes the results.

The rules are the domain's (plan_by_day, build_group, classify_change, plan_operations); this
module keeps the bookkeeping that lets them run on a stream of events:

Timeline. Each contract line keeps a list of *checkpoints*, one per day on which its desired state
changed: the day, the state after it (quantity, prices, company, lines), the line versions behind
it (``basis``) and the operations that day produced (``ops``: "from date D on, the line says X").
A new event is replayed from the last checkpoint before its day, so same-day changes collapse
(D13) and a line whose mapping was completed late gets the dates it would have had (its history
is replayed from its first day).

Schedule. The ops of the timeline, applied in order on the ``origin`` (what came before the kept
checkpoints), give the *schedule*: for every date, what the PSA line should say from that date
on. A LineDesired event means "from effective_date on, the contract line says quantity X at
price P". Re-planning compares the old schedule with the new one and sends, from the first date
where they differ, one event per breakpoint of the new schedule (schedule_diff) - so a change that
was undone on the same day is undone in the PSA too, and nothing already right is sent again.

Lines that enter a contract line after being billed elsewhere (re-linked, or ignored and then
mapped again) start afresh there: their current state counts as seen when they entered
(replay_states), so their old history is not billed twice.
"""
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field, replace

from services.mapping.domain import (NO_CHANGE, BillingLine, GroupConflict, LineState, PlannedChange,
                                     blocking_reasons, build_group, classify_change, collapse_same_day,
                                     plan_by_day, plan_operations, same_money, to_decimal)

MAX_CHECKPOINTS = 24     # older checkpoints are folded into the origin schedule
MAX_ORIGIN_BREAKPOINTS = 6


# --- small converters ----------------------------------------------------------------------------
def money(value):
    return None if value is None else str(to_decimal(value))


def iso(day):
    return day.isoformat() if day is not None else None


def parse_day(value):
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def line_key(subscription_id, mpn):
    return (str(subscription_id), str(mpn))


def basis_dict(checkpoint):
    return {(s, m): v for s, m, v in (checkpoint or {}).get("basis", [])}


def state_of(checkpoint):
    """The LineState a checkpoint (or schedule breakpoint) stands for; None for None."""
    if checkpoint is None:
        return None
    return LineState(checkpoint["quantity"], to_decimal(checkpoint.get("unit_price")),
                     to_decimal(checkpoint.get("unit_cost")))


def same_state(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a.quantity == b.quantity and same_money(a.unit_price, b.unit_price) and same_money(a.unit_cost, b.unit_cost)


def change_json(change):
    return {"kind": change.kind, "quantity_before": change.quantity_before, "quantity_after": change.quantity_after,
            "unit_price_before": money(change.unit_price_before), "unit_price_after": money(change.unit_price_after),
            "unit_cost_before": money(change.unit_cost_before), "unit_cost_after": money(change.unit_cost_after),
            "effective_date": iso(change.effective_date), "price_changed": change.price_changed,
            "cost_changed": change.cost_changed, "price_effective_date": iso(change.price_effective_date)}


def change_from_json(contract_id, service_id, data):
    return PlannedChange(contract_id, service_id, data["kind"], data["quantity_before"], data["quantity_after"],
                         to_decimal(data["unit_price_before"]), to_decimal(data["unit_price_after"]),
                         to_decimal(data["unit_cost_before"]), to_decimal(data["unit_cost_after"]),
                         parse_day(data["effective_date"]), data["price_changed"], data["cost_changed"],
                         parse_day(data["price_effective_date"]) if data.get("price_effective_date") else None)


# --- inputs --------------------------------------------------------------------------------------
@dataclass
class LineInput:
    """One subscription line as the planner needs it: its history (SubscriptionLines by version),
    its current mappings and price rule, and where it is billed."""

    key: tuple
    states: list                       # SubscriptionLine, ascending line_version
    mapping: object                    # domain LineMapping (current)
    rule: object = None                # domain PriceRule (override applied) or None
    catalog_price: object = None       # the mapped PSA service's own price
    billed: tuple | None = None        # (contract_id, service_id) whose sent state counts it
    billed_version: int | None = None
    rebase: tuple | None = None        # ((contract_id, service_id), version, seen_at)

    def billing_line(self, state):
        return BillingLine(state, self.mapping, self.rule, self.catalog_price)

    def state_at(self, version):
        """The state with this version (or the latest before it)."""
        found = None
        for s in self.states:
            if s.line_version <= version:
                found = s
        return found


@dataclass(frozen=True)
class Terms:
    """What the dates need of a contract (domain plan_by_day reads start_date, period_months)."""

    start_date: dt.date | None = None
    period_months: int = 1


@dataclass(frozen=True)
class PlanSettings:
    bill_suspended: bool = False
    credit_decreases_immediately: bool = False


def replay_states(line, key, now):
    """(states to replay for contract line ``key``, new rebase or None).

    A line billed on another contract line, or billed before and dropped out since, re-enters
    with its latest state seen ``now``; a line that re-entered ``key`` earlier keeps that
    starting point; any other line replays its whole history (late mapping keeps its dates)."""
    if line.rebase is not None and line.rebase[0] == key:
        _, version, at = line.rebase
        head = line.state_at(version)
        later = [s for s in line.states if s.line_version > version]
        return ([replace(head, seen_at=at)] if head else []) + later, None
    if line.billed_version is not None and line.billed != key and line.states:
        latest = line.states[-1]
        return [replace(latest, seen_at=now)], (key, latest.line_version, now)
    return list(line.states), None


# --- plan ----------------------------------------------------------------------------------------
@dataclass
class GroupPlan:
    key: tuple
    base_len: int                      # checkpoints kept as they are (timeline[:base_len])
    new: list                          # new checkpoints replacing timeline[base_len:]
    status: str = "ok"                 # ok | conflict | idle (no billable line)
    reasons: list = field(default_factory=list)
    rebases: dict = field(default_factory=dict)   # line key -> (key, version, seen_at)
    needs_rewind: bool = False


def _members(state, key):
    return [b for b in state.values() if b.mapping.group_key == key and not blocking_reasons(b.mapping)]


def _basis(billing_lines):
    return sorted([b.line.subscription_id, b.line.mpn, b.line.line_version] for b in billing_lines)


def _checkpoint(day, change, group, members):
    ops = [{"date": iso(op.effective_date), "quantity": op.quantity_after, "unit_price": money(op.unit_price_after),
            "unit_cost": money(op.unit_cost_after)} for op in plan_operations(change)]
    return {"day": iso(day), "kind": change.kind, "quantity": group.quantity, "unit_price": money(group.unit_price),
            "unit_cost": money(group.unit_cost), "company_id": group.company_id, "currency": group.currency,
            "lines": group.lines_payload(), "basis": _basis(members), "ops": ops, "change": change_json(change)}


def plan_group(key, *, timeline, lines, settings, terms=None, today, now, force_from=None):
    """Re-plan one contract line. ``timeline``: its checkpoints; ``lines``: LineInputs of every
    line currently mapped to it or counted in one of its checkpoints; ``terms``: the contract's
    Terms; ``today``/``now``: the day and instant of this planning (mapping changes, lines that
    left or re-entered take effect on ``today``)."""
    contract_id, service_id = key
    by_key = {li.key: li for li in lines}
    members = [li for li in lines if li.mapping.group_key == key and not blocking_reasons(li.mapping)]
    replays, rebases = {}, {}
    for li in members:
        states, rebase = replay_states(li, key, now)
        replays[li.key] = states
        if rebase:
            rebases[li.key] = rebase

    latest_basis = basis_dict(timeline[-1]) if timeline else {}
    new_days = [s.seen_on for k, states in replays.items() for s in states if s.line_version > latest_basis.get(k, -1)]
    start = min(new_days) if new_days else None
    if force_from is not None:
        start = force_from if start is None else min(start, force_from)
    if start is None:
        base_len = len(timeline)
    else:
        base_len = sum(1 for cp in timeline if parse_day(cp["day"]) < start)
        if base_len == 0 and timeline and len(timeline) >= MAX_CHECKPOINTS:
            base_len = 1   # older than what is kept: replay on top of the oldest checkpoint
    base = timeline[base_len - 1] if base_len else None
    previous = state_of(base)
    basis = basis_dict(base)

    current = []
    for k, version in basis.items():
        li = by_key.get(k)
        state = li.state_at(version) if li else None
        if state is not None:
            current.append(li.billing_line(state))
    changes = [by_key[k].billing_line(s) for k, states in replays.items() for s in states
               if s.line_version > basis.get(k, -1)]

    contracts = {contract_id: terms} if terms else {}
    posted = {key: previous} if previous is not None else {}
    state = {b.line.key: b for b in current}
    collapsed = collapse_same_day(changes)
    new, conflict_reasons = [], []
    for day in sorted({b.line.seen_on for b in collapsed}):
        todays = [b for b in collapsed if b.line.seen_on == day]
        plan = plan_by_day(previous=posted, current=list(state.values()), changes=todays, contracts=contracts,
                           bill_suspended=settings.bill_suspended,
                           credit_decreases_immediately=settings.credit_decreases_immediately)
        for b in todays:
            state[b.line.key] = b
        for change in plan.changes:
            members_then = _members(state, key)
            new.append(_checkpoint(day, change, build_group(key, members_then, bill_suspended=settings.bill_suspended),
                                   members_then))
        conflict_reasons = [r for _, c in plan.conflicts for r in c.reasons] if plan.conflicts else (
            [] if plan.changes else conflict_reasons)
        posted = dict(plan.final)

    result = GroupPlan(key, base_len, new, rebases=rebases)
    members_now = _members(state, key)
    if not members_now:
        result.status = "idle"
        result.reasons = ["no billable subscription line is linked to this contract line"]
        return result
    group = build_group(key, members_now, bill_suspended=settings.bill_suspended)
    if isinstance(group, GroupConflict):
        result.status, result.reasons = "conflict", list(group.reasons)
        return result
    last = posted.get(key)
    if same_state(last, LineState(group.quantity, group.unit_price, group.unit_cost)):
        return result
    # the lines' mappings, rules or settings moved without a line change: it happens today
    last_day = new[-1]["day"] if new else (timeline[base_len - 1]["day"] if base_len else None)
    if last_day == iso(today):
        if not new:
            result.needs_rewind = True   # today's checkpoint is an old one: re-plan from before today
            return result
        new.pop()
        last = state_of(new[-1]) if new else previous
    change = classify_change(last, group, seen_on=today,
                             contract_start=terms.start_date if terms else None,
                             period_months=(terms.period_months if terms else 1) or 1,
                             credit_decreases_immediately=settings.credit_decreases_immediately,
                             contract_id=contract_id, service_id=service_id)
    if change.kind != NO_CHANGE:
        new.append(_checkpoint(today, change, group, members_now))
    return result


def plan_with_rewind(key, **kwargs):
    plan = plan_group(key, **kwargs)
    if plan.needs_rewind:
        plan = plan_group(key, force_from=kwargs["today"], **{k: v for k, v in kwargs.items() if k != "force_from"})
    return plan


# --- schedule ------------------------------------------------------------------------------------
def _breakpoint(op, checkpoint):
    return {"date": op["date"], "quantity": op["quantity"], "unit_price": op["unit_price"],
            "unit_cost": op["unit_cost"], "company_id": checkpoint["company_id"],
            "currency": checkpoint["currency"], "lines": checkpoint["lines"]}


def apply_breakpoint(schedule, bp):
    """"From bp.date on, the line says bp": every later breakpoint is replaced."""
    return [b for b in schedule if b["date"] < bp["date"]] + [bp]


def build_schedule(origin, checkpoints):
    schedule = list(origin or [])
    for cp in checkpoints:
        for op in cp["ops"]:
            schedule = apply_breakpoint(schedule, _breakpoint(op, cp))
    return schedule


def value_at(schedule, date):
    found = None
    for bp in schedule:
        if bp["date"] <= date:
            found = bp
    return found


def schedule_diff(old, new):
    """The breakpoints to send so a PSA line following ``old`` follows ``new``: from the first
    date where they differ, every breakpoint of ``new`` (in date order). Where ``new`` says
    nothing yet but ``old`` did, the line goes to 0 units."""
    dates = sorted({b["date"] for b in old} | {b["date"] for b in new})
    first = next((d for d in dates if not same_state(state_of(value_at(old, d)), state_of(value_at(new, d)))), None)
    if first is None:
        return []
    out = []
    for d in [first] + [b["date"] for b in new if b["date"] > first]:
        bp = value_at(new, d)
        if bp is None:
            was = value_at(old, d)
            bp = {**was, "quantity": 0, "lines": []}
        out.append({**bp, "date": d})
    return out


def truncate(origin, timeline):
    """Keep the last MAX_CHECKPOINTS checkpoints; fold older ones into the origin schedule."""
    if len(timeline) <= MAX_CHECKPOINTS:
        return list(origin or []), list(timeline)
    cut = len(timeline) - MAX_CHECKPOINTS
    folded = build_schedule(origin, timeline[:cut])
    return folded[-MAX_ORIGIN_BREAKPOINTS:], list(timeline[cut:])


# --- posting mode --------------------------------------------------------------------------------
def same_content(a, b):
    keys = ("day", "quantity", "unit_price", "unit_cost", "company_id", "currency", "ops")
    return all(a.get(k) == b.get(k) for k in keys)


@dataclass
class Outcome:
    """What to do with a plan: the timeline to keep now, and the checkpoints waiting for a person
    (which would replace timeline[replace_from:] when approved)."""

    timeline: list
    pending: list = field(default_factory=list)
    replace_from: int | None = None
    reasons: list = field(default_factory=list)
    fresh: list = field(default_factory=list)    # the checkpoints that are really new (sent or pending)

    @property
    def waiting(self):
        """Something waits for a person (possibly an undo, with no checkpoint of its own)."""
        return self.replace_from is not None


def split_for_approval(plan, timeline, billing_settings):
    """Apply the posting mode (domain BillingSettings.decide) to a plan.

    Checkpoints equal to the ones they replace are kept without a decision. When the plan only
    adds checkpoints, the leading ones that need no approval are applied and the rest wait as one
    approval. When it replaces sent checkpoints (a same-day or late change) and anything needs
    approval, the sent ones stay as they are and the whole re-plan waits. In review mode even
    an undo (a re-plan with fewer checkpoints) waits."""
    contract_id, service_id = plan.key
    kept = list(timeline[:plan.base_len])
    replaced = list(timeline[plan.base_len:])
    new = list(plan.new)
    prefix = 0
    while prefix < min(len(new), len(replaced)) and same_content(new[prefix], replaced[prefix]):
        prefix += 1
    head = kept + new[:prefix]
    rest, replaced_rest = new[prefix:], replaced[prefix:]
    first, reasons = None, []
    for i, cp in enumerate(rest):
        decision = billing_settings.decide(change_from_json(contract_id, service_id, cp["change"]))
        if decision.needs_approval:
            first = i if first is None else first
            reasons += [r for r in decision.reasons if r not in reasons]
    if first is None and not rest and replaced_rest and billing_settings.posting_mode == "review":
        first, reasons = 0, ["posting mode is review: undoing a sent change waits for approval"]
    if first is None:
        return Outcome(head + rest, fresh=rest)
    if not replaced_rest:
        return Outcome(head + rest[:first], rest[first:], len(head) + first, reasons, fresh=rest)
    return Outcome(head + replaced_rest, rest, len(head), reasons, fresh=rest)


def proposal_fingerprint(replace_from, pending, rev):
    data = json.dumps({"from": replace_from, "rev": rev,
                       "cps": [{k: cp[k] for k in ("day", "quantity", "unit_price", "unit_cost", "ops")}
                               for cp in pending]}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def with_override(pending, date):
    """Every op of the pending checkpoints moved to one approved date (the last state wins)."""
    if date is None:
        return pending
    return [{**cp, "ops": [{**op, "date": iso(date)} for op in cp["ops"]]} for cp in pending]
