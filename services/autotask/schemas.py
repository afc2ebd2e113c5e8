"""Marshmallow schemas for the Autotask records the billing product reads.

Each schema validates one vendor item and returns a plain dict keyed by the vendor's own camelCase
names (``companyID``, ``contractServiceID``), like the marketplace client's records:

    Companies             CompanySchema           id, companyName, companyNumber, companyType, isActive, ...
    Contracts             ContractSchema          id, companyID, contractName, contractNumber, contractType,
                                                  status, startDate, endDate, contractPeriodType, ...
    Services              ServiceSchema           id, name, invoiceDescription, unitPrice, unitCost, isActive, ...
    ContractServices      ContractServiceSchema   id, contractID, serviceID, unitPrice, unitCost, adjustedPrice, ...
    ContractServiceUnits  ServiceUnitSchema       id, contractID, contractServiceID, serviceID, startDate,
                                                  endDate, units, price, cost, approveAndPostDate

Wire rules (external-apis.md section 2):

- Dates come as ``yyyy-mm-ddThh:mm:ss.ms`` in UTC; ``...ss`` without milliseconds and a trailing
  ``Z`` are accepted too, as is a bare ``yyyy-mm-dd``. Date-only fields (startDate, endDate,
  effectiveDate, datePurchased) become ``datetime.date`` from the calendar date as written - no
  zone shift. Datetime fields become aware UTC ``datetime`` (an explicit offset is converted).
- Money becomes ``Decimal`` built from the number's shortest text (``5.1`` -> ``Decimal("5.1")``,
  never the float's binary expansion); strings are accepted.
- Field names are matched case-insensitively (the vendor treats input names that way; its output is
  camelCase). Unknown fields (``userDefinedFields``, stamps we do not use) are ignored.

A record the schema rejects is reported by ``first_problem`` as (field, problem); the client turns
that into ``MalformedRecord`` naming entity, id and field.
"""
from __future__ import annotations

import datetime as dt
import decimal
import math
import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate, validates_schema

_WIRE_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$")


def _match(value):
    if not isinstance(value, str):
        raise ValidationError("Not a date string.")
    m = _WIRE_RE.match(value.strip())
    if not m:
        raise ValidationError(f"'{value}' is not an Autotask date (yyyy-mm-ddThh:mm:ss.ms).")
    return m.groups()


def parse_date(value) -> dt.date:
    """The calendar date as written; any time part and zone are ignored (no zone shift)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    y, mo, d, *_ = _match(value)
    try:
        return dt.date(int(y), int(mo), int(d))
    except ValueError:
        raise ValidationError(f"'{value}' is not a valid date.") from None


def parse_datetime(value) -> dt.datetime:
    """An aware UTC datetime. No suffix or ``Z`` means UTC; an offset is converted to UTC."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    y, mo, d, hh, mi, ss, frac, zone = _match(value)
    try:
        micro = int((frac or "0").ljust(6, "0")[:6])
        out = dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), micro,
                          tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValidationError(f"'{value}' is not a valid datetime.") from None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        out -= sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return out


