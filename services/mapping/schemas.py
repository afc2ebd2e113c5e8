"""Input the mapping service validates itself (the gateway validates too; RPC callers may not)."""
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from common.errors import BadRequest
from services.mapping.domain import POSTING_MODES
from services.mapping.domain.posting import EDITED_IN_PSA


class SettingsUpdate(Schema):
    """A partial update of billing_settings: only the fields given change."""

    class Meta:
        unknown = RAISE

    posting_mode = fields.String(validate=validate.OneOf(POSTING_MODES))
    threshold_units = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0))
    threshold_percent = fields.Decimal(allow_none=True, places=4, validate=validate.Range(min=0),
                                       allow_nan=False)
    bill_suspended = fields.Boolean()
    credit_decreases_immediately = fields.Boolean()
    edited_in_psa = fields.String(validate=validate.OneOf(EDITED_IN_PSA))


def load_settings_update(changes):
    if not isinstance(changes, dict):
        raise BadRequest("changes must be an object of settings")
    if not changes:
        raise BadRequest("no settings given")
    try:
        return SettingsUpdate().load(changes)
    except ValidationError as exc:
        detail = "; ".join(f"{field}: {' '.join(map(str, msgs if isinstance(msgs, list) else [msgs]))}"
                           for field, msgs in sorted(exc.messages.items()))
        raise BadRequest(f"invalid settings: {detail}") from None
