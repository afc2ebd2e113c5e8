"""JSON shapes the marketplace sends: customers, products, subscription summary/detail.

Money is a 2-decimal string ("22.00") by default, or a JSON number when the config
says money_as="number" - the real format is not documented, so clients should accept both.
Corruption hooks (tests' "invalid record") are applied here, on output only.
"""
from __future__ import annotations

from decimal import Decimal

from .state import LINE_FIELDS, SUMMARY_FIELDS


def money_formatter(money_as: str):
    if money_as == "number":
        return lambda d: float(d)
    return lambda d: str(d)


def customer_out(cust: dict) -> dict:
    """The vendor's view: the account is the simulator's bookkeeping, not a vendor field."""
    return {k: v for k, v in cust.items() if k != "account"}


def admin_customer(cust: dict) -> dict:
    return dict(cust)


def product_out(p: dict, money) -> dict:
    out = dict(p)
    out["unitPrice"], out["unitCost"] = money(p["unitPrice"]), money(p["unitCost"])
    out["prices"] = [{"currency": a["currency"], "amount": money(a["amount"])} for a in p["prices"]]
    out["costs"] = [{"currency": a["currency"], "amount": money(a["amount"])} for a in p["costs"]]
    out["billingPeriod"] = dict(p["billingPeriod"])
    out["subscriptionPeriod"] = dict(p["subscriptionPeriod"])
    return out


def _corrupt_top(out: dict, corrupt: dict, detail: bool) -> dict:
    # Line fields are corrupted inside products[] (detail only); anything else at the top.
    for field, value in corrupt["set"].items():
        if field not in LINE_FIELDS and (detail or field != "totalPrice"):
            out[field] = value
    for field in corrupt["drop"]:
        if field not in LINE_FIELDS:
            out.pop(field, None)
    return out


def summary_out(sub: dict) -> dict:
    out = {f: sub[f] for f in SUMMARY_FIELDS}
    return _corrupt_top(out, sub["corrupt"], detail=False)


def detail_out(sub: dict, money) -> dict:
    out = {f: sub[f] for f in SUMMARY_FIELDS}
    total = Decimal("0.00")
    lines = []
    for line in sub["lines"]:
        extended = line["unitPrice"] * line["quantity"]
        total += extended
        item = {"mpn": line["mpn"], "name": line["name"], "quantity": line["quantity"],
                "unitPrice": money(line["unitPrice"]), "extendedPrice": money(extended)}
        for field, value in sub["corrupt"]["set"].items():
            if field in LINE_FIELDS:
                item[field] = value
        for field in sub["corrupt"]["drop"]:
            if field in LINE_FIELDS:
                item.pop(field, None)
        lines.append(item)
    out["totalPrice"] = money(total)
    out["products"] = lines
    return _corrupt_top(out, sub["corrupt"], detail=True)


def admin_subscription(sub: dict, money) -> dict:
    """Internal view for /_sim/state: the uncorrupted record plus its corruption rules."""
    out = detail_out({**sub, "corrupt": {"set": {}, "drop": []}}, money)
    out["corrupt"] = sub["corrupt"]
    return out
