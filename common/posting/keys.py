"""Deterministic idempotency keys: the same planned operation always gets the same key.

The key names the operation's intent - which line, what kind, from which date, from what to what,
on which desired version, in which overwrite round - so a replica that recomputes a plan after a
crash finds the ledger row it (or another replica) already made instead of adding a second one.
"""
import datetime as dt
import decimal
import hashlib


def _part(value):
    if value is None:
        return "-"
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def idempotency_key(*parts):
    """sha256 of the parts (None, Decimal and dates in one canonical spelling), 40 hex chars."""
    text = "|".join(_part(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def operation_key(psa, tenant_id, contract_id, service_id, op, *, desired_version, edit_round=0):
    """The key of one PlannedOp (common.posting.engine) of one contract line. ``op.params["key"]``
    (optional) tells apart ops that are otherwise alike - e.g. ConnectWise cancelling two different
    additions of one line on one day; without it the key is what it always was."""
    extra = op.params.get("key") if op.params else None
    return idempotency_key(psa, tenant_id, contract_id, service_id, op.kind, op.effective_date,
                           op.quantity_before, op.quantity_after, op.unit_change, op.unit_price,
                           f"v{desired_version}", f"r{edit_round}", *([f"k{extra}"] if extra else []))
