"""ConnectWise planning: the agreement's additions of one catalog product + the line's desired
schedule -> the fewest addition writes that make ConnectWise bill what the schedule says (pure).

What ConnectWise shows (external-apis.md §3): additions (finance/agreements/{id}/additions), each
with one ``quantity`` billed from ``effectiveDate`` until ``cancelledDate`` (not billed on or after
it). There is no per-period history: PATCHing ``quantity`` changes the addition as a whole. So the
PSA's quantity of a line on a day is the sum of the additions of that product in force that day,
and the planner keeps **one live addition per (agreement, product) per stretch of constant
quantity** (docs/design/posting.md, "ConnectWise"):

- Desired segments: the pending breakpoints, merged while the quantity stays the same (the latest
  price of a merged stretch wins), dropping stretches that already ended before today (the past
  cannot be re-billed through additions).
- A stretch in force today (or one whose addition starts exactly on its first day, i.e. not billed
  yet): PATCH ``quantity`` of the addition in force (an increase seen today, a same-day collapse).
- A stretch that starts in the future with a different quantity (a decrease or a cancellation from
  the next period): PATCH ``cancelledDate`` of the current addition to that day, and - unless the
  new quantity is 0 - POST a new addition from that day (cancel + new, so the current period keeps
  billing the old quantity).
- No addition and a positive quantity: POST (product, quantity, unitPrice, unitCost, billCustomer
  Billable, effectiveDate; cancelledDate when the stretch is bounded).
- Other additions in force on a stretch (a second addition typed in by hand, our own future addition
  that a newer event made unnecessary): cancelled on the day they would start billing; an addition
  we cancelled for a stretch that a newer event removed: un-cancelled (PATCH cancelledDate null).
- Price: PATCH unitPrice (and unitCost) of a kept addition whose price differs from the stretch's.

Edited in the PSA: ``expected`` (what ConnectWise showed after our last confirmed write, a step
function from today on). A day whose quantity differs from it *and* from the desired quantity was
changed by someone else. Only today and later are compared (a PATCH of quantity rewrites the past).

Unknown outcomes are resolved from the fresh read: POST applied iff an addition of the product newer
than the ones we knew (id > ``max_id``) with the op's effective date and quantity exists; PATCH
applied iff the addition shows the value we sent.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import decimal

from common.posting import schedule
from common.posting.engine import Plan, PlannedOp

ADD, QUANTITY, CANCEL, PRICE = "add_addition", "quantity", "cancel", "price"
OPERATIONS = (ADD, QUANTITY, CANCEL, PRICE)
FAR = dt.date.max


@dataclasses.dataclass(frozen=True)
class CwAddition:
    id: int
    quantity: int
    unit_price: decimal.Decimal | None
    unit_cost: decimal.Decimal | None
    effective: dt.date
    cancelled: dt.date | None = None

    def on(self, day):
        return self.effective <= day < (self.cancelled or FAR)


@dataclasses.dataclass(frozen=True)
class ConnectWiseLine:
    """The additions of one product on one agreement that still bill on or after the window start."""

    additions: tuple = ()


@dataclasses.dataclass
class _Sim:
    id: int
    quantity: int
    unit_price: decimal.Decimal | None
    unit_cost: decimal.Decimal | None
    effective: dt.date
    cancelled: dt.date | None
    new: bool = False

    def on(self, day):
        return self.effective <= day < (self.cancelled or FAR)


def _day(value):
    return None if value is None else schedule._day(value)


def _money(value):
    return None if value is None else decimal.Decimal(str(value))


def quantity_on(additions, day):
    return sum(int(a.quantity) for a in additions if a.effective <= day < (a.cancelled or FAR))


def window_start(work, today):
    """First day the read must cover (additions cancelled before it do not matter)."""
    days = [work.pending_from or today, today]
    days += [_day(u["effective_date"]) for u in work.unknown if u.get("effective_date") is not None]
    return min(days)


def segments(desired, pending_from, today):
    """[[start, end|None, quantity, breakpoint]]: pending stretches of constant quantity."""
    segs = []
    bps = schedule.pending(desired, pending_from)
    in_force = schedule.desired_at(desired, pending_from)
    if in_force is not None and (not bps or bps[0] is not in_force):
        bps = [in_force, *bps]      # the stretch under way at pending_from (a retry dates pending_from today)
    for b in bps:
        d, q = _day(b["date"]), int(b["quantity"])
        if segs and segs[-1][2] == q:
            segs[-1][3] = b
            continue
        if segs:
            segs[-1][1] = d
        segs.append([d, None, q, b])
    return [s for s in segs if s[1] is None or s[1] > today]


def _check_days(additions, today, extra=()):
    days = {today, *[d for d in extra if d >= today]}
    for a in additions:
        for d in (a.effective, a.cancelled):
            if d is not None and d > today:
                days.add(d)
    return sorted(days)


def steps(additions, today, extra=()):
    """What ConnectWise bills from today on, as a step function [[date, quantity], ...]."""
    return [[d.isoformat(), quantity_on(additions, d)] for d in _check_days(additions, today, extra)]


def resolve_unknown(unknown, line):
    """{row id: (applied, vendor item id)} for ledger rows whose outcome is unknown."""
    by_id = {a.id: a for a in line.additions}
    out = {}
    for u in unknown:
        p = u.get("params") or {}
        kind = u["operation"]
        if kind == ADD:
            day = _day(u["effective_date"])
            qty = p.get("quantity", u.get("quantity_after"))
            hit = [a for a in line.additions if a.id > int(p.get("max_id") or 0) and a.effective == day
                   and qty is not None and a.quantity == int(qty)]
            out[u["id"]] = (bool(hit), str(hit[0].id) if hit else None)
            continue
        a = by_id.get(p.get("addition_id"))
        if a is None:
            out[u["id"]] = (False, None)
        elif kind == QUANTITY:
            out[u["id"]] = (a.quantity == int(p["quantity"]), str(a.id))
        elif kind == CANCEL:
            out[u["id"]] = (a.cancelled == _day(p.get("cancelled_date")), str(a.id))
        elif kind == PRICE:
            cost = _money(p.get("unit_cost"))
            out[u["id"]] = (a.unit_price == _money(p.get("unit_price")) and (cost is None or a.unit_cost == cost),
                            str(a.id))
    return out


def detect_edit(work, line, today, resolved, segs):
    """Why the additions look edited by hand, or None."""
    baseline = work.expected
    applied = [u for u in work.unknown if resolved.get(u["id"], (False,))[0]]
    for u in applied:   # confirmed by the re-read: the PSA moved to what that op left behind
        after = (u.get("params") or {}).get("expected_after")
        if after:
            baseline = schedule.merge_steps(baseline, after)
    if not baseline:
        return None
    for day in _check_days(line.additions, today, [s[0] for s in segs]):
        expected = schedule.step_at(baseline, day)
        if expected is None:
            continue
        bp = schedule.desired_at(work.desired, day)
        want = None if bp is None else int(bp["quantity"])
        psa = quantity_on(line.additions, day)
        if psa != expected and psa != want:
            return (f"ConnectWise bills {psa} from {day.isoformat()}, we last posted {expected}, "
                    f"the marketplace says {want}")
    return None


def plan_line(work, line, today):
    """The Plan for one agreement line (``work``: common.posting.engine.GroupWork; ``line``:
    ConnectWiseLine)."""
    line = line or ConnectWiseLine()
    plan = Plan()
    plan.resolved = resolve_unknown(work.unknown, line)
    current = [a for a in line.additions if a.on(today)]
    if not work.desired:
        return plan
    pending_from = work.pending_from or today
    segs = segments(work.desired, pending_from, today)
    plan.expected = schedule.merge_steps(work.expected, steps(line.additions, today, [s[0] for s in segs]))
    plan.edited = detect_edit(work, line, today, plan.resolved, segs)

    sim = [_Sim(a.id, int(a.quantity), a.unit_price, a.unit_cost, a.effective, a.cancelled)
           for a in sorted(line.additions, key=lambda a: (a.effective, a.id))]
    max_id = max([a.id for a in line.additions], default=0)
    seg_days = [s[0] for s in segs]
    ops = []

    def emit(kind, day, target, change, *, unit_price=None, unit_cost=None, params=None, key_day=None):
        before = quantity_on(sim, day)
        change()
        after = quantity_on(sim, day)
        expected_after = schedule.merge_steps(work.expected, steps(sim, today, seg_days))
        p = {"addition_id": None if target is None or target.new else target.id, **(params or {}),
             "expected_after": expected_after}
        if target is not None and not target.new:
            p["key"] = f"a{target.id}"
        ops.append(PlannedOp(kind, day, quantity_before=before, quantity_after=after, unit_change=after - before,
                             unit_price=unit_price, unit_cost=unit_cost, params=p, expected_after=expected_after))

    def cancel(a, day):
        old = a.cancelled

        def change():
            a.cancelled = day
        effect = day if day is not None else old
        emit(CANCEL, effect, a, change, params={"cancelled_date": None if day is None else day.isoformat(),
                                                 "previous_cancelled_date": None if old is None else old.isoformat()})

    for start, end, qty, bp in segs:
        stop = end or FAR
        price, cost = _money(bp.get("unit_price")), _money(bp.get("unit_cost"))
        if qty <= 0:
            for a in sim:
                if a.effective < stop and (a.cancelled or FAR) > start:
                    day = max(start, a.effective)
                    if a.cancelled is None or a.cancelled > day:
                        cancel(a, day)
            continue
        active = [a for a in sim if a.on(start)]
        usable = [a for a in active if a.quantity == qty or start <= today or a.effective == start]
        usable.sort(key=lambda a: (a.quantity != qty, a.new, a.effective, a.id))
        rep = usable[0] if usable else None
        for a in active:
            if a is not rep:
                cancel(a, start)
        if rep is None:
            new = _Sim(-(len(ops) + 1), qty, price, cost, start, end, new=True)

            def add(new=new):
                sim.append(new)
            emit(ADD, start, new, add, unit_price=price, unit_cost=cost,
                 params={"creates_line": True, "quantity": qty, "max_id": max_id,
                         "cancelled_date": None if end is None else end.isoformat()})
            rep = new
        else:
            if rep.quantity != qty:
                def patch(rep=rep):
                    rep.quantity = qty
                emit(QUANTITY, max(start, rep.effective), rep, patch, params={"quantity": qty})
            if price is not None and (rep.unit_price != price or (cost is not None and rep.unit_cost != cost)):
                def reprice(rep=rep):
                    rep.unit_price = price
                    if cost is not None:
                        rep.unit_cost = cost
                emit(PRICE, max(start, rep.effective), rep, reprice, unit_price=price, unit_cost=cost,
                     params={"unit_price": format(price, "f"),
                             "unit_cost": None if cost is None else format(cost, "f"),
                             "previous_price": None if rep.unit_price is None else format(rep.unit_price, "f")})
        for a in list(sim):      # additions that would start billing inside this stretch
            if a is not rep and start < a.effective < stop and (a.cancelled or FAR) > a.effective:
                cancel(a, a.effective)
        if rep.cancelled != end:
            cancel(rep, end)

    live = [a for a in sim if not a.new and a.on(max(today, seg_days[0] if seg_days else today))]
    plan.vendor_line_id = str(live[0].id) if live else (str(current[0].id) if current else None)
    plan.ops = ops
    return plan
