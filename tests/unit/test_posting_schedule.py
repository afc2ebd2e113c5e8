"""common.posting.schedule: LineDesired events folded into a line's desired schedule."""
import datetime as dt
import itertools

from common.posting import schedule


def bp(day, qty, version):
    return {"date": day, "quantity": qty, "unit_price": "10.00", "unit_cost": "8.50", "version": version,
            "company_id": "c"}


def fold(events):
    out = []
    for e in events:
        out, _ = schedule.apply_event(out, e)
    return out


def test_a_newer_event_replaces_the_tail_from_its_date():
    s = fold([bp("2026-11-20", 12, 1), bp("2026-12-01", 8, 2), bp("2026-11-25", 15, 3)])
    assert [(b["date"], b["quantity"]) for b in s] == [("2026-11-20", 12), ("2026-11-25", 15)]


def test_arrival_order_does_not_matter():
    events = [bp("2026-11-20", 12, 1), bp("2026-12-01", 8, 2), bp("2026-11-25", 15, 3), bp("2026-11-20", 11, 4)]
    results = {tuple((b["date"], b["quantity"]) for b in fold(p)) for p in itertools.permutations(events)}
    assert results == {(("2026-11-20", 11),)}


def test_duplicates_and_covered_events_are_not_accepted():
    s = fold([bp("2026-11-20", 12, 5)])
    assert schedule.apply_event(s, bp("2026-11-20", 12, 5)) == (s, False)
    s2, accepted = schedule.apply_event(s, bp("2026-11-25", 3, 4))   # older, and v5 covers 11-25
    assert not accepted and s2 == s
    s3, accepted = schedule.apply_event(s, bp("2026-11-01", 3, 4))   # older but earlier: still counts
    assert accepted and [b["quantity"] for b in s3] == [3, 12]


def test_same_day_collapse_keeps_the_last_state():
    s = fold([bp("2026-11-20", 12, 1), bp("2026-11-20", 14, 2), bp("2026-11-20", 13, 3)])
    assert [(b["quantity"], b["version"]) for b in s] == [(13, 3)]


def test_breakpoint_from_a_loaded_event():
    e = {"effective_date": dt.date(2026, 12, 1), "quantity": 4, "unit_price": "21.99", "unit_cost": "18.7",
         "desired_version": 9, "company_id": "77"}
    assert schedule.breakpoint_from_event(e) == {"date": "2026-12-01", "quantity": 4, "unit_price": "21.99",
                                                 "unit_cost": "18.7", "version": 9, "company_id": "77"}


def test_desired_at_pending_and_prune():
    s = fold([bp("2026-10-01", 1, 1), bp("2026-11-01", 2, 2), bp("2026-12-01", 3, 3)])
    assert schedule.desired_at(s, "2026-11-15")["quantity"] == 2
    assert schedule.desired_at(s, "2026-09-30") is None
    assert [b["quantity"] for b in schedule.pending(s, dt.date(2026, 11, 2))] == [3]
    assert [b["quantity"] for b in schedule.prune(s, dt.date(2026, 11, 15))] == [2, 3]


def test_step_functions():
    steps = [["2026-11-01", 10], ["2026-12-01", 6]]
    assert schedule.step_at(steps, "2026-10-31") is None
    assert schedule.step_at(steps, "2026-11-30") == 10
    assert schedule.step_at(steps, "2027-03-01") == 6
    assert schedule.merge_steps(steps, [["2026-12-01", 8]]) == [["2026-11-01", 10], ["2026-12-01", 8]]
    assert schedule.merge_steps(None, [["2026-12-01", 8]]) == [["2026-12-01", 8]]
