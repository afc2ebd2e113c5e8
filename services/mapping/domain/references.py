"""PSA reference records as the mapping rules need them (from browse_references / the cache)."""
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from .money import to_decimal


@dataclass(frozen=True)
class PsaCompany:
    """An Autotask Company / ConnectWise company. ``domains``: its web address and e-mail
    domains in any form (https://www.acme.com/, bob@acme.com, acme.com)."""

    psa_id: str
    name: str
    active: bool = True
    domains: tuple = ()


@dataclass(frozen=True)
class PsaService:
    """An Autotask Service / ConnectWise catalog product. ``identifier``: its code or SKU
    (ConnectWise catalog identifier), often the MPN itself."""

    psa_id: str
    name: str
    active: bool = True
    unit_price: Decimal | None = None
    unit_cost: Decimal | None = None
    identifier: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "unit_price", to_decimal(self.unit_price, "unit_price"))
        object.__setattr__(self, "unit_cost", to_decimal(self.unit_cost, "unit_cost"))


@dataclass(frozen=True)
class PsaContract:
    """An Autotask contract / ConnectWise agreement. ``recurring``: Autotask contractType 7
    (Recurring Service) or a ConnectWise agreement; ``period_months``: 1 monthly, 3 quarterly,
    12 yearly; ``start_date`` anchors its billing periods."""

    psa_id: str
    name: str
    company_id: str
    active: bool = True
    recurring: bool = True
    start_date: dt.date | None = None
    period_months: int = 1
    extra: dict = field(default_factory=dict, compare=False)
