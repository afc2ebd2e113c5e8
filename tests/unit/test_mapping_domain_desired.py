import datetime as dt
from decimal import Decimal as D

import pytest

from services.mapping.domain import (BillingLine, DesiredLine, GroupConflict, LineMapping, MappingDomainError,
                                     PriceRule, SubscriptionLine, blocking_reasons, counted_quantity,
                                     desired_state, is_billable, seen_day, weighted_unit_cost)

DAY = dt.date(2026, 3, 10)
MAPPED = LineMapping("mapped", "mapped", "mapped", company_id="co-1", service_id="svc-1", contract_id="ct-1")


def line(sub="S1", mpn="MPN-1", qty=5, status="active", price="12.35", cost="10.00", customer="cust-1", **kw):
    return SubscriptionLine(sub, mpn, customer, qty, status, None if price is None else D(price),
                            None if cost is None else D(cost), kw.pop("seen_at", DAY), **kw)


def billing(sub_line=None, mapping=MAPPED, rule=PriceRule("msrp"), catalog=None, **kw):
    return BillingLine(sub_line or line(**kw), mapping, rule, catalog)


# --- lines -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("status, expected", [("active", 7), ("pending", 7), ("hold", 0),
                                              ("terminated", 0), ("removed", 0)])
def test_counted_quantity_by_status(status, expected):
    assert counted_quantity(line(qty=7, status=status)) == expected


@pytest.mark.parametrize("status, expected", [("active", 7), ("pending", 7), ("hold", 7),
                                              ("terminated", 0), ("removed", 0)])
def test_bill_suspended_keeps_hold_lines(status, expected):
    assert counted_quantity(line(qty=7, status=status), bill_suspended=True) == expected


def test_zero_quantity_counts_zero():
    assert counted_quantity(line(qty=0)) == 0


def test_line_rejects_unknown_status_and_bad_quantity():
    with pytest.raises(MappingDomainError):
        line(status="paused")
    with pytest.raises(MappingDomainError):
        line(qty=-1)
    with pytest.raises(MappingDomainError):
        line(qty=1.5)


def test_line_prices_become_decimals():
    sub = SubscriptionLine("S1", "M", "C", 1, "active", "12.35", 10, DAY)
    assert sub.unit_price == D("12.35") and sub.unit_cost == D("10")


def test_all_three_mapped_is_billable():
    assert is_billable(MAPPED) and blocking_reasons(MAPPED) == []


@pytest.mark.parametrize("field, status", [("customer_status", "unmapped"), ("product_status", "suggested"),
                                           ("link_status", "ignored"), ("customer_status", "conflict")])
def test_any_item_not_mapped_blocks_billing(field, status):
    mapping = LineMapping(**{**MAPPED.__dict__, field: status})
    assert not is_billable(mapping)
    assert any(status in reason for reason in blocking_reasons(mapping))


def test_all_reasons_are_listed():
    mapping = LineMapping("unmapped", "unmapped", "suggested")
    assert blocking_reasons(mapping) == ["customer is unmapped", "product is unmapped", "contract link is suggested"]


def test_mapped_without_psa_id_is_not_billable():
    assert blocking_reasons(LineMapping("mapped", "mapped", "mapped", "co-1", "svc-1", None)) == \
        ["contract link is mapped without a PSA id"]


def test_unknown_mapping_status_rejected():
    with pytest.raises(MappingDomainError):
        LineMapping("green", "mapped", "mapped")


@pytest.mark.parametrize("value, day", [
    (dt.date(2026, 3, 10), dt.date(2026, 3, 10)),
    (dt.datetime(2026, 3, 10, 23, 59), dt.date(2026, 3, 10)),
    ("2026-03-10T23:30:00+00:00", dt.date(2026, 3, 10)),
    ("2026-03-10T23:30:00Z", dt.date(2026, 3, 10)),
    ("2026-03-10T20:30:00-05:00", dt.date(2026, 3, 11)),   # 01:30 UTC next day
    ("2026-03-10", dt.date(2026, 3, 10)),
])
def test_seen_day_is_the_utc_day(value, day):
    assert seen_day(value) == day


def test_seen_day_rejects_garbage():
    with pytest.raises(MappingDomainError):
        seen_day("yesterday")
    with pytest.raises(MappingDomainError):
        seen_day(None)


# --- desired state -------------------------------------------------------------------------------
def test_single_line_group():
    state = desired_state([billing(qty=5)])
    desired = state.groups[("ct-1", "svc-1")]
    assert isinstance(desired, DesiredLine)
    assert (desired.quantity, desired.unit_price, desired.unit_cost, desired.company_id) == (5, D("12.35"), D("10.00"), "co-1")
    assert desired.key == ("ct-1", "svc-1") and desired.currency == "USD"
    assert not state.conflicts and not state.waiting


