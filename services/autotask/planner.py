"""Autotask planning: the PSA's state of one contract line + its desired schedule -> the fewest
operations that make the PSA say what the schedule says (pure: no I/O).

What Autotask shows (external-apis.md §2): a ContractService (price, cost, adjustedPrice; no
count) and ContractServiceUnits, one row per billing period, ``units`` = the sum of every
adjustment effective on or before the period's last day. Units change only through
ContractServiceAdjustments (signed ``unitChange`` from ``effectiveDate``), which cannot be read
back. So the planner works per period:

- The window starts at the first pending breakpoint (``pending_from``) and ends at the last date
  anything may still differ: the last breakpoint, the latest future-dated adjustment we posted
  (a decrease scheduled for next period that a newer event replaced must be undone), and the dates
  of operations whose outcome is unknown.
- For each period row in the window, in order: ``base`` = its units + the deltas planned so far.
  Each pending breakpoint inside the period that differs from the running value gets an
  adjustment on its own date (increase on the day seen, decrease on the next period start -
  the dates come from the mapping service, we post what the event says). A period without a
  breakpoint whose base differs from the desired value (e.g. our own superseded future
  adjustment) gets a correcting adjustment on its first day.
- A missing ContractService and a positive desired quantity: the first adjustment creates it
  (Autotask does so for an adjustment whose contract has no such service) with the last
  breakpoint's price and cost as adjustedUnitPrice/Cost: one write for a new line, not two (adding
  the service first, then its units, doubled the writes of a first reconciliation). A price that
  differs from the last breakpoint's: PATCH adjustedPrice (Autotask applies it from the next
  period). ``add_service`` is still resolved for ledger rows written before.

Edited in the PSA: we keep ``expected`` (a step function of what the PSA shows after our last
confirmed operation). A period whose units differ from it *and* from the desired value was changed
by someone else - the plan says so in ``edited`` and the engine applies the tenant's setting.

Unknown outcomes: an operation left in ``posting`` is resolved here from the fresh read - applied
when the PSA shows its result (adjustment: the period's units equal its quantity_after; new service:
the ContractService exists; price: the price equals it) - never re-sent as is.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import decimal

from common.posting import schedule
from common.posting.engine import Plan, PlannedOp

ADD_SERVICE, ADJUST, PRICE = "add_service", "adjust", "price"
OPERATIONS = (ADD_SERVICE, ADJUST, PRICE)


@dataclasses.dataclass(frozen=True)
class Period:
    start: dt.date
    end: dt.date
    units: int


@dataclasses.dataclass(frozen=True)
class AutotaskLine:
    """What the PSA holds for one (contract, service): None for the whole line when there is no
    ContractService."""

    contract_service_id: int
    unit_price: decimal.Decimal | None = None
    unit_cost: decimal.Decimal | None = None
    adjusted_price: decimal.Decimal | None = None
    periods: tuple = ()

    @property
    def price(self):
        return self.adjusted_price if self.adjusted_price is not None else self.unit_price

    def units_on(self, day):
        for p in self.periods:
            if p.start <= day <= p.end:
                return p.units
        return 0


@dataclasses.dataclass
class _Entry:
    start: dt.date
    end: dt.date
    units: int
    bps: list
    real: bool


def _day(value):
    return schedule._day(value)


def _money(value):
    return None if value is None else decimal.Decimal(str(value))


def window(work, today):
    """(first day, last day) of the PSA periods this line's plan needs."""
    pending_from = work.pending_from or today
    unknown_days = [_day(u["effective_date"]) for u in work.unknown if u.get("effective_date") is not None]
    start = min([pending_from, *unknown_days])
    ends = [pending_from, *unknown_days]
    ends += [_day(b["date"]) for b in work.desired if _day(b["date"]) >= start]
    if work.posted_horizon is not None and work.posted_horizon >= start:
        ends.append(work.posted_horizon)
    return start, max(ends)


def _entries(line, pending, start, end):
    rows = [p for p in (line.periods if line else ()) if p.end >= start and p.start <= end]
    entries, covered = [], set()
    for p in sorted(rows, key=lambda r: r.start):
        inside = [b for b in pending if p.start <= _day(b["date"]) <= p.end]
        covered.update(id(b) for b in inside)
        entries.append(_Entry(p.start, p.end, p.units, inside, True))
    for b in pending:
        if id(b) not in covered:  # no period row on that day (no line yet, or outside its periods)
            d = _day(b["date"])
            entries.append(_Entry(d, d, 0, [b], False))
    entries.sort(key=lambda e: (e.start, not e.real))
    return entries


