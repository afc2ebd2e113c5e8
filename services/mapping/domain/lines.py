"""Subscription lines as the mapping service sees them, and what makes one billable."""
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from .errors import MappingDomainError
from .money import to_decimal

# The same vocabularies as common.events (a test keeps them in step).
SUBSCRIPTION_STATUSES = ("pending", "active", "hold", "terminated", "removed")
COUNTING_STATUSES = ("active", "pending")
MAPPED, SUGGESTED, UNMAPPED, IGNORED, CONFLICT = "mapped", "suggested", "unmapped", "ignored", "conflict"
MAPPING_STATUSES = (MAPPED, SUGGESTED, UNMAPPED, IGNORED, CONFLICT)


def seen_day(value):
    """The calendar day of a ``seen_at``: a date as is; a datetime (or ISO string) converted to
    UTC first when it carries a time zone, taken as UTC when naive."""
    if isinstance(value, str):
        value = value.strip()
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MappingDomainError(f"seen_at is not an ISO date or datetime: {value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise MappingDomainError(f"seen_at must be a date, datetime or ISO string, not {value!r}")


@dataclass(frozen=True)
class SubscriptionLine:
    """One marketplace billing unit (subscription id, MPN) in its current state.

    ``unit_price`` is the marketplace (MSRP) unit price, ``unit_cost`` the MSP's cost; both may be
    unknown (None). ``seen_at`` is when our sync saw this state (date, datetime or ISO string).
    ``line_version`` grows with every change of the line.
    """

    subscription_id: str
    mpn: str
    customer_id: str
    quantity: int
    status: str
    unit_price: Decimal | None = None
    unit_cost: Decimal | None = None
    seen_at: object = None
    currency: str = "USD"
    line_version: int = 0

    def __post_init__(self):
        if self.status not in SUBSCRIPTION_STATUSES:
            raise MappingDomainError(f"unknown subscription status {self.status!r}")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) or self.quantity < 0:
            raise MappingDomainError(f"quantity must be a whole number >= 0, not {self.quantity!r}")
        object.__setattr__(self, "unit_price", to_decimal(self.unit_price, "unit_price"))
        object.__setattr__(self, "unit_cost", to_decimal(self.unit_cost, "unit_cost"))

    @classmethod
    def from_event(cls, payload):
        """From a loaded subscription_line_changed payload (common.events.SubscriptionLineChanged)."""
        return cls(payload["subscription_id"], payload["mpn"], payload["customer_id"], payload["quantity"],
                   payload["status"], payload.get("unit_price"), payload.get("unit_cost"), payload["seen_at"],
                   payload.get("currency") or "USD", payload.get("line_version") or 0)

    @property
    def key(self):
        return (self.subscription_id, self.mpn)

    @property
    def seen_on(self):
        return seen_day(self.seen_at)


def counted_quantity(line, *, bill_suspended=False):
    """Units a line contributes to its contract line: active/pending count in full; hold counts
    only with the tenant setting bill_suspended; terminated/removed count 0."""
    if line.status in COUNTING_STATUSES:
        return line.quantity
    if line.status == "hold" and bill_suspended:
        return line.quantity
    return 0


@dataclass(frozen=True)
class LineMapping:
    """The three mapping items a line depends on, with the PSA ids they point to."""

    customer_status: str
    product_status: str
    link_status: str
    company_id: str | None = None
    service_id: str | None = None
    contract_id: str | None = None

    def __post_init__(self):
        for field in ("customer_status", "product_status", "link_status"):
            if getattr(self, field) not in MAPPING_STATUSES:
                raise MappingDomainError(f"unknown mapping status {getattr(self, field)!r} for {field}")

    @property
    def group_key(self):
        return (self.contract_id, self.service_id)


def blocking_reasons(mapping):
    """Why a line is not billable ([] when it is): every mapping item that is not ``mapped``,
    and a mapped item without its PSA id."""
    reasons = []
    for label, status, psa_id in (("customer", mapping.customer_status, mapping.company_id),
                                  ("product", mapping.product_status, mapping.service_id),
                                  ("contract link", mapping.link_status, mapping.contract_id)):
        if status != MAPPED:
            reasons.append(f"{label} is {status}")
        elif not psa_id:
            reasons.append(f"{label} is mapped without a PSA id")
    return reasons


def is_billable(mapping):
    """A line is billable only when its customer, product and contract link are all mapped."""
    return not blocking_reasons(mapping)
