"""Planned changes: previous state of a contract line vs its new desired state.

``previous`` is what the PSA line says now (read from the PSA before writing) or, for planning,
the last desired state; ``new`` is the desired state. One PlannedChange per (contract, service)
per day; it knows its kind, delta and effective date.
"""
import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal

from .dates import CANCEL, DECREASE, INCREASE, NEW_LINE, NO_CHANGE, PRICE_CHANGE, effective_date
from .desired import GroupConflict, build_group
from .lines import blocking_reasons
from .money import same_money, to_decimal

QUANTITY_KINDS = (NEW_LINE, INCREASE, DECREASE, CANCEL)


@dataclass(frozen=True)
class LineState:
    """What a PSA contract line says (or should say). DesiredLine has the same three fields."""

    quantity: int
    unit_price: Decimal | None = None
    unit_cost: Decimal | None = None

    def __post_init__(self):
        object.__setattr__(self, "unit_price", to_decimal(self.unit_price, "unit_price"))
        object.__setattr__(self, "unit_cost", to_decimal(self.unit_cost, "unit_cost"))


@dataclass(frozen=True)
class PlannedChange:
    """One planned operation on one PSA contract line.

    ``price_changed`` / ``cost_changed``: the unit price / cost moved as well (a quantity change
    can carry a price move; plan_operations splits it into two operations, the price part
    effective at ``price_effective_date``, the next period start).
    """

    contract_id: str
    service_id: str
    kind: str
    quantity_before: int
    quantity_after: int
    unit_price_before: Decimal | None
    unit_price_after: Decimal | None
    unit_cost_before: Decimal | None
    unit_cost_after: Decimal | None
    effective_date: dt.date
    price_changed: bool = False
    cost_changed: bool = False
    price_effective_date: dt.date | None = None

    @property
    def delta_units(self):
        return self.quantity_after - self.quantity_before

    @property
    def key(self):
        return (self.contract_id, self.service_id)


def _moved(before, after):
    """A price moved when both are known and differ in cents; an unknown new price moves nothing."""
    return before is not None and after is not None and not same_money(before, after)


def classify_change(previous, new, *, seen_on, contract_start=None, period_months=1,
                    credit_decreases_immediately=False, effective_date_override=None,
                    contract_id=None, service_id=None):
    """Classify ``previous`` -> ``new`` (LineState / DesiredLine; ``previous`` None = not on the
    contract yet) as new_line | increase | decrease | cancel | price_change | no_change.

    - previous None: new_line when the new quantity > 0, else no_change (no 0-unit line is added).
    - quantity to 0: cancel; up: increase (also from 0 units); down: decrease.
    - same quantity (> 0): price_change when the unit price or the unit cost moved, else no_change.
    - Prices compare in cents (12.35 == 12.3500).
    The effective date follows dates.effective_date (override wins).
    """
    if new is None:
        raise ValueError("new desired state is required: a missing state means 'unknown', not zero")
    before = 0 if previous is None else previous.quantity
    price_before = None if previous is None else previous.unit_price
    cost_before = None if previous is None else previous.unit_cost
    after = new.quantity
    price_moved = _moved(price_before, new.unit_price)
    cost_moved = _moved(cost_before, new.unit_cost)

    if previous is None:
        kind = NEW_LINE if after > 0 else NO_CHANGE
    elif after == before:
        kind = PRICE_CHANGE if after > 0 and (price_moved or cost_moved) else NO_CHANGE
    elif after == 0:
        kind = CANCEL
    else:
        kind = INCREASE if after > before else DECREASE
    if kind in (NEW_LINE, CANCEL, NO_CHANGE):
        price_moved = cost_moved = False

    dates = dict(seen_on=seen_on, contract_start=contract_start, period_months=period_months,
                 credit_decreases_immediately=credit_decreases_immediately, override=effective_date_override)
    when = effective_date(kind, **dates)
    price_when = None
    if price_moved or cost_moved:
        price_when = effective_date(PRICE_CHANGE, **dates)
    return PlannedChange(contract_id or getattr(new, "contract_id", None), service_id or getattr(new, "service_id", None),
                         kind, before, after, price_before, new.unit_price, cost_before, new.unit_cost,
                         when, price_moved, cost_moved, price_when)


