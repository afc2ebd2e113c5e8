"""Desired state: what each PSA contract line (contract, service) should say.

Built from the billable subscription lines linked to it: the sum of their counted quantities, one
unit price from their price rules, and their marketplace unit cost. A group whose lines disagree
(unit price, currency, PSA company) is a conflict and is not emitted.
"""
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from .errors import MappingDomainError, PriceError
from .lines import LineMapping, SubscriptionLine, blocking_reasons, counted_quantity, seen_day
from .money import ZERO, round_money, to_decimal
from .pricing import NoPriceRule, PriceRule


@dataclass(frozen=True)
class BillingLine:
    """A subscription line with everything needed to bill it: its mappings, its effective price
    rule (override already applied, see pricing.effective_rule) and the PSA catalog price of the
    mapped service (needed by the psa_catalog rule only)."""

    line: SubscriptionLine
    mapping: LineMapping
    rule: PriceRule | None = None
    psa_catalog_price: Decimal | None = None

    def __post_init__(self):
        object.__setattr__(self, "psa_catalog_price", to_decimal(self.psa_catalog_price, "psa_catalog_price"))

    def raw_price(self):
        """The line's exact (unrounded) unit price; raises a PriceError when it can not be priced."""
        if self.rule is None:
            raise NoPriceRule(f"no price rule for product {self.line.mpn!r}")
        return self.rule.raw_price(msrp=self.line.unit_price, cost=self.line.unit_cost,
                                   psa_catalog_price=self.psa_catalog_price)


@dataclass(frozen=True)
class LineRef:
    """One subscription line behind a desired contract line (what the `lines` JSON lists)."""

    subscription_id: str
    mpn: str
    customer_id: str
    status: str
    quantity: int
    counted_quantity: int
    unit_price: Decimal | None
    unit_cost: Decimal | None
    price_error: str | None = None

    def as_dict(self):
        """JSON-ready: decimals as strings, so no cent is lost."""
        return {"subscription_id": self.subscription_id, "mpn": self.mpn, "customer_id": self.customer_id,
                "status": self.status, "quantity": self.quantity, "counted_quantity": self.counted_quantity,
                "unit_price": None if self.unit_price is None else str(self.unit_price),
                "unit_cost": None if self.unit_cost is None else str(self.unit_cost),
                "price_error": self.price_error}


@dataclass(frozen=True)
class DesiredLine:
    """What one PSA contract line should say (full state, not a delta). ``unit_price`` is None
    only for a zero-quantity group none of whose lines can be priced."""

    contract_id: str
    service_id: str
    company_id: str
    quantity: int
    unit_price: Decimal | None
    unit_cost: Decimal
    currency: str
    lines: tuple = ()
    warnings: tuple = ()

    @property
    def key(self):
        return (self.contract_id, self.service_id)

    def lines_payload(self):
        return [ref.as_dict() for ref in self.lines]


@dataclass(frozen=True)
class GroupConflict:
    """A (contract, service) whose lines disagree: not emitted until a person resolves it."""

    contract_id: str
    service_id: str
    reasons: tuple
    lines: tuple = ()

    @property
    def key(self):
        return (self.contract_id, self.service_id)


@dataclass(frozen=True)
class WaitingLine:
    """A line that is not billable yet, with why (for the "Unmapped & conflicts" report)."""

    line: SubscriptionLine
    reasons: tuple


@dataclass(frozen=True)
class DesiredState:
    groups: dict = field(default_factory=dict)      # (contract_id, service_id) -> DesiredLine
    conflicts: dict = field(default_factory=dict)   # (contract_id, service_id) -> GroupConflict
    waiting: tuple = ()                             # WaitingLine


def _recency(billing_line):
    try:
        day = seen_day(billing_line.line.seen_at)
    except MappingDomainError:
        day = dt.date.min
    return (day, billing_line.line.line_version)


def _label(line):
    return f"{line.subscription_id}/{line.mpn}"


