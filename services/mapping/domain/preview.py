"""Preview: "what will this create on my invoice?" - every pending operation, nothing written."""
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from .changes import plan_operations
from .dates import NEW_LINE, PRICE_CHANGE
from .money import round_money
from .posting import posting_decision


@dataclass(frozen=True)
class PreviewRow:
    """One operation as the tenant sees it.

    ``unit_price``: the unit price the line bills at once this operation is in force.
    ``amount``: what this operation changes on one full billing period of the invoice
    (new line: quantity x price; increase/decrease/cancel: delta units x the price in force;
    price change: quantity x (new - old price)); negative for credits. Proration by the PSA
    is not estimated. ``period_amount``: the line's full-period amount afterwards
    (quantity after x unit price).
    """

    contract_id: str
    service_id: str
    kind: str
    quantity_before: int
    quantity_after: int
    delta_units: int
    unit_price: Decimal | None
    amount: Decimal | None
    period_amount: Decimal | None
    effective_date: dt.date
    needs_approval: bool | None = None
    reasons: tuple = ()


def _times(quantity, price):
    return None if price is None else round_money(Decimal(quantity) * price)


def operation_amounts(op):
    """(unit_price, amount, period_amount) of one operation (see PreviewRow)."""
    if op.kind == PRICE_CHANGE:
        price = op.unit_price_after
        if price is None or op.unit_price_before is None:
            amount = round_money(0)
        else:
            amount = round_money(Decimal(op.quantity_after) * (price - op.unit_price_before))
    elif op.kind == NEW_LINE:
        price = op.unit_price_after
        amount = _times(op.quantity_after, price)
    else:
        price = op.unit_price_before if op.unit_price_before is not None else op.unit_price_after
        amount = _times(op.delta_units, price)
    return price, amount, _times(op.quantity_after, price)


def preview_rows(changes, *, mode=None, threshold_units=None, threshold_percent=None):
    """PreviewRows for PlannedChanges (split with plan_operations), ordered by effective date,
    contract, service. With ``mode`` each row also says whether it waits for approval (the
    decision is made on the whole change and shared by its operations)."""
    rows = []
    for change in changes:
        decision = None
        if mode is not None:
            decision = posting_decision(change, mode=mode, threshold_units=threshold_units,
                                        threshold_percent=threshold_percent)
        for op in plan_operations(change):
            price, amount, period_amount = operation_amounts(op)
            rows.append(PreviewRow(op.contract_id, op.service_id, op.kind, op.quantity_before,
                                   op.quantity_after, op.delta_units, price, amount, period_amount,
                                   op.effective_date,
                                   None if decision is None else decision.needs_approval,
                                   () if decision is None else tuple(decision.reasons)))
    rows.sort(key=lambda r: (r.effective_date, str(r.contract_id), str(r.service_id), r.kind))
    return rows
