"""Price rules: what one unit of a product costs the MSP's customer.

Rules (billing-rules.md, "Product"): ``psa_catalog`` (the PSA service's own price), ``msrp`` (the
marketplace unit price), ``cost_plus`` (marketplace unit cost x (1 + markup%)), ``fixed``. A
per-customer override replaces the product's rule for one customer. Every computation is exact
Decimal arithmetic; the result is rounded half-up to cents once, at the end.
"""
from dataclasses import dataclass
from decimal import Decimal

from .errors import InvalidAmount, MissingPriceInput, PriceError, UnknownPriceRule
from .money import ZERO, round_money, to_decimal

PSA_CATALOG, MSRP, COST_PLUS, FIXED = "psa_catalog", "msrp", "cost_plus", "fixed"
PRICE_RULES = (PSA_CATALOG, MSRP, COST_PLUS, FIXED)
HUNDRED = Decimal(100)


def _check_rule(rule):
    if rule not in PRICE_RULES:
        raise UnknownPriceRule(f"unknown price rule {rule!r}; expected one of {', '.join(PRICE_RULES)}")
    return rule


@dataclass(frozen=True)
class PriceRule:
    """One product's (or one customer override's) price rule.

    ``markup_pct`` is a percentage: Decimal('15') means cost x 1.15; it may be negative (a
    discount below cost) but not below -100. ``fixed_price`` is the unit price itself.
    Fields a rule does not use are kept but ignored (switching a rule back keeps its markup).
    """

    rule: str
    markup_pct: Decimal | None = None
    fixed_price: Decimal | None = None

    def __post_init__(self):
        _check_rule(self.rule)
        object.__setattr__(self, "markup_pct", to_decimal(self.markup_pct, "markup_pct"))
        object.__setattr__(self, "fixed_price", to_decimal(self.fixed_price, "fixed_price"))

    def raw_price(self, *, msrp=None, cost=None, psa_catalog_price=None):
        return raw_unit_price(self.rule, msrp=msrp, cost=cost, psa_catalog_price=psa_catalog_price,
                              markup_pct=self.markup_pct, fixed_price=self.fixed_price)

    def price(self, *, msrp=None, cost=None, psa_catalog_price=None):
        return round_money(self.raw_price(msrp=msrp, cost=cost, psa_catalog_price=psa_catalog_price))


def _non_negative(value, rule, field):
    value = to_decimal(value, field)
    if value is None:
        raise MissingPriceInput(rule, field)
    if value < ZERO:
        raise InvalidAmount(f"{field} must not be negative for price rule {rule!r}: {value}")
    return value


def raw_unit_price(rule, *, msrp=None, cost=None, psa_catalog_price=None, markup_pct=None, fixed_price=None):
    """The exact, unrounded unit price. ``rule`` is a rule name or a PriceRule (whose markup and
    fixed price are used when the keyword arguments are not given).

    Raises MissingPriceInput when the rule's input is unknown (psa_catalog without a PSA price,
    msrp without a marketplace price, cost_plus without cost or markup, fixed without a price),
    InvalidAmount for negative or non-numeric inputs, UnknownPriceRule for an unknown rule.
    """
    if isinstance(rule, PriceRule):
        markup_pct = rule.markup_pct if markup_pct is None else markup_pct
        fixed_price = rule.fixed_price if fixed_price is None else fixed_price
        rule = rule.rule
    _check_rule(rule)
    if rule == PSA_CATALOG:
        return _non_negative(psa_catalog_price, rule, "psa_catalog_price")
    if rule == MSRP:
        return _non_negative(msrp, rule, "msrp")
    if rule == FIXED:
        return _non_negative(fixed_price, rule, "fixed_price")
    # cost_plus
    base = _non_negative(cost, rule, "cost")
    markup = to_decimal(markup_pct, "markup_pct")
    if markup is None:
        raise MissingPriceInput(rule, "markup_pct")
    if markup < -HUNDRED:
        raise InvalidAmount(f"markup_pct {markup} is below -100%: the price would be negative")
    return base * (HUNDRED + markup) / HUNDRED


def unit_price(rule, *, msrp=None, cost=None, psa_catalog_price=None, markup_pct=None, fixed_price=None):
    """The unit price, rounded half-up to cents only here, at the end.

    >>> unit_price("cost_plus", msrp=None, cost=Decimal("10.005"), psa_catalog_price=None, markup_pct=Decimal("15"))
    Decimal('11.51')
    """
    return round_money(raw_unit_price(rule, msrp=msrp, cost=cost, psa_catalog_price=psa_catalog_price,
                                      markup_pct=markup_pct, fixed_price=fixed_price))


class NoPriceRule(PriceError):
    """Neither a customer override nor a product rule exists for (customer, mpn)."""


def effective_rule(customer_id, mpn, *, product_rules, overrides=None):
    """The rule that prices ``mpn`` for ``customer_id``: the customer's override when one exists,
    else the product's rule. An override is a whole rule: it does not inherit the product's
    markup or fixed price.

    ``product_rules``: {mpn: PriceRule}; ``overrides``: {(customer_id, mpn): PriceRule}.
    """
    override = (overrides or {}).get((customer_id, mpn))
    if override is not None:
        return override
    rule = product_rules.get(mpn)
    if rule is None:
        raise NoPriceRule(f"no price rule for product {mpn!r} (customer {customer_id!r})")
    return rule