def weighted_unit_cost(pairs):
    """Quantity-weighted average of (quantity, unit_cost) pairs, rounded half-up at the end:
    sum(q x cost) / sum(q), so quantity x average reproduces the total cost. When every
    quantity is 0, the plain average. None when no pair is given."""
    pairs = [(q, c) for q, c in pairs]
    if not pairs:
        return None
    total = sum(q for q, _ in pairs)
    if total == 0:
        return round_money(sum(c for _, c in pairs) / len(pairs))
    return round_money(sum(Decimal(q) * c for q, c in pairs) / total)


def build_group(key, billing_lines, *, bill_suspended=False):
    """The DesiredLine (or GroupConflict) for one (contract, service) from its billable lines."""
    contract_id, service_id = key
    ordered = sorted(billing_lines, key=lambda b: b.line.key)
    refs, prices = [], []
    for b in ordered:
        counted = counted_quantity(b.line, bill_suspended=bill_suspended)
        try:
            price, error = round_money(b.raw_price()), None
        except PriceError as exc:
            price, error = None, str(exc)
        prices.append(price)
        refs.append(LineRef(b.line.subscription_id, b.line.mpn, b.line.customer_id, b.line.status,
                            b.line.quantity, counted, price, b.line.unit_cost, error))
    quantity = sum(r.counted_quantity for r in refs)
    reasons, warnings = [], []

    companies = sorted({b.mapping.company_id for b in ordered})
    if len(companies) > 1:
        reasons.append(f"lines belong to different PSA companies: {', '.join(companies)}")
    currencies = sorted({b.line.currency for b in ordered})
    if len(currencies) > 1:
        reasons.append(f"lines are in different currencies: {', '.join(currencies)}")

    counting = [i for i, r in enumerate(refs) if r.counted_quantity > 0]
    if counting:
        for i in counting:
            if refs[i].price_error:
                reasons.append(f"line {_label(ordered[i].line)} can not be priced: {refs[i].price_error}")
        distinct = {}
        for i in counting:
            if prices[i] is not None:
                distinct.setdefault(prices[i], []).append(_label(ordered[i].line))
        if len(distinct) > 1:
            detail = "; ".join(f"{p} ({', '.join(labels)})" for p, labels in sorted(distinct.items()))
            reasons.append(f"lines disagree on the unit price: {detail}")
        unit_price = next(iter(distinct)) if len(distinct) == 1 else None
        cost_from = counting
    else:
        # nothing is billed: the price does not matter; take the most recently seen priceable line's
        priceable = [i for i in range(len(refs)) if prices[i] is not None]
        unit_price = prices[max(priceable, key=lambda i: _recency(ordered[i]))] if priceable else None
        cost_from = list(range(len(refs)))

    known = [(refs[i].counted_quantity, refs[i].unit_cost) for i in cost_from if refs[i].unit_cost is not None]
    missing = [_label(ordered[i].line) for i in cost_from if refs[i].unit_cost is None]
    if missing:
        warnings.append(f"unit cost unknown for {', '.join(missing)}: left out of the unit cost")
    unit_cost = weighted_unit_cost(known)
    if unit_cost is None:
        unit_cost = round_money(ZERO)

    if reasons:
        return GroupConflict(contract_id, service_id, tuple(reasons), tuple(refs))
    return DesiredLine(contract_id, service_id, companies[0], quantity, unit_price, unit_cost,
                       currencies[0], tuple(refs), tuple(warnings))


def desired_state(billing_lines, *, bill_suspended=False):
    """Desired state of every (contract, service) from BillingLines.

    Lines whose customer, product or contract link is not mapped wait (DesiredState.waiting).
    A group exists as soon as one billable line is linked to it, even when it counts 0 units
    (that is how a cancellation reaches the PSA).
    """
    groups, waiting = {}, []
    for b in billing_lines:
        reasons = blocking_reasons(b.mapping)
        if reasons:
            waiting.append(WaitingLine(b.line, tuple(reasons)))
        else:
            groups.setdefault(b.mapping.group_key, []).append(b)
    desired, conflicts = {}, {}
    for key in sorted(groups):
        result = build_group(key, groups[key], bill_suspended=bill_suspended)
        (conflicts if isinstance(result, GroupConflict) else desired)[key] = result
    return DesiredState(desired, conflicts, tuple(waiting))
