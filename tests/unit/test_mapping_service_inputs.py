"""What the mapping service checks and converts itself: settings, price rules, PSA reference
records, money and keys."""
import datetime as dt
from decimal import Decimal as D

import pytest

from common.errors import BadRequest
from services.mapping import actions, approvals, references, schemas, store
from services.mapping.domain import PsaService


@pytest.mark.parametrize("changes, field", [
    ({"posting_mode": "sometimes"}, "posting_mode"),
    ({"threshold_units": -1}, "threshold_units"),
    ({"threshold_units": "5"}, "threshold_units"),
    ({"threshold_percent": "-3"}, "threshold_percent"),
    ({"edited_in_psa": "ignore"}, "edited_in_psa"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_settings_are_a_bad_request_naming_the_field(changes, field):
    with pytest.raises(BadRequest, match=field):
        schemas.load_settings_update(changes)


def test_settings_update_loads_typed_values():
    loaded = schemas.load_settings_update({"posting_mode": "threshold", "threshold_units": 5,
                                           "threshold_percent": "20", "bill_suspended": True})
    assert loaded == {"posting_mode": "threshold", "threshold_units": 5, "threshold_percent": D("20"),
                      "bill_suspended": True}
    with pytest.raises(BadRequest):
        schemas.load_settings_update({})


@pytest.mark.parametrize("args, message", [
    (("cheapest",), "price_rule must be one of"),
    (("cost_plus",), "needs markup_pct"),
    (("cost_plus", "-150"), "-100 or more"),
    (("fixed",), "needs fixed_price"),
    (("fixed", None, "-1"), "negative"),
    (("fixed", None, "abc"), "not a number"),
])
def test_price_rules_are_checked(args, message):
    with pytest.raises(BadRequest, match=message):
        actions.price_rule(*args)


def test_psa_catalog_needs_a_catalog_price():
    with pytest.raises(BadRequest, match="no catalog price"):
        actions.price_rule("psa_catalog", service=PsaService("301", "E3", unit_price=None))
    assert actions.price_rule("psa_catalog", service=PsaService("301", "E3", unit_price=D("40"))).rule == "psa_catalog"
    assert actions.price_rule("cost_plus", "15").markup_pct == D("15")


@pytest.mark.parametrize("cycle, months", [("monthly", 1), ("m", 1), (None, 1), ("Quarterly", 3), ("Annual", 12),
                                           ("yearly", 12), ("Semi-Annual", 6)])
def test_billing_cycles_become_period_months(cycle, months):
    assert references.period_months(cycle) == months


def test_reference_rows_from_browse_references():
    now = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    contract = references.reference_row("t", "autotask", "contract", {
        "psa_id": 201, "name": "Seats", "company_id": 101, "active": True, "start_date": "2026-01-15",
        "billing_cycle": "monthly"}, now)
    assert (contract["psa_id"], contract["company_id"], contract["start_date"], contract["period_months"]) == (
        "201", "101", dt.date(2026, 1, 15), 1)
    company = references.reference_row("t", "autotask", "company", {
        "psa_id": "101", "name": "Contoso", "active": False, "web_address": "www.contoso.com"}, now)
    assert company["domains"] == ["www.contoso.com"] and company["active"] is False
    service = references.reference_row("t", "connectwise", "service", {
        "psa_id": "9", "name": "E3", "active": True, "unit_price": "36.00", "identifier": "M365-E3"}, now)
    assert service["unit_price"] == D("36.00") and service["identifier"] == "M365-E3"


def test_money_is_shown_as_written_and_keys_are_parsed():
    assert store.money_out(D("20.0000")) == "20.00"
    assert store.money_out(D("10.0050")) == "10.005"
    assert store.json_safe({"a": [D("1.5000"), dt.date(2026, 1, 2)]}) == {"a": ["1.50", "2026-01-02"]}
    assert store.split_line_key("5000001/CFQ7TTC0LCHC:0001:P1Y:M") == ("5000001", "CFQ7TTC0LCHC:0001:P1Y:M")
    with pytest.raises(BadRequest):
        store.split_line_key("no-slash")


def test_approval_dates():
    assert approvals.parse_date("2026-11-24") == dt.date(2026, 11, 24)
    assert approvals.parse_date(None) is None
    with pytest.raises(BadRequest, match="ISO date"):
        approvals.parse_date("24/11/2026")
