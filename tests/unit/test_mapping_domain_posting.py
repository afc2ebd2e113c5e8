import datetime as dt
from decimal import Decimal as D

import pytest

from services.mapping.domain import (BillingSettings, LineState, MappingDomainError, classify_change,
                                     posting_decision, preview_rows)

SEEN = dt.date(2026, 3, 10)
START = dt.date(2026, 1, 15)


def change(before, after, price_before="12.35", price_after="12.35", cost_before="10.00", cost_after="10.00"):
    prev = None if before is None else LineState(before, D(price_before), D(cost_before))
    return classify_change(prev, LineState(after, D(price_after), D(cost_after)), seen_on=SEEN,
                           contract_start=START, contract_id="ct-1", service_id="svc-1")


def threshold(c, units=None, pct=None):
    return posting_decision(c, mode="threshold", threshold_units=units, threshold_percent=pct)


# --- modes ---------------------------------------------------------------------------------------
def test_auto_never_needs_approval():
    assert posting_decision(change(5, 500), mode="auto") == (False, [])


def test_review_always_needs_approval():
    needs, reasons = posting_decision(change(5, 6), mode="review")
    assert needs and "review" in reasons[0]


def test_no_change_never_needs_approval():
    assert posting_decision(change(5, 5), mode="review") == (False, [])


def test_decision_unpacks_as_a_pair():
    needs, reasons = posting_decision(change(5, 6), mode="auto")
    assert needs is False and reasons == []


def test_unknown_mode():
    with pytest.raises(MappingDomainError):
        posting_decision(change(5, 6), mode="sometimes")


# --- threshold: units ------------------------------------------------------------------------------
def test_units_at_the_threshold_post_automatically():
    assert threshold(change(10, 15), units=5) == (False, [])


def test_units_above_the_threshold_need_approval():
    needs, reasons = threshold(change(10, 16), units=5)
    assert needs and reasons == ["change of 6 units exceeds the threshold of 5 units"]


def test_units_threshold_applies_to_decreases():
    assert threshold(change(20, 14), units=5).needs_approval


def test_zero_units_threshold_catches_every_change():
    assert threshold(change(10, 11), units=0).needs_approval


# --- threshold: percent -------------------------------------------------------------------------------
def test_percent_at_the_threshold_posts_automatically():
    assert threshold(change(10, 12), pct=D("20")) == (False, [])


def test_percent_above_the_threshold_needs_approval():
    needs, reasons = threshold(change(10, 13), pct=D("20"))
    assert needs and reasons == ["change of 30% exceeds the threshold of 20%"]


def test_percent_just_above_with_fractional_threshold():
    assert threshold(change(3, 4), pct=D("33.3")).needs_approval       # 33.33 % > 33.3 %
    assert not threshold(change(3, 4), pct=D("33.34")).needs_approval


def test_percent_reason_is_rounded():
    assert threshold(change(3, 4), pct=D("10")).reasons == ["change of 33.3% exceeds the threshold of 10%"]


def test_cancel_is_a_100_percent_change():
    assert threshold(change(10, 0), pct=D("50")).needs_approval
    assert not threshold(change(10, 0), pct=D("100")).needs_approval


def test_both_thresholds_report_both_reasons():
    assert len(threshold(change(10, 30), units=5, pct=D("50")).reasons) == 2


def test_no_thresholds_set_only_price_moves_need_approval():
    assert threshold(change(10, 100)) == (False, [])


# --- threshold: new lines and prices ---------------------------------------------------------------------
def test_new_line_uses_only_the_units_test():
    assert threshold(change(None, 3), units=5, pct=D("10")) == (False, [])
    assert threshold(change(None, 6), units=5, pct=D("10")).needs_approval


def test_increase_from_zero_skips_the_percent_test():
    assert threshold(change(0, 3), pct=D("10")) == (False, [])


def test_price_move_needs_approval():
    needs, reasons = threshold(change(5, 5, price_after="13.00"), units=100, pct=D("100"))
    assert needs and reasons == ["unit price moves from 12.35 to 13.00"]