def to_decimal(value) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, decimal.Decimal)):
        raise ValidationError("Not a number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("Not a finite number.")
    try:
        out = decimal.Decimal(str(value).strip())   # str(float) is the shortest round-trip text
    except decimal.InvalidOperation:
        raise ValidationError(f"'{value}' is not a number.") from None
    if not out.is_finite():
        raise ValidationError("Not a finite number.")
    return out


class WireDate(fields.Field):
    """Autotask date-only field -> datetime.date."""

    def _deserialize(self, value, attr, data, **kwargs):
        return parse_date(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else f"{value.isoformat()}T00:00:00.000"


class WireDateTime(fields.Field):
    """Autotask datetime field -> aware UTC datetime."""

    def _deserialize(self, value, attr, data, **kwargs):
        return parse_datetime(value)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        value = value.astimezone(dt.timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}"


class Money(fields.Field):
    """A JSON number (or numeric string) -> Decimal without float noise."""

    def _deserialize(self, value, attr, data, **kwargs):
        return to_decimal(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else float(value)


class StrictInt(fields.Integer):
    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)


class _AutotaskSchema(Schema):
    """Base: ignore unknown fields, match vendor field names case-insensitively."""

    class Meta:
        unknown = EXCLUDE

    id = StrictInt(required=True, validate=validate.Range(min=0))

    @pre_load
    def _case_insensitive(self, data, **kwargs):
        if not isinstance(data, dict):
            return data
        wanted = {name.lower(): name for name in self.fields}
        out = {}
        for key, value in data.items():
            canon = wanted.get(str(key).lower(), key)
            # the exact spelling wins if the vendor ever sent both
            if canon in out and key != canon:
                continue
            out[canon] = value
        return out


def _opt(field_cls, **kw):
    return field_cls(load_default=None, allow_none=True, **kw)


def _req(field_cls, **kw):
    return field_cls(required=True, allow_none=False, **kw)


class _DatesInOrder:
    @validates_schema
    def _dates_in_order(self, data, **kwargs):
        start, end = data.get("startDate"), data.get("endDate")
        if start and end and end < start:
            raise ValidationError(f"endDate {end} is before startDate {start}.", "endDate")


class CompanySchema(_AutotaskSchema):
    companyName = _req(fields.String, validate=validate.Length(min=1))
    companyNumber = _opt(fields.String)
    companyType = _req(StrictInt)
    isActive = _req(fields.Boolean)
    webAddress = _opt(fields.String)
    phone = _opt(fields.String)


class ContractSchema(_DatesInOrder, _AutotaskSchema):
    companyID = _req(StrictInt)
    contractName = _req(fields.String)
    contractNumber = _opt(fields.String)
    contractType = _req(StrictInt)
    status = _req(StrictInt)
    startDate = _req(WireDate)
    endDate = _opt(WireDate)
    contractPeriodType = _opt(fields.Raw)
    billingPreference = _opt(fields.Raw)
    description = _opt(fields.String)


class ServiceSchema(_AutotaskSchema):
    name = _req(fields.String, validate=validate.Length(min=1))
    description = _opt(fields.String)
    invoiceDescription = _opt(fields.String)
    unitPrice = _opt(Money)
    unitCost = _opt(Money)
    periodType = _opt(fields.Raw)
    isActive = _req(fields.Boolean)


class ContractServiceSchema(_AutotaskSchema):
    contractID = _req(StrictInt)
    serviceID = _req(StrictInt)
    unitPrice = _opt(Money)
    unitCost = _opt(Money)
    adjustedPrice = _opt(Money)
    internalDescription = _opt(fields.String)
    invoiceDescription = _opt(fields.String)


class ServiceUnitSchema(_DatesInOrder, _AutotaskSchema):
    contractID = _req(StrictInt)
    contractServiceID = _req(StrictInt)
    serviceID = _req(StrictInt)
    startDate = _req(WireDate)
    endDate = _req(WireDate)
    units = _req(StrictInt, validate=validate.Range(min=0, error="units must not be negative."))
    price = _opt(Money)
    cost = _opt(Money)
    approveAndPostDate = _opt(WireDateTime)


# entity name (as in the URL) -> schema instance
SCHEMAS: dict[str, Schema] = {
    "Companies": CompanySchema(),
    "Contracts": ContractSchema(),
    "Services": ServiceSchema(),
    "ContractServices": ContractServiceSchema(),
    "ContractServiceUnits": ServiceUnitSchema(),
}
SCHEMA_BY_LOWER = {name.lower(): name for name in SCHEMAS}


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first error in a ValidationError, for MalformedRecord."""
    messages = exc.messages
    if not isinstance(messages, dict) or not messages:
        return "(record)", str(messages)
    key = sorted(messages, key=str)[0]
    problem = messages[key]
    while isinstance(problem, (list, dict)) and problem:
        problem = problem[0] if isinstance(problem, list) else next(iter(problem.values()))
    return ("(record)" if key == "_schema" else str(key)), str(problem)


def record_id(item) -> object:
    """The id of a raw vendor item, for error reports (None if it has no usable one)."""
    if isinstance(item, dict):
        for key, value in item.items():
            if str(key).lower() == "id" and isinstance(value, (int, str)) and not isinstance(value, bool):
                return value
    return None
