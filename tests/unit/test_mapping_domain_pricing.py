from decimal import Decimal as D

import pytest

from common import events
from services.mapping import domain as md
from services.mapping.domain import (InvalidAmount, MissingPriceInput, NoPriceRule, PriceError, PriceRule,
                                     UnknownPriceRule, effective_rule, raw_unit_price, round_money,
                                     same_money, to_decimal, unit_price)


def price(rule, **kw):
    base = dict(msrp=D("12.00"), cost=D("10.00"), psa_catalog_price=D("14.50"))
    base.update(kw)
    return unit_price(rule, **base)


# --- the four rules ------------------------------------------------------------------------------
def test_psa_catalog_uses_the_psa_price():
    assert price("psa_catalog") == D("14.50")


def test_msrp_uses_the_marketplace_unit_price():
    assert price("msrp") == D("12.00")


def test_cost_plus_adds_the_markup_percent():
    assert price("cost_plus", markup_pct=D("15")) == D("11.50")


def test_fixed_uses_the_fixed_price():
    assert price("fixed", fixed_price=D("9.99")) == D("9.99")


def test_fixed_ignores_marketplace_prices():
    assert unit_price("fixed", msrp=None, cost=None, psa_catalog_price=None, fixed_price=D("5")) == D("5.00")


def test_result_always_has_two_decimals():
    assert str(price("msrp", msrp=D("12"))) == "12.00"


# --- rounding only at the end --------------------------------------------------------------------
def test_cost_plus_of_a_fractional_cost_rounds_once():
    # 10.005 x 1.15 = 11.50575 -> 11.51
    assert price("cost_plus", cost=D("10.005"), markup_pct=D("15")) == D("11.51")
    assert raw_unit_price("cost_plus", msrp=None, cost=D("10.005"), psa_catalog_price=None,
                          markup_pct=D("15")) == D("11.50575")


def test_no_intermediate_rounding_of_the_cost():
    # rounding the cost first would give 1.00 x 1.5 = 1.50; exact is 1.004 x 1.5 = 1.506 -> 1.51
    assert price("cost_plus", cost=D("1.004"), markup_pct=D("50")) == D("1.51")


def test_no_intermediate_rounding_of_the_factor():
    # markup 12.345 %: a factor rounded to 1.12 would give 112.00; exact 100 x 1.12345 = 112.345 -> 112.35
    assert price("cost_plus", cost=D("100"), markup_pct=D("12.345")) == D("112.35")


def test_half_up_at_exactly_half_a_cent():
    assert price("msrp", msrp=D("2.345")) == D("2.35")
    assert price("msrp", msrp=D("2.3449999")) == D("2.34")


def test_round_money_is_half_up_not_bankers():
    assert round_money(D("0.125")) == D("0.13")
    assert round_money(D("0.135")) == D("0.14")
    assert round_money(D("-0.005")) == D("-0.01")


def test_float_inputs_go_through_their_decimal_repr():
    assert price("cost_plus", cost=10.005, markup_pct=15) == D("11.51")
    assert to_decimal(0.1) == D("0.1")


def test_string_inputs_are_accepted():
    assert price("cost_plus", cost="20", markup_pct="10") == D("22.00")


def test_zero_markup_is_cost():
    assert price("cost_plus", cost=D("7.77"), markup_pct=D("0")) == D("7.77")


def test_negative_markup_is_a_discount():
    assert price("cost_plus", cost=D("10"), markup_pct=D("-10")) == D("9.00")


def test_markup_of_minus_100_is_free():
    assert price("cost_plus", cost=D("10"), markup_pct=D("-100")) == D("0.00")


def test_markup_below_minus_100_is_invalid():
    with pytest.raises(InvalidAmount):
        price("cost_plus", cost=D("10"), markup_pct=D("-100.01"))


def test_zero_price_is_allowed():
    assert price("msrp", msrp=D("0")) == D("0.00")


# --- missing and bad inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("rule, missing, field", [
    ("psa_catalog", {"psa_catalog_price": None}, "psa_catalog_price"),
    ("msrp", {"msrp": None}, "msrp"),
    ("cost_plus", {"cost": None, "markup_pct": D("10")}, "cost"),
    ("cost_plus", {}, "markup_pct"),
    ("fixed", {}, "fixed_price"),
])
def test_missing_input_is_a_clear_error(rule, missing, field):
    with pytest.raises(MissingPriceInput) as err:
        price(rule, **missing)
    assert err.value.field == field and err.value.rule == rule
    assert field in str(err.value) and rule in str(err.value)


