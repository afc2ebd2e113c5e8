"""services/autotask/planner.py: PSA state + desired schedule -> the fewest Autotask operations."""
import datetime as dt
from decimal import Decimal

from common.posting import schedule
from common.posting.engine import GroupWork
from services.autotask import planner
from services.autotask.planner import ADD_SERVICE, ADJUST, PRICE, AutotaskLine, Period

D = dt.date
TODAY = D(2026, 11, 20)
NOV = Period(D(2026, 11, 1), D(2026, 11, 30), 10)
DEC = Period(D(2026, 12, 1), D(2026, 12, 31), 10)


def bp(day, qty, version, price="20.00", cost="17.00"):
    return {"date": day.isoformat() if isinstance(day, D) else day, "quantity": qty, "unit_price": price,
            "unit_cost": cost, "version": version, "company_id": "c1"}


def work(desired, pending_from=TODAY, expected=None, unknown=(), posted_horizon=None, version=None):
    return GroupWork(tenant_id="t1", contract_id="100", service_id="7", company_id="c1", desired=list(desired),
                     desired_version=version or max(b["version"] for b in desired), pending_from=pending_from,
                     expected=expected, posted_horizon=posted_horizon, edit_round=0, overwrite_once=False,
                     vendor_line_id=None, seq=1, changed_at=None, failures=0, unknown=list(unknown))


def line(*periods, price="20.00", adjusted=None, csid=555):
    return AutotaskLine(csid, Decimal(price), Decimal("17.00"), None if adjusted is None else Decimal(adjusted),
                        tuple(periods))


def ops_of(plan):
    return [(op.kind, op.effective_date.isoformat(), op.unit_change) for op in plan.ops]


def test_new_line_is_one_adjustment_that_creates_the_service():
    plan = planner.plan_line(work([bp(TODAY, 12, 1)]), None, TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 12)]
    [create] = plan.ops
    assert create.params["creates_service"] and create.params["contract_service_id"] is None
    assert create.unit_price == Decimal("20.00") and create.unit_cost == Decimal("17.00")
    assert create.quantity_before == 0 and create.quantity_after == 12
    assert plan.edited is None


def test_new_line_with_a_later_step_creates_once_then_adjusts():
    plan = planner.plan_line(work([bp(TODAY, 12, 1), bp("2026-12-01", 7, 2)]), None, TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 12), (ADJUST, "2026-12-01", -5)]
    assert plan.ops[0].params.get("creates_service") and not plan.ops[1].params.get("creates_service")
    assert plan.ops[1].unit_price is None


def test_new_line_wanting_no_units_is_not_created():
    assert planner.plan_line(work([bp(TODAY, 0, 1)]), None, TODAY).ops == []


def test_new_line_with_zero_units_writes_nothing():
    assert planner.plan_line(work([bp(TODAY, 0, 1)]), None, TODAY).ops == []


def test_increase_posts_the_signed_delta_on_its_date():
    plan = planner.plan_line(work([bp(TODAY, 14, 3)]), line(NOV), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 4)]
    assert plan.ops[0].params["contract_service_id"] == 555


