"""services/connectwise/planner.py: additions of one product + desired schedule -> the fewest writes."""
import datetime as dt
from decimal import Decimal

from common.posting import keys, schedule
from common.posting.engine import GroupWork
from services.connectwise import planner
from services.connectwise.planner import ADD, CANCEL, PRICE, QUANTITY, ConnectWiseLine, CwAddition

D = dt.date
TODAY = D(2026, 11, 20)
NEXT = D(2026, 12, 1)
START = D(2026, 1, 1)


def bp(day, qty, version, price="20.00", cost="17.00"):
    return {"date": day.isoformat(), "quantity": qty, "unit_price": price, "unit_cost": cost,
            "version": version, "company_id": "c1"}


def work(desired, pending_from=TODAY, expected=None, unknown=(), overwrite_once=False):
    return GroupWork(tenant_id="t1", contract_id="100", service_id="7", company_id="c1", desired=list(desired),
                     desired_version=max(b["version"] for b in desired), pending_from=pending_from,
                     expected=expected, posted_horizon=None, edit_round=0, overwrite_once=overwrite_once,
                     vendor_line_id=None, seq=1, changed_at=None, failures=0, unknown=list(unknown))


def add(aid, qty, effective=START, cancelled=None, price="20.00", cost="17.00"):
    return CwAddition(aid, qty, Decimal(price), Decimal(cost), effective, cancelled)


def line(*additions):
    return ConnectWiseLine(tuple(additions))


def ops_of(plan):
    return [(op.kind, op.effective_date.isoformat(), op.params.get("addition_id"), op.quantity_before,
             op.quantity_after) for op in plan.ops]


def apply(state, plan, new_id=900):
    """What ConnectWise holds after the plan's writes (to check the plan converges)."""
    adds = {a.id: a for a in state.additions}
    for op in plan.ops:
        p = op.params
        if op.kind == ADD:
            adds[new_id] = CwAddition(new_id, p["quantity"], op.unit_price, op.unit_cost, op.effective_date,
                                      schedule._day(p["cancelled_date"]) if p["cancelled_date"] else None)
            new_id += 1
            continue
        a = adds[p["addition_id"]]
        if op.kind == QUANTITY:
            adds[a.id] = CwAddition(a.id, p["quantity"], a.unit_price, a.unit_cost, a.effective, a.cancelled)
        elif op.kind == CANCEL:
            day = schedule._day(p["cancelled_date"]) if p["cancelled_date"] else None
            adds[a.id] = CwAddition(a.id, a.quantity, a.unit_price, a.unit_cost, a.effective, day)
        elif op.kind == PRICE:
            adds[a.id] = CwAddition(a.id, a.quantity, op.unit_price, op.unit_cost or a.unit_cost, a.effective,
                                    a.cancelled)
    return line(*adds.values())


def converges(w, state):
    plan = planner.plan_line(w, state, TODAY)
    after = apply(state, plan)
    for b in schedule.pending(w.desired, w.pending_from):
        day = max(schedule._day(b["date"]), TODAY)
        assert planner.quantity_on(after.additions, day) == schedule.desired_at(w.desired, day)["quantity"]
    w.expected = plan.ops[-1].expected_after if plan.ops else plan.expected
    assert planner.plan_line(w, after, TODAY).ops == [], "a second plan on the result must be empty"
    return plan


def test_new_line_posts_one_addition_with_price_cost_and_date():
    plan = converges(work([bp(TODAY, 12, 1)]), line())
    assert ops_of(plan) == [(ADD, "2026-11-20", None, 0, 12)]
    op = plan.ops[0]
    assert (op.unit_price, op.unit_cost) == (Decimal("20.00"), Decimal("17.00"))
    assert op.params["creates_line"] and op.params["cancelled_date"] is None and op.params["quantity"] == 12
    assert plan.edited is None


