"""The mapping service's planner: line history replayed into a contract line's timeline, and the
LineDesired events ("from date D on, the line says X") that follow from it."""
import datetime as dt
from decimal import Decimal as D

from services.mapping import planner as P
from services.mapping.domain import BillingSettings, LineMapping, PriceRule, SubscriptionLine

KEY = ("C1", "S1")
MAPPED = LineMapping("mapped", "mapped", "mapped", "co1", "S1", "C1")
TERMS = P.Terms(dt.date(2026, 1, 15), 1)     # periods 15th..14th
TODAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc)
D2, D10, D20 = dt.date(2026, 11, 2), dt.date(2026, 11, 10), dt.date(2026, 11, 20)


def state(version, quantity, day, status="active", hour=9, price="22.00", cost="18.00"):
    return SubscriptionLine("sub1", "mpn1", "cust1", quantity, status, D(price), D(cost),
                            dt.datetime.combine(day, dt.time(hour), tzinfo=dt.timezone.utc), "USD", version)


def step(timeline, states, rule=PriceRule("msrp"), mapping=MAPPED, settings=BillingSettings(), **line):
    """Plan, apply the posting mode; returns (new timeline, events sent as (date, qty, price), outcome)."""
    li = P.LineInput(("sub1", "mpn1"), states, mapping, rule, None, **line)
    plan = P.plan_with_rewind(KEY, timeline=timeline, lines=[li], settings=P.PlanSettings(), terms=TERMS,
                              today=TODAY, now=NOW)
    outcome = P.split_for_approval(plan, timeline, settings)
    sent = P.schedule_diff(P.build_schedule([], timeline), P.build_schedule([], outcome.timeline))
    return outcome.timeline, [(b["date"], b["quantity"], b["unit_price"]) for b in sent], outcome


def test_increase_on_the_day_seen_decrease_from_the_next_period():
    history = [state(1, 5, D2)]
    timeline, sent, _ = step([], history)
    assert sent == [("2026-11-02", 5, "22.00")]
    history.append(state(2, 8, D10))
    timeline, sent, _ = step(timeline, history)
    assert sent == [("2026-11-10", 8, "22.00")]
    history.append(state(3, 6, D20))
    timeline, sent, _ = step(timeline, history)
    assert sent == [("2026-12-15", 6, "22.00")]
    history.append(state(4, 6, D20, status="hold", hour=15))
    _, sent, _ = step(timeline, history)
    assert sent == [("2026-12-15", 0, "22.00")]      # hold counts 0; same day as the decrease


def test_same_day_changes_collapse_and_an_undo_is_sent():
    history = [state(1, 5, D2), state(2, 8, D10)]
    timeline, _, _ = step([], history[:1])
    timeline, _, _ = step(timeline, history)
    history.append(state(3, 6, D10, hour=15))      # 5 -> 8 -> 6 on one day: one increase of 1
    timeline, sent, _ = step(timeline, history)
    assert sent == [("2026-11-10", 6, "22.00")]
    assert [cp["kind"] for cp in timeline] == ["new_line", "increase"]
    history.append(state(4, 5, D10, hour=16))      # back to 5 the same day: the increase is undone
    timeline, sent, _ = step(timeline, history)
    assert sent == [("2026-11-10", 5, "22.00")]
    assert [cp["kind"] for cp in timeline] == ["new_line"]


def test_a_line_mapped_late_keeps_the_dates_it_would_have_had():
    history = [state(1, 5, D2), state(2, 8, D10), state(3, 6, D20)]
    _, sent, _ = step([], history)
    assert sent == [("2026-11-02", 5, "22.00"), ("2026-11-10", 8, "22.00"), ("2026-12-15", 6, "22.00")]


def test_a_stale_version_changes_nothing_and_a_replay_sends_nothing():
    history = [state(1, 5, D2), state(2, 8, D10)]
    timeline, _, _ = step([], history)
    again, sent, _ = step(timeline, history)
    assert sent == [] and again == timeline


def test_a_price_rule_change_moves_the_price_from_the_next_period():
    timeline, _, _ = step([], [state(1, 5, D2)])
    timeline, sent, _ = step(timeline, [state(1, 5, D2)], rule=PriceRule("fixed", fixed_price=D("19.99")))
    assert sent == [("2026-12-15", 5, "19.99")]
    assert timeline[-1]["kind"] == "price_change" and timeline[-1]["day"] == "2026-11-25"


