"""The event catalog: every event any service publishes, one marshmallow schema each.

Every payload carries event_id, tenant_id, occurred_at and schema_version. Producers build
payloads with `make_event`, which validates; consumers read them with `load_event`, which
validates again so a malformed message fails loudly (and lands in the dead-letter queue)
instead of half-applying.
"""
import datetime as dt
import uuid

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

SUBSCRIPTION_STATUSES = ("pending", "active", "hold", "terminated", "removed")
MAPPING_STATUSES = ("mapped", "suggested", "unmapped", "ignored", "conflict")


class EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # a newer producer may add fields; old consumers ignore them

    event_id = fields.String(required=True)
    tenant_id = fields.String(required=True, validate=validate.Length(min=1))
    occurred_at = fields.String(required=True)
    schema_version = fields.Integer(required=True)

    VERSION = 1


class Money(fields.Decimal):
    """Decimals travel as strings: floats would lose cents."""

    def __init__(self, **kw):
        super().__init__(as_string=True, allow_nan=False, **kw)


# --- marketplace -------------------------------------------------------------------------------
class SubscriptionLineChanged(EventSchema):
    subscription_id = fields.String(required=True)
    mpn = fields.String(required=True)
    customer_id = fields.String(required=True)
    change = fields.String(required=True, validate=validate.OneOf(
        ["new", "quantity", "status", "renewal", "price", "resync"]))
    status = fields.String(required=True, validate=validate.OneOf(SUBSCRIPTION_STATUSES))
    quantity = fields.Integer(required=True, validate=validate.Range(min=0))
    previous_quantity = fields.Integer(allow_none=True, load_default=None)
    unit_price = Money(allow_none=True, load_default=None)
    unit_cost = Money(allow_none=True, load_default=None)
    currency = fields.String(load_default="USD")
    seen_at = fields.String(required=True)  # when our sync saw the change: the increase's effective day
    line_version = fields.Integer(required=True)  # grows per line: consumers drop stale versions


class CustomerChanged(EventSchema):
    customer_id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(load_default="active")
    domain = fields.String(allow_none=True, load_default=None)


class ProductChanged(EventSchema):
    mpn = fields.String(required=True)
    name = fields.String(required=True)
    vendor = fields.String(allow_none=True, load_default=None)
    unit_price = Money(allow_none=True, load_default=None)
    unit_cost = Money(allow_none=True, load_default=None)
    currency = fields.String(load_default="USD")
    billing_period = fields.String(allow_none=True, load_default=None)


# --- mapping ----------------------------------------------------------------------------------
class LineDesired(EventSchema):
    """What one PSA contract line should say. Full state, not a delta: replays converge."""

    contract_id = fields.String(required=True)
    service_id = fields.String(required=True)
    company_id = fields.String(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=0))
    unit_price = Money(required=True)
    unit_cost = Money(required=True)
    effective_date = fields.Date(required=True)
    desired_version = fields.Integer(required=True)
    lines = fields.List(fields.Dict(), load_default=list)  # the subscription lines behind it
    approved_by = fields.String(allow_none=True, load_default=None)


class MappingChanged(EventSchema):
    kind = fields.String(required=True, validate=validate.OneOf(["customer", "product", "contract"]))
    key = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MAPPING_STATUSES))
    psa_id = fields.String(allow_none=True, load_default=None)


# --- autotask / connectwise -------------------------------------------------------------------
class LinePosted(EventSchema):
    psa = fields.String(required=True, validate=validate.OneOf(["autotask", "connectwise"]))
    contract_id = fields.String(required=True)
    service_id = fields.String(required=True)
    operation = fields.String(required=True)
    quantity_before = fields.Integer(allow_none=True, load_default=None)
    quantity_after = fields.Integer(required=True)
    unit_price = Money(allow_none=True, load_default=None)
    effective_date = fields.Date(required=True)
    idempotency_key = fields.String(required=True)
    vendor_item_id = fields.String(allow_none=True, load_default=None)


class PostingFailed(EventSchema):
    psa = fields.String(required=True, validate=validate.OneOf(["autotask", "connectwise"]))
    contract_id = fields.String(required=True)
    service_id = fields.String(required=True)
    operation = fields.String(required=True)
    idempotency_key = fields.String(required=True)
    vendor_message = fields.String(required=True)
    attempts = fields.Integer(required=True)
    dead = fields.Boolean(required=True)


class PsaReferenceChanged(EventSchema):
    psa = fields.String(required=True, validate=validate.OneOf(["autotask", "connectwise"]))
    kind = fields.String(required=True, validate=validate.OneOf(["company", "contract", "service"]))
    psa_id = fields.String(required=True)
    name = fields.String(required=True)
    active = fields.Boolean(required=True)


# --- migration --------------------------------------------------------------------------------
class MappingsImported(EventSchema):
    job_id = fields.String(required=True)
    customers = fields.Integer(required=True)
    products = fields.Integer(required=True)
    subscription_lines = fields.Integer(required=True)


# (source service, event type) -> schema. The source names the exchange "<source>.events".
CATALOG = {
    ("marketplace", "subscription_line_changed"): SubscriptionLineChanged,
    ("marketplace", "customer_changed"): CustomerChanged,
    ("marketplace", "product_changed"): ProductChanged,
    ("mapping", "autotask_line_desired"): LineDesired,
    ("mapping", "connectwise_line_desired"): LineDesired,
    ("mapping", "mapping_changed"): MappingChanged,
    ("autotask", "line_posted"): LinePosted,
    ("autotask", "posting_failed"): PostingFailed,
    ("autotask", "psa_reference_changed"): PsaReferenceChanged,
    ("connectwise", "line_posted"): LinePosted,
    ("connectwise", "posting_failed"): PostingFailed,
    ("connectwise", "psa_reference_changed"): PsaReferenceChanged,
    ("migration", "mappings_imported"): MappingsImported,
}


class UnknownEvent(ValueError):
    pass


def schema_for(source, event_type):
    try:
        return CATALOG[(source, event_type)]()
    except KeyError:
        raise UnknownEvent(f"{source}.{event_type} is not in the event catalog") from None


def now_iso():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def make_event(source, event_type, tenant_id, **payload):
    """A validated, JSON-ready payload with the four envelope fields filled in."""
    schema = schema_for(source, event_type)
    body = {
        "event_id": payload.pop("event_id", None) or str(uuid.uuid4()),
        "tenant_id": str(tenant_id),
        "occurred_at": payload.pop("occurred_at", None) or now_iso(),
        "schema_version": type(schema).VERSION,
        **payload,
    }
    return schema.dump(schema.load(schema.dump(body)))


def load_event(source, event_type, payload):
    """Validate an incoming payload; raises marshmallow.ValidationError when malformed."""
    return schema_for(source, event_type).load(payload)


__all__ = ["CATALOG", "make_event", "load_event", "schema_for", "ValidationError", "UnknownEvent"]