def _want(desired, day):
    bp = schedule.desired_at(desired, day)
    return None if bp is None else int(bp["quantity"])


def resolve_unknown(unknown, line):
    """{row id: (applied, vendor item id)} for ledger rows whose outcome is unknown."""
    out = {}
    for u in unknown:
        kind = u["operation"]
        if kind == ADD_SERVICE:
            out[u["id"]] = (line is not None, str(line.contract_service_id) if line is not None else None)
        elif kind == ADJUST:
            after = u.get("quantity_after")
            applied = line is not None and after is not None and line.units_on(_day(u["effective_date"])) == int(after)
            out[u["id"]] = (applied, None)
        elif kind == PRICE:
            price = _money(u.get("unit_price"))
            out[u["id"]] = (line is not None and price is not None and line.price is not None and line.price == price,
                            str(line.contract_service_id) if line is not None else None)
    return out


def _steps(entries, deltas):
    return [[e.start.isoformat(), e.units + sum(d for day, d in deltas if day <= e.end)] for e in entries]


def detect_edit(work, line, entries, resolved):
    """Why the PSA line looks edited by hand, or None: a period whose units differ from what we
    last had confirmed there and from the desired value."""
    if not work.expected or line is None:
        return None
    applied = [(_day(u["effective_date"]), int(u["unit_change"] or 0)) for u in work.unknown
               if u["operation"] == ADJUST and resolved.get(u["id"], (False,))[0]]
    for e in entries:
        if not e.real:
            continue
        # a period shows one number: what it holds at its end. A line we created mid-period has its
        # first step on that day, after the period's start (looking at the start saw no baseline,
        # so an edit by hand to a line we created was never noticed)
        expected = schedule.step_at(work.expected, e.end)
        if expected is None:
            continue
        expected += sum(d for day, d in applied if day <= e.end)
        want = _want(work.desired, e.end)
        if e.units != expected and e.units != want:
            return (f"the PSA shows {e.units} units for the period from {e.start.isoformat()}, "
                    f"we last posted {expected}, the marketplace says {want}")
    return None


def plan_line(work, line, today):
    """The Plan for one contract line (``work``: common.posting.engine.GroupWork; ``line``:
    AutotaskLine or None)."""
    desired = work.desired
    plan = Plan(vendor_line_id=None if line is None else str(line.contract_service_id))
    plan.resolved = resolve_unknown(work.unknown, line)
    if not desired:
        return plan
    start, end = window(work, today)
    pending_from = work.pending_from or today
    pending = schedule.pending(desired, pending_from)
    entries = [e for e in _entries(line, pending, pending_from, end)]
    plan.edited = detect_edit(work, line, entries, plan.resolved)
    plan.expected = schedule.merge_steps(work.expected, _steps(entries, []))
    final = desired[-1]

    ops = []
    wants_units = any(int(b["quantity"]) > 0 for b in pending) or any(
        (_want(desired, e.end) or 0) > 0 for e in entries)
    if line is None and not wants_units:
        return plan
    csid = None if line is None else line.contract_service_id
    deltas = []

    def adjust(day, before, after, period_start):
        deltas.append((day, after - before))
        params = {"contract_service_id": csid, "period_start": period_start.isoformat()}
        price = cost = None
        if line is None and not ops:   # the first adjustment of a new line creates its ContractService
            params["creates_service"] = True
            price, cost = _money(final["unit_price"]), _money(final["unit_cost"])
        ops.append(PlannedOp(ADJUST, day, quantity_before=before, quantity_after=after, unit_change=after - before,
                             unit_price=price, unit_cost=cost, params=params,
                             expected_after=schedule.merge_steps(work.expected, _steps(entries, deltas))))

    for e in entries:
        base = e.units + sum(d for _, d in deltas)
        if e.bps:
            current = base
            for b in e.bps:
                q = int(b["quantity"])
                if q != current:
                    adjust(_day(b["date"]), current, q, e.start)
                    current = q
        else:
            want = _want(desired, e.end)
            if want is not None and want != base:
                adjust(max(e.start, pending_from), base, want, e.start)

    price = _money(final["unit_price"])
    if line is not None and int(final["quantity"]) > 0 and price is not None and line.price != price:
        quantity = _want(desired, _day(final["date"]))
        ops.append(PlannedOp(PRICE, max(_day(final["date"]), pending_from), quantity_before=quantity,
                             quantity_after=quantity, unit_price=price,
                             params={"contract_service_id": csid, "previous_price": None if line.price is None
                                     else format(line.price, "f")},
                             expected_after=ops[-1].expected_after if ops else plan.expected))
    plan.ops = ops
    return plan
