import datetime as dt
from decimal import Decimal as D

import pytest

from services.mapping.domain import (BillingLine, LineMapping, LineState, PriceRule, PsaContract, SubscriptionLine,
                                     classify_change, collapse_same_day, desired_state, plan_by_day,
                                     plan_operations)

d = dt.date
START = d(2026, 1, 15)
SEEN = d(2026, 3, 10)
NEXT = d(2026, 3, 15)


def state(qty, price="12.35", cost="10.00"):
    return LineState(qty, None if price is None else D(price), None if cost is None else D(cost))


def classify(prev, new, **kw):
    kw.setdefault("seen_on", SEEN)
    kw.setdefault("contract_start", START)
    return classify_change(prev, new, contract_id="ct-1", service_id="svc-1", **kw)


# --- classification ------------------------------------------------------------------------------
def test_new_line():
    c = classify(None, state(5))
    assert (c.kind, c.quantity_before, c.quantity_after, c.delta_units, c.effective_date) == ("new_line", 0, 5, 5, SEEN)
    assert not c.price_changed and c.key == ("ct-1", "svc-1")


def test_new_group_with_zero_units_is_no_change():
    assert classify(None, state(0)).kind == "no_change"


def test_increase():
    c = classify(state(5), state(8))
    assert (c.kind, c.delta_units, c.effective_date) == ("increase", 3, SEEN)


def test_increase_from_zero_is_an_increase_not_a_new_line():
    assert classify(state(0), state(2)).kind == "increase"


def test_decrease_waits_for_the_next_period():
    c = classify(state(8), state(5))
    assert (c.kind, c.delta_units, c.effective_date) == ("decrease", -3, NEXT)


def test_decrease_credited_immediately():
    assert classify(state(8), state(5), credit_decreases_immediately=True).effective_date == SEEN


def test_cancel():
    c = classify(state(8), state(0))
    assert (c.kind, c.delta_units, c.effective_date) == ("cancel", -8, NEXT)


def test_cancel_ignores_a_price_move():
    c = classify(state(8), state(0, price="99.00"))
    assert c.kind == "cancel" and not c.price_changed


def test_zero_to_zero_is_no_change_even_if_the_price_moved():
    assert classify(state(0), state(0, price="1.00")).kind == "no_change"


def test_price_change_is_effective_next_period():
    c = classify(state(5, price="12.35"), state(5, price="12.99"))
    assert (c.kind, c.delta_units, c.effective_date, c.price_changed) == ("price_change", 0, NEXT, True)
    assert (c.unit_price_before, c.unit_price_after) == (D("12.35"), D("12.99"))


def test_cost_only_change_is_a_price_change_without_price_moved():
    c = classify(state(5, cost="10.00"), state(5, cost="9.50"))
    assert c.kind == "price_change" and c.cost_changed and not c.price_changed


def test_same_price_in_cents_is_no_change():
    assert classify(state(5, price="12.35"), state(5, price="12.3500")).kind == "no_change"


def test_unknown_new_price_moves_nothing():
    assert classify(state(5), state(5, price=None)).kind == "no_change"


def test_previous_without_price_is_not_a_price_move():
    assert classify(state(5, price=None), state(5)).kind == "no_change"


def test_no_change():
    c = classify(state(5), state(5))
    assert c.kind == "no_change" and c.delta_units == 0


def test_increase_with_a_price_move_keeps_both_dates():
    c = classify(state(5, price="12.35"), state(8, price="13.00"))
    assert (c.kind, c.price_changed, c.effective_date, c.price_effective_date) == ("increase", True, SEEN, NEXT)


def test_override_date_applies():
    c = classify(state(8), state(5), effective_date_override=d(2026, 3, 12))
    assert c.effective_date == d(2026, 3, 12)


def test_new_state_is_required():
    with pytest.raises(ValueError):
        classify(state(5), None)


def test_desired_line_can_be_classified_directly():
    sub = SubscriptionLine("S1", "M", "C", 4, "active", D("12.35"), D("10"), SEEN)
    mapping = LineMapping("mapped", "mapped", "mapped", "co", "svc-9", "ct-9")
    desired = desired_state([BillingLine(sub, mapping, PriceRule("msrp"))]).groups[("ct-9", "svc-9")]
    c = classify_change(None, desired, seen_on=SEEN)
    assert (c.kind, c.contract_id, c.service_id, c.quantity_after) == ("new_line", "ct-9", "svc-9", 4)


