"""Mapping rules: pure functions and dataclasses, no I/O. What the mapping service calls.

Modules: pricing (price rules), lines (billable lines), desired (desired state per contract
line), dates (billing periods, effective dates), changes (classification, same-day collapse,
day-by-day plan), posting (posting mode), suggestions (matching, reference checks), preview.

Decisions (where billing-rules.md is silent)
--------------------------------------------
Pricing
 D1. Money is Decimal throughout; floats are accepted only through their shortest repr
     (10.005 -> Decimal('10.005')). Rounding is half-up to cents (0.01), once, at the end; the
     same two decimals are used for every currency.
 D2. markup_pct is a percentage (15 = +15 %). A negative markup (selling below cost) is allowed,
     down to -100 %. Negative costs, prices or fixed prices are rejected (InvalidAmount).
     A price of 0 is allowed (free trials).
 D3. A per-customer override is a whole rule: it does not inherit the product's markup or fixed
     price. No override and no product rule -> NoPriceRule.
 D4. Missing inputs raise MissingPriceInput (a PriceError/ValueError) naming the rule and field.
Billable lines
 D5. A "mapped" item without its PSA id is not billable. seen_at's day is taken in UTC
     (tenant time zones are not modelled yet).
Desired state
 D6. The group's unit price is decided by the lines that count units (> 0). Their prices are
     compared in cents: different cents -> conflict (not emitted), with every price and the lines
     behind it. A counting line that can not be priced, lines of different PSA companies, or of
     different currencies also make a conflict.
 D7. A group that counts 0 units is never a price conflict: its price does not bill anything; it
     takes the most recently seen line's price (None when no line can be priced), so a
     cancellation is never blocked by a price disagreement.
 D8. Unit cost = quantity-weighted average of the counting lines' marketplace unit costs
     (sum(q x cost) / sum(q)), rounded half-up at the end, so quantity x cost keeps the total
     cost. Lines without a cost are left out with a warning; no known cost -> 0.00 with a
     warning. A zero-unit group uses the plain average of all its lines' costs.
 D9. A group exists while at least one billable line is linked to it, even at 0 units (that
     is how terminations reach the PSA). A group with no billable line left (lines unmapped or
     ignored) is not cancelled automatically: a missing desired state means "unknown", never 0.
Dates
 D10. Periods are anchored on the contract start date; a start on the 29th-31st uses the last
     day of shorter months (start Jan 31 -> Feb 28/29, Mar 31, Apr 30), always computed from the
     start date itself. Periods of 1, 3 or 12 months are supported (period_months).
 D11. Before the contract starts, its first period is the next one: decreases take effect on the
     start date, and no automatic date is earlier than the start date. Unknown start date ->
     calendar months (1st of the next month).
 D12. A price (or cost) change is effective from the next period even when the tenant credits
     decreases immediately. An approver's override date wins over every rule, unclamped.
 D13. Same-day collapse: of one line's states seen on one day the highest line_version (then the
     latest seen_at) wins; the group's operation for the day compares that result with the state
     before the day: 5 -> 3 -> 7 is one increase of 2 on that day; 5 -> 8 -> 5 is nothing.
Classification
 D14. previous None -> new_line (or no_change when the new quantity is 0: no 0-unit line is
     added); previous at 0 units -> increase (the service is already on the contract); to 0 ->
     cancel; same quantity with a moved unit price or unit cost -> price_change.
 D15. A quantity change that also moves the price is one planned change (kind = the quantity
     kind, price_changed/cost_changed set) that plan_operations splits into the quantity
     operation at the old price (effective per D10-D12) and a price_change at the next period.
Posting mode
 D16. threshold: approval when |delta| > threshold_units, or |delta| / previous > threshold_percent
     %, or the unit price moved; exactly at a threshold posts automatically. A threshold left
     None is not applied. A new line (or a change from 0) has no previous quantity: only the
     units test applies and its first price is not "moved". A cost-only move does not change the
     invoice and needs no approval. no_change never needs approval; review: everything else does.
Suggestions
 D17. Names are normalised (case, accents, punctuation, '&' = 'and', dots/apostrophes joined,
     trailing legal suffixes Inc/LLC/Ltd/GmbH/Corp/Co/... dropped). Exact name or a shared
     e-mail/web domain -> score 100. When the exact name and the domain point to different
     companies, or several candidates share the name or the domain, the item stays unmapped
     with the reason (a person chooses). Free-mail domains (gmail.com, outlook.com, ...) never match; "www." is
     ignored, other subdomains are not.
 D18. Fuzzy: rapidfuzz token_sort_ratio on normalised names, cutoff 85 inclusive, score rounded
     to 0.1; the plain ratio of the unsorted normalised names counts too (the better of the two),
     because a typo in a word's first letter reorders the sorted words. Equal best scores for
     different records -> unmapped ("tie"). Only active PSA records are suggested.
 D19. Products: a service whose identifier or name equals the MPN (normalised) -> 100; then exact
     name, then fuzzy, like companies (no legal suffixes dropped).
 D20. Reference checks: mapped + record gone/inactive (contract: not recurring, or of another
     company) -> conflict with the reason; a suggested item whose record went away -> unmapped;
     a reference conflict whose record is fine again -> mapped (the person's decision stands).
Preview
 D21. amount = the change to one full period of the invoice: new line quantity x price; quantity
     change delta x the price in force; price change quantity x (new - old price); the PSA's
     proration is not estimated. period_amount = quantity after x unit price.
"""
from .changes import (DailyPlan, LineState, PlannedChange, classify_change, collapse_same_day,
                      plan_by_day, plan_operations)
from .dates import (CANCEL, CHANGE_KINDS, DECREASE, INCREASE, NEW_LINE, NO_CHANGE, PRICE_CHANGE,
                    anchored, effective_date, next_period_start, period_start)
from .desired import (BillingLine, DesiredLine, DesiredState, GroupConflict, LineRef, WaitingLine,
                      build_group, desired_state, weighted_unit_cost)
from .errors import (InvalidAmount, MappingDomainError, MissingPriceInput, PriceError,
                     UnknownPriceRule)
from .lines import (CONFLICT, IGNORED, MAPPED, MAPPING_STATUSES, SUBSCRIPTION_STATUSES, SUGGESTED,
                    UNMAPPED, LineMapping, SubscriptionLine, blocking_reasons, counted_quantity,
                    is_billable, seen_day)
from .money import CENT, round_money, same_money, to_decimal
from .posting import AUTO, POSTING_MODES, REVIEW, THRESHOLD, BillingSettings, PostingDecision, posting_decision
from .preview import PreviewRow, operation_amounts, preview_rows
from .pricing import (COST_PLUS, FIXED, MSRP, PRICE_RULES, PSA_CATALOG, NoPriceRule, PriceRule,
                      effective_rule, raw_unit_price, unit_price)
from .references import PsaCompany, PsaContract, PsaService
from .suggestions import (FUZZY_CUTOFF, check_mapping, CompanyMatcher, NameIndex, ServiceMatcher, Suggestion,
                          normalise_domain, normalise_name, normalise_product_name,
                          reference_problem, status_after_check, suggest_contract)