def plan_operations(change):
    """The operations to post for one PlannedChange: [] for no_change; one operation; or, for an
    increase/decrease that also moves the price, the quantity operation at the old price and
    cost (in force until the period ends) plus a price_change at ``price_effective_date``."""
    if change.kind == NO_CHANGE:
        return []
    if change.kind in (INCREASE, DECREASE) and (change.price_changed or change.cost_changed):
        quantity_op = replace(change, unit_price_after=change.unit_price_before,
                              unit_cost_after=change.unit_cost_before, price_changed=False,
                              cost_changed=False, price_effective_date=None)
        price_op = replace(change, kind=PRICE_CHANGE, quantity_before=change.quantity_after,
                           effective_date=change.price_effective_date)
        return [quantity_op, price_op]
    return [change]


def collapse_same_day(lines):
    """Several states of one line seen on one day collapse into one: the last (highest
    line_version, then latest seen_at) wins. Returns one SubscriptionLine per (line, day),
    in (day, subscription_id, mpn) order. Works on SubscriptionLines or BillingLines."""
    last = {}
    for item in lines:
        line = getattr(item, "line", item)
        slot = (line.seen_on, line.key)
        rank = (line.line_version, _instant(line.seen_at))
        if slot not in last or rank >= last[slot][0]:
            last[slot] = (rank, item)
    return [last[slot][1] for slot in sorted(last)]


def _instant(value):
    """seen_at as a comparable UTC datetime (dates at midnight)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class DailyPlan:
    changes: list      # PlannedChange, one per (contract, service) per day, in day order
    conflicts: list    # (day, GroupConflict): the group was not changed that day
    final: dict        # (contract_id, service_id) -> LineState after the last day


def plan_by_day(*, previous, current, changes, contracts=None, bill_suspended=False,
                credit_decreases_immediately=False):
    """Replay line changes day by day into one operation per (contract, service) per day.

    ``previous``: {(contract_id, service_id): LineState} the posted (or last desired) state;
    ``current``: BillingLines as they stood behind ``previous``; ``changes``: BillingLines with
    newer states (their ``line.seen_at`` dates them); ``contracts``: {contract_id: object with
    ``start_date`` and optional ``period_months``} for period-based dates.

    Same-day changes of a line collapse (last state wins), so up-down-up on one day is one
    increase (or nothing). Replaying a line whose mapping was completed late gives it the
    effective dates it would have had. Groups whose lines conflict keep their state that day.
    """
    state = {b.line.key: b for b in current}
    posted = dict(previous)
    planned, conflicts = [], []
    by_day = {}
    for b in collapse_same_day(changes):
        by_day.setdefault(b.line.seen_on, []).append(b)
    for day in sorted(by_day):
        touched = set()
        for b in by_day[day]:
            old = state.get(b.line.key)
            if old is not None:
                touched.add(old.mapping.group_key)
            touched.add(b.mapping.group_key)
            state[b.line.key] = b
        for key in sorted(touched, key=lambda k: tuple("" if p is None else p for p in k)):
            members = [b for b in state.values() if b.mapping.group_key == key and not blocking_reasons(b.mapping)]
            if not members:
                continue
            group = build_group(key, members, bill_suspended=bill_suspended)
            if isinstance(group, GroupConflict):
                conflicts.append((day, group))
                continue
            terms = (contracts or {}).get(key[0])
            change = classify_change(posted.get(key), group, seen_on=day,
                                     contract_start=getattr(terms, "start_date", None),
                                     period_months=getattr(terms, "period_months", 1) or 1,
                                     credit_decreases_immediately=credit_decreases_immediately)
            if change.kind != NO_CHANGE:
                planned.append(change)
                posted[key] = LineState(group.quantity, group.unit_price, group.unit_cost)
    return DailyPlan(planned, conflicts, posted)