# --- operations --------------------------------------------------------------------------------------
def test_no_change_has_no_operation():
    assert plan_operations(classify(state(5), state(5))) == []


def test_simple_change_is_one_operation():
    c = classify(state(5), state(8))
    assert plan_operations(c) == [c]


def test_quantity_and_price_move_split_into_two_operations():
    qty_op, price_op = plan_operations(classify(state(5, price="12.35"), state(8, price="13.00")))
    assert (qty_op.kind, qty_op.quantity_before, qty_op.quantity_after, qty_op.effective_date) == ("increase", 5, 8, SEEN)
    assert qty_op.unit_price_after == D("12.35") and not qty_op.price_changed
    assert (price_op.kind, price_op.quantity_before, price_op.quantity_after, price_op.effective_date) == \
        ("price_change", 8, 8, NEXT)
    assert (price_op.unit_price_before, price_op.unit_price_after) == (D("12.35"), D("13.00"))


def test_decrease_with_cost_move_splits_too():
    ops = plan_operations(classify(state(8, cost="10.00"), state(5, cost="9.00")))
    assert [o.kind for o in ops] == ["decrease", "price_change"]
    assert ops[0].unit_cost_after == D("10.00") and ops[1].unit_cost_after == D("9.00")


def test_new_line_never_splits():
    assert [o.kind for o in plan_operations(classify(None, state(5)))] == ["new_line"]


# --- same-day collapse ---------------------------------------------------------------------------
def sub(qty, seen, version, status="active", sub_id="S1", price="12.35"):
    return SubscriptionLine(sub_id, "MPN-1", "cust-1", qty, status, D(price), D("10.00"), seen, line_version=version)


def test_collapse_keeps_the_last_state_per_line_per_day():
    lines = [sub(3, "2026-03-10T08:00:00Z", 2), sub(7, "2026-03-10T17:00:00Z", 3), sub(4, "2026-03-10T12:00:00Z", 1)]
    assert [l.quantity for l in collapse_same_day(lines)] == [7]


def test_collapse_orders_by_line_version_before_time():
    lines = [sub(3, "2026-03-10T18:00:00Z", 1), sub(7, "2026-03-10T09:00:00Z", 2)]
    assert [l.quantity for l in collapse_same_day(lines)] == [7]


def test_collapse_keeps_different_days_and_lines():
    lines = [sub(3, d(2026, 3, 10), 1), sub(4, d(2026, 3, 11), 2), sub(9, d(2026, 3, 10), 1, sub_id="S2")]
    out = collapse_same_day(lines)
    assert [(l.subscription_id, l.seen_on, l.quantity) for l in out] == [
        ("S1", d(2026, 3, 10), 3), ("S2", d(2026, 3, 10), 9), ("S1", d(2026, 3, 11), 4)]


def test_collapse_uses_the_utc_day():
    lines = [sub(3, "2026-03-10T23:00:00-05:00", 1), sub(4, "2026-03-11T01:00:00Z", 2)]
    assert [l.quantity for l in collapse_same_day(lines)] == [4]


# --- day-by-day plan -----------------------------------------------------------------------------------
MAPPING = LineMapping("mapped", "mapped", "mapped", "co-1", "svc-1", "ct-1")
CONTRACTS = {"ct-1": PsaContract("ct-1", "Managed 365", "co-1", start_date=START)}
KEY = ("ct-1", "svc-1")


def bl(qty, seen, version, status="active", mapping=MAPPING, sub_id="S1", price="12.35"):
    return BillingLine(sub(qty, seen, version, status, sub_id, price), mapping, PriceRule("msrp"))


def plan(changes, prev_qty=5, current=None, **kw):
    previous = {KEY: state(prev_qty)} if prev_qty is not None else {}
    if current is None:
        current = [bl(prev_qty, d(2026, 3, 1), 1)] if prev_qty is not None else []
    return plan_by_day(previous=previous, current=current, changes=changes, contracts=CONTRACTS, **kw)


def test_up_down_up_on_one_day_is_one_increase():
    result = plan([bl(8, "2026-03-10T08:00:00Z", 2), bl(3, "2026-03-10T12:00:00Z", 3), bl(7, "2026-03-10T16:00:00Z", 4)])
    assert [(c.kind, c.quantity_before, c.quantity_after, c.effective_date) for c in result.changes] == \
        [("increase", 5, 7, SEEN)]
    assert result.final[KEY].quantity == 7