def test_decrease_at_the_next_period_reads_that_period():
    plan = planner.plan_line(work([bp("2026-12-01", 6, 4)], pending_from=D(2026, 12, 1)), line(DEC), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-12-01", -4)]


def test_cancel_goes_down_to_zero():
    plan = planner.plan_line(work([bp("2026-12-01", 0, 5)], pending_from=D(2026, 12, 1)), line(DEC), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-12-01", -10)]
    assert plan.ops[0].quantity_after == 0


def test_nothing_to_do_when_the_psa_already_agrees():
    plan = planner.plan_line(work([bp(TODAY, 10, 2)]), line(NOV), TODAY)
    assert plan.ops == [] and plan.edited is None


def test_price_change_patches_adjusted_price_only():
    plan = planner.plan_line(work([bp(TODAY, 10, 2, price="21.50")]), line(NOV), TODAY)
    assert ops_of(plan) == [(PRICE, "2026-11-20", None)]
    assert plan.ops[0].unit_price == Decimal("21.50")


def test_price_compares_with_the_adjusted_price_when_set():
    plan = planner.plan_line(work([bp(TODAY, 10, 2, price="21.50")]), line(NOV, adjusted="21.5"), TODAY)
    assert plan.ops == []


def test_no_price_change_on_a_cancelled_line():
    plan = planner.plan_line(work([bp(TODAY, 0, 2, price="99.00")]), line(NOV), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", -10)]


def test_two_breakpoints_today_and_next_period():
    desired = [bp(TODAY, 14, 6), bp("2026-12-01", 8, 7)]
    plan = planner.plan_line(work(desired), line(NOV, DEC), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 4), (ADJUST, "2026-12-01", -6)]


def test_a_superseded_future_decrease_is_undone():
    # we posted -4 from Dec 1 (PSA: Nov 10, Dec 6); a newer event says 15 from Nov 25 on
    desired = [bp(TODAY, 10, 1), bp("2026-11-25", 15, 3)]
    psa = line(NOV, Period(D(2026, 12, 1), D(2026, 12, 31), 6))
    expected = [["2026-11-01", 10], ["2026-12-01", 6]]
    plan = planner.plan_line(work(desired, pending_from=D(2026, 11, 25), expected=expected,
                                  posted_horizon=D(2026, 12, 1)), psa, TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-25", 5), (ADJUST, "2026-12-01", 4)]
    assert plan.edited is None
    assert plan.ops[-1].expected_after == [["2026-11-01", 15], ["2026-12-01", 15]]


def test_window_reaches_the_posted_horizon():
    w = work([bp(TODAY, 10, 1)], posted_horizon=D(2027, 1, 1))
    assert planner.window(w, TODAY) == (TODAY, D(2027, 1, 1))


def test_same_day_events_collapse_to_one_adjustment():
    desired, _ = schedule.apply_event([], bp(TODAY, 12, 1))
    desired, _ = schedule.apply_event(desired, bp(TODAY, 15, 2))
    plan = planner.plan_line(work(desired), line(NOV), TODAY)
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 5)]


def test_edited_in_the_psa_is_flagged():
    # we last posted 10; someone typed 13 in Autotask; the marketplace now says 12
    plan = planner.plan_line(work([bp(TODAY, 12, 3)], expected=[["2026-11-01", 10]]),
                             line(Period(NOV.start, NOV.end, 13)), TODAY)
    assert plan.edited and "13" in plan.edited and "10" in plan.edited
    assert ops_of(plan) == [(ADJUST, "2026-11-20", -1)]   # what overwriting would post


def test_a_line_we_created_mid_period_then_edited_by_hand_is_flagged():
    # we created the line on Nov 20 with 7 (its first step is that day, not the period's start);
    # someone added 3 in Autotask; the marketplace now says 9
    created = planner.plan_line(work([bp(TODAY, 7, 1)]), None, TODAY)
    expected = created.ops[0].expected_after
    assert expected == [["2026-11-20", 7]]
    plan = planner.plan_line(work([bp(TODAY, 9, 2)], expected=expected), line(Period(NOV.start, NOV.end, 10)), TODAY)
    assert plan.edited and "10" in plan.edited and "we last posted 7" in plan.edited
    ours = planner.plan_line(work([bp(TODAY, 9, 2)], expected=expected), line(Period(NOV.start, NOV.end, 7)), TODAY)
    assert ours.edited is None and ops_of(ours) == [(ADJUST, "2026-11-20", 2)]


def test_psa_edited_to_the_marketplace_value_is_not_a_conflict():
    plan = planner.plan_line(work([bp(TODAY, 12, 3)], expected=[["2026-11-01", 10]]),
                             line(Period(NOV.start, NOV.end, 12)), TODAY)
    assert plan.edited is None and plan.ops == []


def test_our_own_change_is_not_an_edit():
    plan = planner.plan_line(work([bp(TODAY, 12, 3)], expected=[["2026-11-01", 10]]), line(NOV), TODAY)
    assert plan.edited is None and ops_of(plan) == [(ADJUST, "2026-11-20", 2)]


def unknown_row(kind, qty_after=None, change=None, price=None, rid=9):
    return {"id": rid, "operation": kind, "effective_date": TODAY, "quantity_after": qty_after,
            "unit_change": change, "unit_price": price, "vendor_item_id": None}


def test_unknown_adjustment_found_applied_is_not_sent_again():
    u = unknown_row(ADJUST, qty_after=14, change=4)
    plan = planner.plan_line(work([bp(TODAY, 14, 3)], expected=[["2026-11-01", 10]], unknown=[u]),
                             line(Period(NOV.start, NOV.end, 14)), TODAY)
    assert plan.resolved == {9: (True, None)}
    assert plan.ops == [] and plan.edited is None


def test_unknown_adjustment_not_applied_is_recomputed():
    u = unknown_row(ADJUST, qty_after=14, change=4)
    plan = planner.plan_line(work([bp(TODAY, 14, 3)], expected=[["2026-11-01", 10]], unknown=[u]), line(NOV), TODAY)
    assert plan.resolved == {9: (False, None)}
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 4)]


def test_unknown_new_service_found_by_re_reading():
    u = unknown_row(ADD_SERVICE)
    plan = planner.plan_line(work([bp(TODAY, 5, 1)], unknown=[u]), line(Period(NOV.start, NOV.end, 0)), TODAY)
    assert plan.resolved == {9: (True, "555")}
    assert ops_of(plan) == [(ADJUST, "2026-11-20", 5)]


def test_unknown_price_change_resolved():
    u = unknown_row(PRICE, price=Decimal("21.50"))
    plan = planner.plan_line(work([bp(TODAY, 10, 2, price="21.50")], unknown=[u]),
                             line(NOV, adjusted="21.50"), TODAY)
    assert plan.resolved == {9: (True, "555")} and plan.ops == []


def test_expected_after_each_operation_tracks_the_running_state():
    plan = planner.plan_line(work([bp(TODAY, 14, 6), bp("2026-12-01", 8, 7)], expected=[["2026-11-01", 10]]),
                             line(NOV, DEC), TODAY)
    assert plan.expected == [["2026-11-01", 10], ["2026-12-01", 10]]
    assert plan.ops[0].expected_after == [["2026-11-01", 14], ["2026-12-01", 14]]
    assert plan.ops[1].expected_after == [["2026-11-01", 14], ["2026-12-01", 8]]


def test_back_dated_breakpoint_before_expected_history_is_not_an_edit():
    desired = [bp("2026-10-05", 3, 1), bp(TODAY, 10, 2)]
    octo = Period(D(2026, 10, 1), D(2026, 10, 31), 0)
    plan = planner.plan_line(work(desired, pending_from=D(2026, 10, 5), expected=[["2026-11-01", 10]]),
                             line(octo, NOV), TODAY)
    assert plan.edited is None
    # November's row counts October's new units too: from Nov 20 on it must say 10 again
    assert ops_of(plan) == [(ADJUST, "2026-10-05", 3), (ADJUST, "2026-11-20", -3)]
