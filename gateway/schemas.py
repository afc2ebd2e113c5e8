"""Request and response bodies of the JSON API (also the source of the OpenAPI document)."""
from marshmallow import RAISE, Schema, fields, validate

from gateway.auth import ROLES
from common.vault import CREDENTIAL_FIELDS


class Strict(Schema):
    class Meta:
        unknown = RAISE  # a typo in a field name is an error, not silently ignored


class Login(Strict):
    email = fields.Email(required=True)
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class UserIn(Strict):
    email = fields.Email(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = fields.String(required=True, validate=validate.Length(min=12, max=1024))


class UserOut(Schema):
    id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    active = fields.Boolean()
    created_at = fields.DateTime()


class TokenIn(Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class TokenOut(Schema):
    id = fields.String()
    name = fields.String()
    role = fields.String()
    token = fields.String(metadata={"description": "shown once; only its hash is stored"})


class TenantOut(Schema):
    id = fields.String()
    name = fields.String()
    psa = fields.String()
    settings = fields.Dict()


def credential_schema(kind):
    """Each credential kind's required fields; the secret ones are write-only."""
    spec = CREDENTIAL_FIELDS[kind]
    optional = {"base_url", "zone_url", "site", "region"}
    attrs = {f: fields.String(required=f not in optional, validate=validate.Length(min=1, max=500))
             for f in spec["fields"]}
    return Schema.from_dict(attrs, name=f"{kind.title()}Credentials")(unknown=RAISE)


class CredentialSummary(Schema):
    kind = fields.String()
    summary = fields.Dict(metadata={"description": "non-secret fields; secrets masked to their last 4 characters"})
    updated_at = fields.DateTime()


class Error(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw()


class SyncRequest(Strict):
    full = fields.Boolean(load_default=False)


PRICE_RULES = ("psa_catalog", "msrp", "cost_plus", "fixed")
MAPPING_KINDS = ("customer", "product", "line")


class MapCustomer(Strict):
    psa_company_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class MapProduct(Strict):
    psa_service_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    price_rule = fields.String(required=True, validate=validate.OneOf(PRICE_RULES))
    markup_pct = fields.Decimal(as_string=True, allow_none=True, load_default=None)
    fixed_price = fields.Decimal(as_string=True, allow_none=True, load_default=None, validate=validate.Range(min=0))


class LinkLine(Strict):
    psa_contract_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class SetStatus(Strict):
    status = fields.String(required=True, validate=validate.OneOf(["ignored", "unmapped"]))


class Bulk(Strict):
    action = fields.String(required=True, validate=validate.OneOf(["accept", "ignore"]))
    search = fields.String(allow_none=True, load_default=None)
    status = fields.String(allow_none=True, load_default=None)


class PriceOverride(Strict):
    price_rule = fields.String(required=True, validate=validate.OneOf(PRICE_RULES))
    markup_pct = fields.Decimal(as_string=True, allow_none=True, load_default=None)
    fixed_price = fields.Decimal(as_string=True, allow_none=True, load_default=None, validate=validate.Range(min=0))


class Decision(Strict):
    approval_ids = fields.List(fields.String(), required=True, validate=validate.Length(min=1, max=1000))
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    note = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=2000))
    effective_date = fields.Date(allow_none=True, load_default=None)


class BillingSettings(Strict):
    posting_mode = fields.String(validate=validate.OneOf(["auto", "review", "threshold"]))
    threshold_units = fields.Integer(allow_none=True, validate=validate.Range(min=0))
    threshold_percent = fields.Decimal(as_string=True, allow_none=True, validate=validate.Range(min=0))
    bill_suspended = fields.Boolean()
    credit_decreases_immediately = fields.Boolean()
    edited_in_psa = fields.String(validate=validate.OneOf(["overwrite", "hold"]))


class Retry(Strict):
    posting_ids = fields.List(fields.String(), required=True, validate=validate.Length(min=1, max=1000))