def test_down_up_on_one_day_back_to_the_start_is_nothing():
    result = plan([bl(3, "2026-03-10T08:00:00Z", 2), bl(5, "2026-03-10T16:00:00Z", 3)])
    assert result.changes == []


def test_up_then_down_on_one_day_is_one_decrease_next_period():
    result = plan([bl(9, "2026-03-10T08:00:00Z", 2), bl(2, "2026-03-10T16:00:00Z", 3)])
    assert [(c.kind, c.delta_units, c.effective_date) for c in result.changes] == [("decrease", -3, NEXT)]


def test_changes_on_different_days_are_separate_operations():
    result = plan([bl(8, d(2026, 3, 10), 2), bl(6, d(2026, 3, 11), 3)])
    assert [(c.kind, c.quantity_before, c.quantity_after, c.effective_date) for c in result.changes] == [
        ("increase", 5, 8, SEEN), ("decrease", 8, 6, NEXT)]


def test_two_lines_of_one_group_on_one_day_are_one_operation():
    current = [bl(5, d(2026, 3, 1), 1), bl(2, d(2026, 3, 1), 1, sub_id="S2")]
    result = plan([bl(6, SEEN, 2), bl(4, SEEN, 2, sub_id="S2")], prev_qty=7, current=current)
    assert [(c.kind, c.quantity_before, c.quantity_after) for c in result.changes] == [("increase", 7, 10)]


def test_termination_becomes_a_cancel():
    result = plan([bl(5, SEEN, 2, status="terminated")])
    assert [(c.kind, c.quantity_after, c.effective_date) for c in result.changes] == [("cancel", 0, NEXT)]


def test_hold_counts_zero_unless_bill_suspended():
    assert [c.kind for c in plan([bl(5, SEEN, 2, status="hold")]).changes] == ["cancel"]
    assert plan([bl(5, SEEN, 2, status="hold")], bill_suspended=True).changes == []


def test_first_line_is_a_new_line():
    result = plan([bl(3, SEEN, 1)], prev_qty=None)
    assert [(c.kind, c.quantity_after, c.effective_date) for c in result.changes] == [("new_line", 3, SEEN)]


def test_unmapped_lines_wait_and_completed_mapping_replays_with_original_dates():
    unmapped = LineMapping("mapped", "unmapped", "mapped", "co-1", None, "ct-1")
    waiting = plan([bl(3, d(2026, 3, 2), 1, mapping=unmapped), bl(5, d(2026, 3, 20), 2, mapping=unmapped)], prev_qty=None)
    assert waiting.changes == []
    replay = plan([bl(3, d(2026, 3, 2), 1), bl(5, d(2026, 3, 20), 2)], prev_qty=None)
    assert [(c.kind, c.quantity_after, c.effective_date) for c in replay.changes] == [
        ("new_line", 3, d(2026, 3, 2)), ("increase", 5, d(2026, 3, 20))]


def test_a_conflicting_day_keeps_the_previous_state():
    current = [bl(5, d(2026, 3, 1), 1)]
    result = plan([bl(2, SEEN, 1, sub_id="S2", price="99.00")], current=current)
    assert result.changes == [] and result.final[KEY].quantity == 5
    (day, conflict), = result.conflicts
    assert day == SEEN and "unit price" in conflict.reasons[0]


def test_credit_immediately_in_a_plan():
    result = plan([bl(2, SEEN, 2)], credit_decreases_immediately=True)
    assert result.changes[0].effective_date == SEEN


def test_moving_a_line_to_another_contract_touches_both_groups():
    other = LineMapping("mapped", "mapped", "mapped", "co-1", "svc-1", "ct-2")
    current = [bl(5, d(2026, 3, 1), 1), bl(1, d(2026, 3, 1), 1, sub_id="S9")]
    result = plan([bl(5, SEEN, 2, mapping=other)], prev_qty=6, current=current)
    kinds = {c.key: (c.kind, c.quantity_after) for c in result.changes}
    assert kinds == {("ct-1", "svc-1"): ("decrease", 1), ("ct-2", "svc-1"): ("new_line", 5)}