def test_quantities_of_billable_lines_add_up():
    state = desired_state([billing(sub="S1", qty=5), billing(sub="S2", qty=3), billing(sub="S3", qty=2, status="pending")])
    assert state.groups[("ct-1", "svc-1")].quantity == 10


def test_hold_and_terminated_lines_count_zero_but_stay_in_the_group():
    state = desired_state([billing(sub="S1", qty=5), billing(sub="S2", qty=3, status="hold"),
                           billing(sub="S3", qty=4, status="terminated")])
    desired = state.groups[("ct-1", "svc-1")]
    assert desired.quantity == 5
    assert [(r.subscription_id, r.counted_quantity) for r in desired.lines] == [("S1", 5), ("S2", 0), ("S3", 0)]


def test_hold_counts_with_bill_suspended():
    state = desired_state([billing(sub="S1", qty=5), billing(sub="S2", qty=3, status="hold")], bill_suspended=True)
    assert state.groups[("ct-1", "svc-1")].quantity == 8


def test_all_terminated_gives_a_zero_group_for_the_cancellation():
    desired = desired_state([billing(qty=5, status="terminated")]).groups[("ct-1", "svc-1")]
    assert desired.quantity == 0 and desired.unit_price == D("12.35")


def test_unmapped_lines_wait_with_reasons():
    waiting_map = LineMapping("mapped", "unmapped", "mapped", "co-1", None, "ct-1")
    state = desired_state([billing(sub="S1"), billing(sub="S2", mapping=waiting_map)])
    assert state.groups[("ct-1", "svc-1")].quantity == 5
    assert [(w.line.subscription_id, w.reasons) for w in state.waiting] == [("S2", ("product is unmapped",))]


def test_ignored_lines_are_never_billed():
    ignored = LineMapping("ignored", "mapped", "mapped", "co-1", "svc-1", "ct-1")
    state = desired_state([billing(mapping=ignored)])
    assert state.groups == {} and len(state.waiting) == 1


def test_groups_are_per_contract_and_service():
    other = LineMapping("mapped", "mapped", "mapped", "co-1", "svc-2", "ct-1")
    state = desired_state([billing(sub="S1", qty=5), billing(sub="S1", mpn="MPN-2", qty=2, mapping=other)])
    assert {k: g.quantity for k, g in state.groups.items()} == {("ct-1", "svc-1"): 5, ("ct-1", "svc-2"): 2}


def test_rule_price_is_used_for_the_group():
    desired = desired_state([billing(rule=PriceRule("cost_plus", markup_pct=D("15")), cost="10.005")]).groups[("ct-1", "svc-1")]
    assert desired.unit_price == D("11.51")


def test_psa_catalog_rule_uses_the_service_price():
    desired = desired_state([billing(rule=PriceRule("psa_catalog"), catalog=D("19.99"))]).groups[("ct-1", "svc-1")]
    assert desired.unit_price == D("19.99")


def test_lines_with_the_same_price_in_cents_agree():
    state = desired_state([billing(sub="S1", price="12.35"), billing(sub="S2", price="12.3500"),
                           billing(sub="S3", price="12.349")])
    assert state.groups[("ct-1", "svc-1")].unit_price == D("12.35") and not state.conflicts


def test_different_unit_prices_make_a_conflict():
    state = desired_state([billing(sub="S1", price="12.35"), billing(sub="S2", mpn="MPN-2", price="13.00")])
    conflict = state.conflicts[("ct-1", "svc-1")]
    assert isinstance(conflict, GroupConflict) and ("ct-1", "svc-1") not in state.groups
    assert "disagree on the unit price" in conflict.reasons[0]
    assert "12.35 (S1/MPN-1)" in conflict.reasons[0] and "13.00 (S2/MPN-2)" in conflict.reasons[0]
    assert [r.subscription_id for r in conflict.lines] == ["S1", "S2"]


def test_a_zero_counting_line_does_not_conflict_on_price():
    state = desired_state([billing(sub="S1", price="12.35"), billing(sub="S2", price="99.00", status="terminated")])
    assert state.groups[("ct-1", "svc-1")].unit_price == D("12.35")


def test_zero_group_with_different_prices_takes_the_latest_line():
    state = desired_state([billing(sub="S1", price="12.35", status="terminated", seen_at=dt.date(2026, 3, 1)),
                           billing(sub="S2", price="13.00", status="removed", seen_at=dt.date(2026, 3, 5))])
    desired = state.groups[("ct-1", "svc-1")]
    assert desired.quantity == 0 and desired.unit_price == D("13.00")


def test_zero_group_without_any_price_has_no_price():
    state = desired_state([billing(status="terminated", rule=PriceRule("psa_catalog"))])
    assert state.groups[("ct-1", "svc-1")].unit_price is None


def test_unpriceable_counting_line_is_a_conflict():
    state = desired_state([billing(rule=PriceRule("cost_plus"))])
    assert "markup_pct" in state.conflicts[("ct-1", "svc-1")].reasons[0]