def test_missing_input_is_a_price_error_and_a_value_error():
    with pytest.raises(PriceError):
        price("psa_catalog", psa_catalog_price=None)
    with pytest.raises(ValueError):
        price("psa_catalog", psa_catalog_price=None)


def test_unknown_rule():
    with pytest.raises(UnknownPriceRule):
        price("cheapest")
    with pytest.raises(UnknownPriceRule):
        PriceRule("cheapest")


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", True, object()])
def test_non_numbers_are_invalid(bad):
    with pytest.raises(InvalidAmount):
        price("msrp", msrp=bad)


def test_negative_cost_is_invalid():
    with pytest.raises(InvalidAmount):
        price("cost_plus", cost=D("-1"), markup_pct=D("10"))


def test_negative_fixed_price_is_invalid():
    with pytest.raises(InvalidAmount):
        price("fixed", fixed_price=D("-0.01"))


# --- PriceRule and overrides -----------------------------------------------------------------------
def test_price_rule_object_prices_with_its_own_fields():
    rule = PriceRule("cost_plus", markup_pct="20")
    assert rule.markup_pct == D("20")
    assert rule.price(cost=D("8.40")) == D("10.08")
    assert unit_price(rule, msrp=None, cost=D("8.40"), psa_catalog_price=None) == D("10.08")


def test_price_rule_raw_price_is_unrounded():
    assert PriceRule("cost_plus", markup_pct=D("33")).raw_price(cost=D("1.01")) == D("1.3433")


def test_price_rule_keeps_unused_fields():
    assert PriceRule("msrp", markup_pct=D("5")).price(msrp=D("3")) == D("3.00")


PRODUCT_RULES = {"MPN-1": PriceRule("msrp"), "MPN-2": PriceRule("cost_plus", markup_pct=D("20"))}
OVERRIDES = {("cust-a", "MPN-1"): PriceRule("fixed", fixed_price=D("8.00"))}


def test_override_replaces_the_product_rule_for_that_customer():
    assert effective_rule("cust-a", "MPN-1", product_rules=PRODUCT_RULES, overrides=OVERRIDES) == \
        PriceRule("fixed", fixed_price=D("8.00"))


def test_other_customers_keep_the_product_rule():
    assert effective_rule("cust-b", "MPN-1", product_rules=PRODUCT_RULES, overrides=OVERRIDES) == PriceRule("msrp")


def test_override_is_per_product():
    assert effective_rule("cust-a", "MPN-2", product_rules=PRODUCT_RULES, overrides=OVERRIDES).rule == "cost_plus"


def test_override_does_not_inherit_the_product_markup():
    overrides = {("cust-a", "MPN-2"): PriceRule("cost_plus")}
    rule = effective_rule("cust-a", "MPN-2", product_rules=PRODUCT_RULES, overrides=overrides)
    with pytest.raises(MissingPriceInput):
        rule.price(cost=D("10"))


def test_override_without_a_product_rule_is_enough():
    rule = effective_rule("cust-a", "MPN-9", product_rules={}, overrides={("cust-a", "MPN-9"): PriceRule("msrp")})
    assert rule.rule == "msrp"


def test_no_rule_at_all():
    with pytest.raises(NoPriceRule):
        effective_rule("cust-a", "MPN-9", product_rules=PRODUCT_RULES, overrides=OVERRIDES)


def test_no_overrides_given():
    assert effective_rule("cust-a", "MPN-1", product_rules=PRODUCT_RULES) == PriceRule("msrp")


# --- money helpers -------------------------------------------------------------------------------
def test_same_money_compares_cents():
    assert same_money(D("12.35"), D("12.3500"))
    assert not same_money(D("12.35"), D("12.36"))
    assert same_money(None, None) and not same_money(None, D("0"))


def test_vocabularies_match_the_event_catalog():
    assert md.SUBSCRIPTION_STATUSES == events.SUBSCRIPTION_STATUSES
    assert md.MAPPING_STATUSES == events.MAPPING_STATUSES
