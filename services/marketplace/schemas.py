"""Validation of what the Ingram Micro Cloud Marketplace sends (external-apis.md section 1).

Loaded records are plain dicts keyed by the vendor's own (camelCase) field names, with ids as
str, money as Decimal (the vendor may send "22.00" or 22.0), dates as aware UTC datetimes.
Unknown fields are dropped. `validate(schema, raw, ...)` turns a failure into a MalformedRecord
naming the record id and the first bad field (all of them in `.errors`).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate as v

from common.vendor_client import MalformedRecord

SUBSCRIPTION_STATUSES = ("pending", "active", "hold", "terminated", "removed")
MAX_PAGE_SIZE = 100


class Money(fields.Field):
    """A JSON string ("22.00") or number (22.0) -> Decimal; no bools, NaN or infinities."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValidationError("Not a valid amount.")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValidationError("Not a valid amount.") from exc
        if not amount.is_finite():
            raise ValidationError("Not a valid amount.")
        return amount


class Id(fields.Field):
    """A non-empty string id; an integer id is accepted as its decimal text."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
            raise ValidationError("Not a valid id.")
        return str(value)


def _when(**kw):
    return fields.AwareDateTime(default_timezone=dt.timezone.utc, **kw)


def _text(**kw):
    return fields.String(validate=v.Length(min=1), **kw)


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class CustomerSchema(_Base):
    id = Id(required=True)
    name = _text(required=True)
    externalId = fields.String(allow_none=True, load_default=None)
    status = fields.String(allow_none=True, load_default=None)
    domain = fields.String(allow_none=True, load_default=None)  # the simulator's extra field


class PriceSchema(_Base):
    currency = _text(required=True)
    amount = Money(required=True)


class PeriodSchema(_Base):
    type = _text(required=True)
    duration = fields.Integer(strict=True, required=True, validate=v.Range(min=0))


class ProductSchema(_Base):
    id = Id(required=True)
    mpn = _text(required=True)
    name = _text(required=True)
    vendor = fields.String(allow_none=True, load_default=None)
    serviceName = fields.String(allow_none=True, load_default=None)
    minimumQuantity = fields.Integer(strict=True, allow_none=True, load_default=None)
    maximumQuantity = fields.Integer(strict=True, allow_none=True, load_default=None)
    unitPrice = Money(allow_none=True, load_default=None)
    unitCost = Money(allow_none=True, load_default=None)
    prices = fields.List(fields.Nested(PriceSchema), load_default=list)
    costs = fields.List(fields.Nested(PriceSchema), load_default=list)
    billingPeriod = fields.Nested(PeriodSchema, allow_none=True, load_default=None)
    subscriptionPeriod = fields.Nested(PeriodSchema, allow_none=True, load_default=None)
    billingModel = fields.String(allow_none=True, load_default=None)


class SubscriptionSummarySchema(_Base):
    id = Id(required=True)
    customerId = Id(required=True)
    status = fields.String(required=True, validate=v.OneOf(SUBSCRIPTION_STATUSES))
    renewalStatus = fields.String(allow_none=True, load_default=None)
    creationDate = _when(required=True)
    renewalDate = _when(allow_none=True, load_default=None)
    lastModifiedDate = _when(required=True)


class ProductLineSchema(_Base):
    mpn = _text(required=True)
    name = fields.String(allow_none=True, load_default=None)
    quantity = fields.Integer(strict=True, required=True, validate=v.Range(min=0))
    unitPrice = Money(required=True)
    extendedPrice = Money(allow_none=True, load_default=None)


class SubscriptionDetailSchema(SubscriptionSummarySchema):
    totalPrice = Money(allow_none=True, load_default=None)
    products = fields.List(fields.Nested(ProductLineSchema), required=True)


def _flatten(messages, prefix="") -> dict[str, str]:
    """{"products": {0: {"quantity": ["Not a valid integer."]}}} -> {"products[0].quantity": "..."}"""
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "(record)": " ".join(messages)}
    if isinstance(messages, dict):
        out = {}
        for key, sub in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "(record)"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(sub, path))
        return out
    return {prefix or "(record)": str(messages)}


def record_id_of(raw, key: str = "id"):
    """The id a raw record claims, for error reports (None when it has no usable one)."""
    value = raw.get(key) if isinstance(raw, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def validate(schema: Schema, raw, *, record_id=None, vendor="ingram", endpoint="") -> dict:
    """schema.load(raw) or MalformedRecord(record_id or the record's own id, first bad field)."""
    rid = record_id if record_id is not None else record_id_of(raw)
    if not isinstance(raw, dict):
        raise MalformedRecord(rid, "(record)", f"expected an object, got {type(raw).__name__}",
                              vendor=vendor, endpoint=endpoint)
    try:
        return schema.load(raw)
    except ValidationError as exc:
        errors = _flatten(exc.messages)
        field, problem = next(iter(errors.items()))
        raise MalformedRecord(rid, field, problem, vendor=vendor, endpoint=endpoint, errors=errors) from None


CUSTOMER = CustomerSchema()
PRODUCT = ProductSchema()
SUBSCRIPTION_SUMMARY = SubscriptionSummarySchema()
SUBSCRIPTION_DETAIL = SubscriptionDetailSchema()