def test_line_without_a_rule_is_a_conflict():
    state = desired_state([billing(rule=None)])
    assert "no price rule" in state.conflicts[("ct-1", "svc-1")].reasons[0]


def test_different_companies_in_one_contract_make_a_conflict():
    other = LineMapping("mapped", "mapped", "mapped", "co-2", "svc-1", "ct-1")
    state = desired_state([billing(sub="S1"), billing(sub="S2", customer="cust-2", mapping=other)])
    assert "different PSA companies" in state.conflicts[("ct-1", "svc-1")].reasons[0]


def test_different_currencies_make_a_conflict():
    state = desired_state([billing(sub="S1"), billing(sub="S2", currency="EUR")])
    assert "different currencies: EUR, USD" in state.conflicts[("ct-1", "svc-1")].reasons[0]


def test_unit_cost_is_quantity_weighted_and_rounded_at_the_end():
    # (3 x 10.00 + 1 x 10.01) / 4 = 10.0025 -> 10.00 ; (1 x 10.00 + 3 x 10.01) / 4 = 10.0075 -> 10.01
    a = desired_state([billing(sub="S1", qty=3, cost="10.00"), billing(sub="S2", qty=1, cost="10.01")])
    b = desired_state([billing(sub="S1", qty=1, cost="10.00"), billing(sub="S2", qty=3, cost="10.01")])
    assert a.groups[("ct-1", "svc-1")].unit_cost == D("10.00")
    assert b.groups[("ct-1", "svc-1")].unit_cost == D("10.01")


def test_unit_cost_ignores_lines_that_count_zero():
    state = desired_state([billing(sub="S1", qty=2, cost="8.00"), billing(sub="S2", qty=9, cost="50.00", status="hold")])
    assert state.groups[("ct-1", "svc-1")].unit_cost == D("8.00")


def test_zero_group_cost_is_the_plain_average():
    state = desired_state([billing(sub="S1", cost="8.00", status="terminated"),
                           billing(sub="S2", cost="9.01", status="terminated")])
    assert state.groups[("ct-1", "svc-1")].unit_cost == D("8.51")  # 8.505 half-up


def test_unknown_cost_is_left_out_with_a_warning():
    state = desired_state([billing(sub="S1", qty=2, cost="8.00"), billing(sub="S2", qty=2, cost=None)])
    desired = state.groups[("ct-1", "svc-1")]
    assert desired.unit_cost == D("8.00") and "S2/MPN-1" in desired.warnings[0]


def test_no_known_cost_is_zero_with_a_warning():
    desired = desired_state([billing(cost=None)]).groups[("ct-1", "svc-1")]
    assert desired.unit_cost == D("0.00") and desired.warnings


def test_weighted_unit_cost_helper():
    assert weighted_unit_cost([]) is None
    assert weighted_unit_cost([(1, D("1.005"))]) == D("1.01")
    assert weighted_unit_cost([(0, D("1")), (0, D("2"))]) == D("1.50")


def test_lines_payload_is_json_ready():
    payload = desired_state([billing()]).groups[("ct-1", "svc-1")].lines_payload()
    assert payload == [{"subscription_id": "S1", "mpn": "MPN-1", "customer_id": "cust-1", "status": "active",
                        "quantity": 5, "counted_quantity": 5, "unit_price": "12.35", "unit_cost": "10.00",
                        "price_error": None}]


def test_desired_line_fits_the_line_desired_event():
    from common.events import make_event
    desired = desired_state([billing()]).groups[("ct-1", "svc-1")]
    body = make_event("mapping", "autotask_line_desired", "t1", contract_id=desired.contract_id,
                      service_id=desired.service_id, company_id=desired.company_id, quantity=desired.quantity,
                      unit_price=desired.unit_price, unit_cost=desired.unit_cost, effective_date=DAY,
                      desired_version=1, lines=desired.lines_payload())
    assert body["unit_price"] == "12.35" and body["lines"][0]["unit_cost"] == "10.00"


def test_empty_input_gives_empty_state():
    state = desired_state([])
    assert state.groups == {} and state.conflicts == {} and state.waiting == ()


def test_line_from_a_subscription_line_changed_event():
    from common.events import load_event, make_event
    payload = load_event("marketplace", "subscription_line_changed", make_event(
        "marketplace", "subscription_line_changed", "t1", subscription_id="S1", mpn="MPN-1", customer_id="C1",
        change="quantity", status="active", quantity=7, previous_quantity=5, unit_price="12.35",
        unit_cost="10.00", currency="EUR", seen_at="2026-03-10T09:00:00+00:00", line_version=4))
    sub = SubscriptionLine.from_event(payload)
    assert (sub.key, sub.quantity, sub.unit_price, sub.unit_cost, sub.currency, sub.line_version, sub.seen_on) == \
        (("S1", "MPN-1"), 7, D("12.35"), D("10.00"), "EUR", 4, DAY)