def test_new_line_with_zero_quantity_writes_nothing():
    assert planner.plan_line(work([bp(TODAY, 0, 1)]), line(), TODAY).ops == []


def test_increase_patches_the_quantity_of_the_live_addition():
    plan = converges(work([bp(TODAY, 14, 3)]), line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-20", 55, 10, 14)]
    assert plan.ops[0].unit_change == 4 and plan.vendor_line_id == "55"


def test_decrease_from_the_next_period_cancels_the_addition_and_adds_a_new_one():
    plan = converges(work([bp(NEXT, 6, 4)], pending_from=NEXT), line(add(55, 10)))
    assert ops_of(plan) == [(CANCEL, "2026-12-01", 55, 10, 0), (ADD, "2026-12-01", None, 0, 6)]
    assert plan.ops[0].params["cancelled_date"] == "2026-12-01"


def test_decrease_credited_at_once_patches_the_quantity():
    plan = converges(work([bp(TODAY, 6, 4)]), line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-20", 55, 10, 6)]


def test_cancel_sets_the_cancelled_date_only():
    plan = converges(work([bp(NEXT, 0, 2)], pending_from=NEXT), line(add(55, 8)))
    assert ops_of(plan) == [(CANCEL, "2026-12-01", 55, 8, 0)]


def test_price_change_patches_unit_price_and_cost():
    plan = converges(work([bp(TODAY, 10, 2, price="22.50", cost="18.00")]), line(add(55, 10)))
    assert [(op.kind, op.unit_price, op.unit_cost) for op in plan.ops] == [(PRICE, Decimal("22.50"),
                                                                            Decimal("18.00"))]
    assert plan.ops[0].params["previous_price"] == "20.00"


def test_same_day_changes_collapse_into_one_patch():
    desired, _ = schedule.apply_event([bp(TODAY, 12, 1)], bp(TODAY, 15, 2))
    plan = converges(work(desired), line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-20", 55, 10, 15)]


def test_increase_today_and_decrease_next_period_bound_the_stretch():
    plan = converges(work([bp(TODAY, 12, 1), bp(NEXT, 6, 2)]), line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-20", 55, 10, 12), (CANCEL, "2026-12-01", 55, 12, 0),
                            (ADD, "2026-12-01", None, 0, 6)]


def test_new_line_with_a_bounded_first_stretch_posts_it_with_its_cancelled_date():
    plan = converges(work([bp(TODAY, 12, 1), bp(NEXT, 6, 2)]), line())
    assert ops_of(plan) == [(ADD, "2026-11-20", None, 0, 12), (ADD, "2026-12-01", None, 0, 6)]
    assert plan.ops[0].params["cancelled_date"] == "2026-12-01" and plan.ops[1].params["cancelled_date"] is None


def test_a_newer_event_undoing_a_future_decrease_uncancels_and_drops_the_future_addition():
    state = line(add(55, 10, cancelled=NEXT), add(56, 6, effective=NEXT))
    plan = converges(work([bp(TODAY, 10, 3)], expected=[[TODAY.isoformat(), 10], [NEXT.isoformat(), 6]]), state)
    assert ops_of(plan) == [(CANCEL, "2026-12-01", 56, 6, 0), (CANCEL, "2026-12-01", 55, 0, 10)]
    assert plan.ops[1].params["cancelled_date"] is None
    assert plan.edited is None


def test_a_future_addition_is_patched_rather_than_replaced():
    state = line(add(55, 10, cancelled=NEXT), add(56, 6, effective=NEXT))
    plan = converges(work([bp(NEXT, 4, 3)], pending_from=NEXT), state)
    assert ops_of(plan) == [(QUANTITY, "2026-12-01", 56, 6, 4)]


def test_keys_tell_apart_cancels_of_two_additions_on_one_day():
    state = line(add(55, 5), add(56, 5))
    plan = converges(work([bp(NEXT, 0, 2)], pending_from=NEXT), state)
    assert [op.kind for op in plan.ops] == [CANCEL, CANCEL]
    k = [keys.operation_key("connectwise", "t1", "100", "7", op, desired_version=2) for op in plan.ops]
    assert len(set(k)) == 2


def test_a_quantity_edited_by_hand_is_reported():
    w = work([bp(TODAY, 13, 2)], expected=[[TODAY.isoformat(), 12]])
    plan = planner.plan_line(w, line(add(55, 15)), TODAY)
    assert plan.edited and "15" in plan.edited and "12" in plan.edited and "13" in plan.edited
    assert ops_of(plan) == [(QUANTITY, "2026-11-20", 55, 15, 13)]     # what overwriting would post


def test_the_psa_already_at_the_desired_value_is_not_an_edit():
    w = work([bp(TODAY, 13, 2)], expected=[[TODAY.isoformat(), 12]])
    plan = planner.plan_line(w, line(add(55, 13)), TODAY)
    assert plan.edited is None and plan.ops == []


def test_a_second_addition_typed_in_by_hand_is_an_edit_and_overwriting_cancels_it():
    w = work([bp(TODAY, 12, 2)], expected=[[TODAY.isoformat(), 10]])
    state = line(add(55, 10), add(70, 3, effective=TODAY))
    plan = planner.plan_line(w, state, TODAY)
    assert plan.edited
    assert ops_of(plan) == [(CANCEL, "2026-11-20", 70, 13, 10), (QUANTITY, "2026-11-20", 55, 10, 12)]


def test_unknown_outcomes_are_resolved_from_the_read():
    unknown = [
        {"id": 1, "operation": ADD, "effective_date": TODAY, "quantity_after": 5,
         "params": {"quantity": 5, "max_id": 60}},
        {"id": 2, "operation": QUANTITY, "effective_date": TODAY, "params": {"addition_id": 55, "quantity": 14}},
        {"id": 3, "operation": CANCEL, "effective_date": NEXT, "params": {"addition_id": 55,
                                                                          "cancelled_date": NEXT.isoformat()}},
        {"id": 4, "operation": PRICE, "effective_date": TODAY, "params": {"addition_id": 55, "unit_price": "22.50"}},
        {"id": 5, "operation": QUANTITY, "effective_date": TODAY, "params": {"addition_id": 99, "quantity": 1}},
    ]
    state = line(add(55, 14, price="20.00"), add(61, 5, effective=TODAY))
    resolved = planner.resolve_unknown(unknown, state)
    assert resolved == {1: (True, "61"), 2: (True, "55"), 3: (False, "55"), 4: (False, "55"), 5: (False, None)}


def test_a_confirmed_unknown_write_is_not_mistaken_for_an_edit():
    expected_after = [[TODAY.isoformat(), 14]]
    unknown = [{"id": 2, "operation": QUANTITY, "effective_date": TODAY,
                "params": {"addition_id": 55, "quantity": 14, "expected_after": expected_after}}]
    w = work([bp(TODAY, 14, 3)], expected=[[TODAY.isoformat(), 10]], unknown=unknown)
    plan = planner.plan_line(w, line(add(55, 14)), TODAY)
    assert plan.resolved == {2: (True, "55")} and plan.edited is None and plan.ops == []


def test_stretches_that_ended_before_today_are_not_posted():
    w = work([bp(D(2026, 11, 10), 11, 1), bp(D(2026, 11, 15), 13, 2)], pending_from=D(2026, 11, 10))
    plan = converges(w, line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-15", 55, 10, 13)]


def test_a_retry_dated_today_still_sees_the_stretch_in_force():
    w = work([bp(D(2026, 11, 10), 13, 2)], pending_from=TODAY)
    plan = converges(w, line(add(55, 10)))
    assert ops_of(plan) == [(QUANTITY, "2026-11-10", 55, 10, 13)]     # the stretch's own date