def test_a_line_that_was_billed_elsewhere_starts_today():
    _, sent, _ = step([], [state(1, 5, D2)], billed=("C9", "S9"), billed_version=1)
    assert sent == [("2026-11-25", 5, "22.00")]


def test_a_line_that_left_lowers_the_rest_today_and_none_left_sends_nothing():
    other = LineMapping("mapped", "mapped", "mapped", "co1", "S1", "C1")
    a = P.LineInput(("a", "m"), [SubscriptionLine("a", "m", "cust1", 5, "active", D("10"), D("8"), NOW.replace(day=2), "USD", 1)],
                    other, PriceRule("msrp"))
    b = P.LineInput(("b", "m"), [SubscriptionLine("b", "m", "cust1", 3, "active", D("10"), D("8"), NOW.replace(day=2), "USD", 1)],
                    other, PriceRule("msrp"))
    plan = P.plan_group(KEY, timeline=[], lines=[a, b], settings=P.PlanSettings(), terms=TERMS, today=TODAY, now=NOW)
    timeline = P.split_for_approval(plan, [], BillingSettings()).timeline
    assert timeline[-1]["quantity"] == 8
    b.mapping = LineMapping("mapped", "mapped", "ignored", "co1", "S1", None)
    plan = P.plan_group(KEY, timeline=timeline, lines=[a, b], settings=P.PlanSettings(), terms=TERMS, today=TODAY,
                        now=NOW)
    assert [(cp["day"], cp["kind"], cp["quantity"]) for cp in plan.new] == [("2026-11-25", "decrease", 5)]
    a.mapping = b.mapping
    plan = P.plan_group(KEY, timeline=timeline, lines=[a, b], settings=P.PlanSettings(), terms=TERMS, today=TODAY,
                        now=NOW)
    assert plan.new == [] and plan.status == "idle"   # a missing desired state means "unknown", never 0


def test_review_mode_waits_and_threshold_mode_posts_small_changes():
    history = [state(1, 5, D2)]
    timeline, _, _ = step([], history)
    history.append(state(2, 9, D10))
    same, sent, outcome = step(timeline, history, settings=BillingSettings(posting_mode="review"))
    assert sent == [] and same == timeline and outcome.waiting
    assert [(cp["day"], cp["quantity"]) for cp in outcome.pending] == [("2026-11-10", 9)]
    _, sent, outcome = step(timeline, history, settings=BillingSettings(posting_mode="threshold", threshold_units=2))
    assert sent == [] and outcome.reasons == ["change of 4 units exceeds the threshold of 2 units"]
    _, sent, outcome = step(timeline, history, settings=BillingSettings(posting_mode="threshold", threshold_units=4))
    assert sent == [("2026-11-10", 9, "22.00")] and not outcome.waiting


def test_approving_with_a_date_moves_every_operation_to_it():
    pending = [{"day": "2026-11-10", "ops": [{"date": "2026-11-10", "quantity": 9}, {"date": "2026-12-15", "quantity": 9}]}]
    moved = P.with_override(pending, dt.date(2026, 11, 12))
    assert [op["date"] for op in moved[0]["ops"]] == ["2026-11-12", "2026-11-12"]
    assert P.with_override(pending, None) is pending


def test_schedule_diff_sends_from_the_first_difference_on():
    bp = lambda date, q: {"date": date, "quantity": q, "unit_price": "1.00", "unit_cost": "0.50", "lines": []}
    old = [bp("2026-11-02", 5), bp("2026-12-15", 3)]
    assert P.schedule_diff(old, old) == []
    new = [bp("2026-11-02", 5), bp("2026-11-21", 7)]
    assert [(b["date"], b["quantity"]) for b in P.schedule_diff(old, new)] == [("2026-11-21", 7)]
    assert [(b["date"], b["quantity"]) for b in P.schedule_diff(old, [])] == [("2026-11-02", 0)]


def test_truncating_the_timeline_keeps_its_schedule():
    history = [state(v, v, dt.date(2026, 1, 1) + dt.timedelta(days=7 * v)) for v in range(1, 40)]
    timeline, _, _ = step([], history)
    origin, kept = P.truncate([], timeline)
    assert len(kept) == P.MAX_CHECKPOINTS
    assert P.build_schedule(origin, kept)[-1] == P.build_schedule([], timeline)[-1]