def test_price_move_with_a_small_increase_needs_approval():
    assert threshold(change(5, 6, price_after="13.00"), units=100).needs_approval


def test_cost_only_move_posts_automatically():
    c = change(5, 5, cost_after="9.00")
    assert c.kind == "price_change" and threshold(c, units=0) == (False, [])


# --- settings ---------------------------------------------------------------------------------------------
def test_settings_decide():
    settings = BillingSettings(posting_mode="threshold", threshold_units=5, threshold_percent="20")
    assert settings.threshold_percent == D("20")
    assert settings.decide(change(10, 13)).needs_approval
    assert not settings.decide(change(10, 12)).needs_approval


def test_settings_defaults():
    s = BillingSettings()
    assert (s.posting_mode, s.bill_suspended, s.credit_decreases_immediately, s.edited_in_psa) == ("auto", False, False, "hold")


@pytest.mark.parametrize("kw", [{"posting_mode": "x"}, {"edited_in_psa": "x"}, {"threshold_units": -1},
                                {"threshold_percent": "-5"}])
def test_bad_settings(kw):
    with pytest.raises(MappingDomainError):
        BillingSettings(**kw)


# --- preview --------------------------------------------------------------------------------------------------
def row_tuple(r):
    return (r.kind, r.quantity_before, r.quantity_after, r.delta_units, r.unit_price, r.amount, r.period_amount, r.effective_date)


def test_preview_of_a_new_line():
    (row,) = preview_rows([change(None, 4)])
    assert row_tuple(row) == ("new_line", 0, 4, 4, D("12.35"), D("49.40"), D("49.40"), SEEN)
    assert row.needs_approval is None


def test_preview_of_an_increase_is_delta_times_price():
    (row,) = preview_rows([change(5, 8)])
    assert row_tuple(row) == ("increase", 5, 8, 3, D("12.35"), D("37.05"), D("98.80"), SEEN)


def test_preview_of_a_decrease_is_a_negative_amount():
    (row,) = preview_rows([change(8, 5)])
    assert row_tuple(row) == ("decrease", 8, 5, -3, D("12.35"), D("-37.05"), D("61.75"), dt.date(2026, 3, 15))


def test_preview_of_a_cancel():
    (row,) = preview_rows([change(8, 0)])
    assert row_tuple(row) == ("cancel", 8, 0, -8, D("12.35"), D("-98.80"), D("0.00"), dt.date(2026, 3, 15))


def test_preview_of_a_price_change():
    (row,) = preview_rows([change(5, 5, price_after="13.00")])
    assert row_tuple(row) == ("price_change", 5, 5, 0, D("13.00"), D("3.25"), D("65.00"), dt.date(2026, 3, 15))


def test_preview_of_a_cost_only_change_has_zero_amount():
    (row,) = preview_rows([change(5, 5, cost_after="9.00")])
    assert row.kind == "price_change" and row.amount == D("0.00")


def test_preview_splits_a_quantity_and_price_move():
    rows = preview_rows([change(5, 8, price_after="13.00")])
    assert [row_tuple(r) for r in rows] == [
        ("increase", 5, 8, 3, D("12.35"), D("37.05"), D("98.80"), SEEN),
        ("price_change", 8, 8, 0, D("13.00"), D("5.20"), D("104.00"), dt.date(2026, 3, 15))]


def test_preview_skips_no_change_and_sorts_by_date():
    rows = preview_rows([change(8, 5), change(5, 5), change(5, 9)])
    assert [r.kind for r in rows] == ["increase", "decrease"]


def test_preview_with_a_posting_mode_shows_approvals():
    rows = preview_rows([change(10, 11), change(10, 20)], mode="threshold", threshold_units=5)
    assert [(r.quantity_after, r.needs_approval) for r in rows] == [(11, False), (20, True)]
    assert rows[1].reasons == ("change of 10 units exceeds the threshold of 5 units",)


def test_preview_amount_is_rounded_half_up_once():
    c = classify_change(LineState(3, D("1.005")), LineState(4, D("1.005")), seen_on=SEEN, contract_start=START)
    (row,) = preview_rows([c])
    assert row.amount == D("1.01") and row.period_amount == D("4.02")
