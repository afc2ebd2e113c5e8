"""ConnectWise Manage (apis/3.0) payloads: marshmallow schemas that check what the vendor sends
and turn it into small frozen records.

- Unknown vendor fields are ignored (EXCLUDE): the API returns many more than billing needs.
- Money (unitPrice, unitCost, price, cost, billAmount, extPrice, extCost, ...) -> Decimal, built
  from the JSON text of the number (``Decimal(str(value))``) so 21.99 stays 21.99; numbers given as
  strings are accepted too. Quantities are Decimal as well (the vendor's quantity is a double;
  seat counts come back as whole numbers and compare equal to ints).
- The vendor sends every date as a UTC datetime string (``2026-02-10T00:00:00Z``). Calendar-day
  fields (agreement startDate/endDate, addition effectiveDate/cancelledDate) load as
  ``datetime.date`` (the UTC day); ``_info.lastUpdated`` / ``dateEntered`` load as aware UTC
  datetimes.
- ``validate(kind, payload)`` -> record, or raises ``InvalidPayload(record_id, field, problem)``;
  the client turns that into ``common.vendor_client.MalformedRecord``. ``field`` uses the vendor's
  path spelling (``product/id``).

Records keep the vendor JSON they came from in ``raw`` (excluded from ==/repr).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any, Optional

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate as v

BILL_CUSTOMER = ("Billable", "DoNotBill", "NoCharge")
AGREEMENT_STATUSES = ("Active", "Cancelled", "Expired", "Inactive")


# --- fields ------------------------------------------------------------------------------------

def _parse_datetime(value) -> dt.datetime:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a string")
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:                      # the vendor's dates are UTC
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


class VendorDateTime(fields.Field):
    """ISO datetime (``Z`` or offset; naive = UTC) -> aware UTC datetime."""

    default_error_messages = {"invalid": "Not a valid datetime."}

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return _parse_datetime(value)
        except (TypeError, ValueError) as exc:
            raise self.make_error("invalid") from exc

    def _serialize(self, value, attr, obj, **kwargs):
        return format_datetime(value) if value is not None else None


class VendorDate(fields.Field):
    """``2026-02-10`` or ``2026-02-10T00:00:00Z`` -> date (the UTC calendar day)."""

    default_error_messages = {"invalid": "Not a valid date."}

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            if isinstance(value, str) and len(value.strip()) == 10:
                return dt.date.fromisoformat(value.strip())
            return _parse_datetime(value).date()
        except (TypeError, ValueError) as exc:
            raise self.make_error("invalid") from exc

    def _serialize(self, value, attr, obj, **kwargs):
        return format_date(value) if value is not None else None


def Money(**kw):  # noqa: N802 - reads like a field class
    return fields.Decimal(allow_none=True, load_default=None, **kw)


def Quantity(**kw):  # noqa: N802
    return fields.Decimal(**kw)


def Id(**kw):  # noqa: N802
    return fields.Integer(strict=True, **kw)


def format_date(value: dt.date | dt.datetime | str) -> str:
    """date -> the vendor's ``YYYY-MM-DDT00:00:00Z``; a datetime is converted to UTC first."""
    if isinstance(value, str):
        value = VendorDate().deserialize(value)
    if isinstance(value, dt.datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
        value = value.astimezone(dt.timezone.utc).date()
    if not isinstance(value, dt.date):
        raise TypeError(f"not a date: {value!r}")
    return value.strftime("%Y-%m-%dT00:00:00Z")


def format_datetime(value: dt.datetime | dt.date) -> str:
    """datetime (naive = UTC) or date -> ``YYYY-MM-DDTHH:MM:SSZ``."""
    if not isinstance(value, dt.datetime):
        if isinstance(value, dt.date):
            return format_date(value)
        raise TypeError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- records -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Company:
    id: int
    identifier: str
    name: str
    status_id: Optional[int]
    status_name: Optional[str]
    last_updated: Optional[dt.datetime]
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return (self.status_name or "").casefold() == "active"


@dataclasses.dataclass(frozen=True)
class Agreement:
    id: int
    name: str
    company_id: int
    company_identifier: Optional[str]
    company_name: Optional[str]
    type_id: Optional[int]
    type_name: Optional[str]
    agreement_status: str
    cancelled_flag: bool
    start_date: Optional[dt.date]
    end_date: Optional[dt.date]
    no_ending_date_flag: bool
    billing_cycle_id: Optional[int]
    billing_cycle_name: Optional[str]
    prorate_flag: Optional[bool]
    bill_amount: Optional[Decimal]
    last_updated: Optional[dt.datetime]
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def active(self) -> bool:
        """Status Active and not cancelled: the only agreements that take new additions."""
        return self.agreement_status == "Active" and not self.cancelled_flag


@dataclasses.dataclass(frozen=True)
class Addition:
    id: int
    agreement_id: int
    product_id: int
    product_identifier: Optional[str]
    quantity: Decimal
    less_included: Decimal
    unit_price: Optional[Decimal]
    unit_cost: Optional[Decimal]
    bill_customer: str
    effective_date: dt.date
    cancelled_date: Optional[dt.date]
    description: Optional[str]
    invoice_description: Optional[str]
    ext_price: Optional[Decimal]
    ext_cost: Optional[Decimal]
    prorate_current_period_flag: Optional[bool]
    last_updated: Optional[dt.datetime]
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """A cancelledDate is set (it may lie in the future: cancelled from that day)."""
        return self.cancelled_date is not None

    def in_force_on(self, day: dt.date) -> bool:
        return self.effective_date <= day and (self.cancelled_date is None
                                               or day < self.cancelled_date)


@dataclasses.dataclass(frozen=True)
class CatalogItem:
    id: int
    identifier: str
    description: Optional[str]
    inactive_flag: bool
    price: Optional[Decimal]
    cost: Optional[Decimal]
    product_class: Optional[str]
    recurring_flag: Optional[bool]
    recurring_revenue: Optional[Decimal]
    recurring_cost: Optional[Decimal]
    last_updated: Optional[dt.datetime]
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return not self.inactive_flag


# --- schemas -----------------------------------------------------------------------------------

class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class RefSchema(_Base):
    id = Id(required=True)
    identifier = fields.String(allow_none=True, load_default=None)
    name = fields.String(allow_none=True, load_default=None)


class InfoSchema(_Base):
    lastUpdated = VendorDateTime(allow_none=True, load_default=None)
    dateEntered = VendorDateTime(allow_none=True, load_default=None)


def _ref(required=False):
    if required:
        return fields.Nested(RefSchema, required=True)
    return fields.Nested(RefSchema, allow_none=True, load_default=None)


def _last_updated(data):
    return (data.get("_info") or {}).get("lastUpdated")


class CompanySchema(_Base):
    id = Id(required=True)
    identifier = fields.String(required=True)
    name = fields.String(required=True)
    status = _ref()
    _info = fields.Nested(InfoSchema, allow_none=True, load_default=None, data_key="_info")

    @post_load
    def make(self, data, **kwargs):
        status = data.get("status") or {}
        return Company(id=data["id"], identifier=data["identifier"], name=data["name"],
                       status_id=status.get("id"), status_name=status.get("name"),
                       last_updated=_last_updated(data))


class AgreementSchema(_Base):
    id = Id(required=True)
    name = fields.String(required=True)
    company = _ref(required=True)
    type = _ref()
    agreementStatus = fields.String(required=True, validate=v.OneOf(AGREEMENT_STATUSES))
    cancelledFlag = fields.Boolean(load_default=False)
    startDate = VendorDate(allow_none=True, load_default=None)
    endDate = VendorDate(allow_none=True, load_default=None)
    noEndingDateFlag = fields.Boolean(allow_none=True, load_default=False)
    billingCycle = _ref()
    prorateFlag = fields.Boolean(allow_none=True, load_default=None)
    billAmount = Money()
    _info = fields.Nested(InfoSchema, allow_none=True, load_default=None, data_key="_info")

    @post_load
    def make(self, data, **kwargs):
        company, typ, cycle = data["company"], data.get("type") or {}, data.get("billingCycle") or {}
        return Agreement(
            id=data["id"], name=data["name"], company_id=company["id"],
            company_identifier=company.get("identifier"), company_name=company.get("name"),
            type_id=typ.get("id"), type_name=typ.get("name"),
            agreement_status=data["agreementStatus"], cancelled_flag=bool(data["cancelledFlag"]),
            start_date=data.get("startDate"), end_date=data.get("endDate"),
            no_ending_date_flag=bool(data.get("noEndingDateFlag")),
            billing_cycle_id=cycle.get("id"), billing_cycle_name=cycle.get("name"),
            prorate_flag=data.get("prorateFlag"), bill_amount=data.get("billAmount"),
            last_updated=_last_updated(data))


class AdditionSchema(_Base):
    id = Id(required=True)
    agreementId = Id(required=True)
    product = _ref(required=True)
    quantity = Quantity(required=True)
    lessIncluded = Quantity(allow_none=True, load_default=None)
    unitPrice = Money()
    unitCost = Money()
    billCustomer = fields.String(required=True, validate=v.OneOf(BILL_CUSTOMER))
    effectiveDate = VendorDate(required=True)
    cancelledDate = VendorDate(allow_none=True, load_default=None)
    description = fields.String(allow_none=True, load_default=None)
    invoiceDescription = fields.String(allow_none=True, load_default=None)
    extPrice = Money()
    extCost = Money()
    prorateCurrentPeriodFlag = fields.Boolean(allow_none=True, load_default=None)
    _info = fields.Nested(InfoSchema, allow_none=True, load_default=None, data_key="_info")

    @post_load
    def make(self, data, **kwargs):
        product = data["product"]
        return Addition(
            id=data["id"], agreement_id=data["agreementId"], product_id=product["id"],
            product_identifier=product.get("identifier"), quantity=data["quantity"],
            less_included=data.get("lessIncluded") or Decimal(0),
            unit_price=data.get("unitPrice"), unit_cost=data.get("unitCost"),
            bill_customer=data["billCustomer"], effective_date=data["effectiveDate"],
            cancelled_date=data.get("cancelledDate"), description=data.get("description"),
            invoice_description=data.get("invoiceDescription"),
            ext_price=data.get("extPrice"), ext_cost=data.get("extCost"),
            prorate_current_period_flag=data.get("prorateCurrentPeriodFlag"),
            last_updated=_last_updated(data))


class CatalogItemSchema(_Base):
    id = Id(required=True)
    identifier = fields.String(required=True)
    description = fields.String(allow_none=True, load_default=None)
    inactiveFlag = fields.Boolean(load_default=False)
    price = Money()
    cost = Money()
    productClass = fields.String(allow_none=True, load_default=None)
    recurringFlag = fields.Boolean(allow_none=True, load_default=None)
    recurringRevenue = Money()
    recurringCost = Money()
    _info = fields.Nested(InfoSchema, allow_none=True, load_default=None, data_key="_info")

    @post_load
    def make(self, data, **kwargs):
        return CatalogItem(
            id=data["id"], identifier=data["identifier"], description=data.get("description"),
            inactive_flag=bool(data["inactiveFlag"]), price=data.get("price"),
            cost=data.get("cost"), product_class=data.get("productClass"),
            recurring_flag=data.get("recurringFlag"),
            recurring_revenue=data.get("recurringRevenue"),
            recurring_cost=data.get("recurringCost"), last_updated=_last_updated(data))


SCHEMAS = {"company": CompanySchema(), "agreement": AgreementSchema(),
           "addition": AdditionSchema(), "catalog": CatalogItemSchema()}


# --- validation entry point --------------------------------------------------------------------

class InvalidPayload(ValueError):
    """One vendor record failed its schema: record id (if readable), vendor field path, problem."""

    def __init__(self, kind, record_id, field, problem, errors=None):
        super().__init__(f"{kind} {record_id}: {field}: {problem}")
        self.kind, self.record_id, self.field, self.problem = kind, record_id, field, problem
        self.errors = errors or {}


def _first_error(messages, prefix=""):
    """marshmallow's nested error dict -> (vendor path 'product/id', first message)."""
    if isinstance(messages, dict):
        for key in sorted(messages, key=str):
            path = f"{prefix}/{key}" if prefix else str(key)
            return _first_error(messages[key], path)
    if isinstance(messages, (list, tuple)) and messages:
        first = messages[0]
        if isinstance(first, (dict, list, tuple)):
            return _first_error(first, prefix)
        return prefix or "_schema", str(first)
    return prefix or "_schema", str(messages)


def record_id_of(payload: Any):
    if isinstance(payload, dict):
        return payload.get("id")
    return None


def validate(kind: str, payload: Any):
    """Vendor JSON -> record (Company / Agreement / Addition / CatalogItem).
    Raises InvalidPayload naming the record id and the (first) bad field."""
    if not isinstance(payload, dict):
        raise InvalidPayload(kind, None, "_schema", f"expected a JSON object, got {type(payload).__name__}")
    try:
        record = SCHEMAS[kind].load(payload)
    except ValidationError as exc:
        field, problem = _first_error(exc.messages)
        raise InvalidPayload(kind, record_id_of(payload), field, problem, exc.messages) from None
    return dataclasses.replace(record, raw=payload)
