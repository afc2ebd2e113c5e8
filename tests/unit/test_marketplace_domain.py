import datetime as dt
from decimal import Decimal

import pytest

from common.events import load_event, make_event
from services.marketplace import domain, schemas


def test_new_customer_is_a_change():
    assert domain.customer_changed(None, domain.customer_snapshot({"id": "1", "name": "Acme "}))


def test_same_customer_is_not_a_change():
    snap = domain.customer_snapshot({"id": "1", "name": "Acme", "status": "active"})
    assert not domain.customer_changed(dict(snap), snap)


def test_renamed_customer_is_a_change():
    before = domain.customer_snapshot({"id": "1", "name": "Acme"})
    assert domain.customer_changed(before, domain.customer_snapshot({"id": "1", "name": "Acme Ltd"}))


# --- subscription lines ------------------------------------------------------------------------
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.timezone.utc)
T1 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
RENEWAL = "2027-01-05T10:00:00Z"
CATALOG = {
    "MPN-A": {"mpn": "MPN-A", "name": "Business Premium", "unit_cost": Decimal("18.70"), "currency": "USD"},
    "MPN-B": {"mpn": "MPN-B", "name": "Exchange Plan 1", "unit_cost": Decimal("3.40"), "currency": "EUR"},
}


def detail(*lines, status="active", customer="C1", renewal=RENEWAL, sid="S1", modified="2026-11-01T08:00:00Z"):
    """A subscription detail validated the way the client does it."""
    raw = {"id": sid, "customerId": customer, "status": status, "renewalStatus": "on",
           "creationDate": "2026-01-05T10:00:00Z", "renewalDate": renewal, "lastModifiedDate": modified,
           "totalPrice": "0.00",
           "products": [{"mpn": mpn, "name": f"name of {mpn}", "quantity": qty, "unitPrice": price}
                        for mpn, qty, price in lines]}
    return schemas.validate(schemas.SUBSCRIPTION_DETAIL, raw)


def snapshot_of(d, seen_at=T0):
    """The stored lines after applying a detail to an empty snapshot."""
    rows, _ = domain.plan_subscription({}, d, seen_at, CATALOG)
    return rows


def kinds(changes):
    return {c.mpn: c.change for c in changes}


def test_every_line_of_a_new_subscription_is_new_with_version_1():
    changes = domain.detect_line_changes({}, detail(("MPN-A", 12, "21.00"), ("MPN-B", 3, "4.00")), T0, CATALOG)
    assert kinds(changes) == {"MPN-A": "new", "MPN-B": "new"}
    a = next(c for c in changes if c.mpn == "MPN-A")
    assert a.previous is None and a.line["line_version"] == 1 and a.line["seen_at"] == T0
    assert a.line["quantity"] == 12 and a.line["unit_price"] == Decimal("21.0000")
    assert a.line["unit_cost"] == Decimal("18.7000") and a.line["currency"] == "USD"
    assert a.line["customer_id"] == "C1" and a.line["status"] == "active"
    assert a.line["renewal_date"] == dt.datetime(2027, 1, 5, 10, tzinfo=dt.timezone.utc)
    assert next(c for c in changes if c.mpn == "MPN-B").line["currency"] == "EUR"


def test_unchanged_detail_gives_no_change_even_when_money_is_spelled_differently():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    assert domain.detect_line_changes(old, detail(("MPN-A", 12, 21.0)), T1, CATALOG) == []
    assert domain.detect_line_changes(old, detail(("MPN-A", 12, "21")), T1, CATALOG) == []


def test_quantity_change_is_one_change_for_that_line_only():
    old = snapshot_of(detail(("MPN-A", 12, "21.00"), ("MPN-B", 3, "4.00")))
    changes = domain.detect_line_changes(old, detail(("MPN-A", 15, "21.00"), ("MPN-B", 3, "4.00")), T1, CATALOG)
    assert len(changes) == 1
    [c] = changes
    assert (c.mpn, c.change, c.line["quantity"], c.previous["quantity"]) == ("MPN-A", "quantity", 15, 12)
    assert c.line["line_version"] == 2 and c.line["seen_at"] == T1


@pytest.mark.parametrize("new, kind", [
    (detail(("MPN-A", 12, "21.00"), status="hold"), "status"),
    (detail(("MPN-A", 12, "19.99")), "price"),
    (detail(("MPN-A", 12, "21.00"), renewal="2028-01-05T10:00:00Z"), "renewal"),
    (detail(("MPN-A", 12, "21.00"), customer="C2"), "resync"),
])
def test_each_kind_of_change(new, kind):
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    assert kinds(domain.detect_line_changes(old, new, T1, CATALOG)) == {"MPN-A": kind}


def test_catalog_cost_or_currency_move_is_a_price_change():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    cheaper = {**CATALOG, "MPN-A": {**CATALOG["MPN-A"], "unit_cost": Decimal("17.00")}}
    assert kinds(domain.detect_line_changes(old, detail(("MPN-A", 12, "21.00")), T1, cheaper)) == {"MPN-A": "price"}
    in_eur = {**CATALOG, "MPN-A": {**CATALOG["MPN-A"], "currency": "EUR"}}
    assert kinds(domain.detect_line_changes(old, detail(("MPN-A", 12, "21.00")), T1, in_eur)) == {"MPN-A": "price"}


def test_when_several_fields_move_the_kind_follows_status_quantity_price_renewal():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    everything = detail(("MPN-A", 20, "25.00"), status="terminated", renewal="2028-01-05T10:00:00Z")
    assert kinds(domain.detect_line_changes(old, everything, T1, CATALOG)) == {"MPN-A": "status"}
    no_status = detail(("MPN-A", 20, "25.00"), renewal="2028-01-05T10:00:00Z")
    assert kinds(domain.detect_line_changes(old, no_status, T1, CATALOG)) == {"MPN-A": "quantity"}
    price_and_renewal = detail(("MPN-A", 12, "25.00"), renewal="2028-01-05T10:00:00Z")
    assert kinds(domain.detect_line_changes(old, price_and_renewal, T1, CATALOG)) == {"MPN-A": "price"}


def test_the_event_carries_the_full_current_state_whatever_the_kind():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    [c] = domain.detect_line_changes(old, detail(("MPN-A", 20, "25.00"), status="hold"), T1, CATALOG)
    event = domain.line_event(c)
    assert event == {"subscription_id": "S1", "mpn": "MPN-A", "customer_id": "C1", "change": "status",
                     "status": "hold", "quantity": 20, "previous_quantity": 12, "unit_price": Decimal("25.00"),
                     "unit_cost": Decimal("18.70"), "currency": "USD", "seen_at": "2026-11-02T09:00:00.000+00:00",
                     "line_version": 2}
    body = make_event("marketplace", "subscription_line_changed", "t-1", **event)  # valid per the catalog
    assert body["unit_price"] == "25.00" and body["unit_cost"] == "18.70"
    assert load_event("marketplace", "subscription_line_changed", body)["quantity"] == 20


def test_a_vanished_line_becomes_removed_with_quantity_0_once():
    old = snapshot_of(detail(("MPN-A", 12, "21.00"), ("MPN-B", 3, "4.00")))
    rows, changes = domain.plan_subscription(old, detail(("MPN-A", 12, "21.00")), T1, CATALOG)
    [c] = changes
    assert (c.mpn, c.change, c.line["status"], c.line["quantity"], c.previous["quantity"]) == \
        ("MPN-B", "status", "removed", 0, 3)
    assert c.line["unit_price"] == Decimal("4.0000") and c.line["line_version"] == 2
    old.update(rows)  # stored; the next sync sees it still missing: nothing more to say
    assert domain.detect_line_changes(old, detail(("MPN-A", 12, "21.00")), T1, CATALOG) == []


def test_a_removed_line_that_comes_back_is_a_status_change():
    old = snapshot_of(detail(("MPN-A", 12, "21.00"), ("MPN-B", 3, "4.00")))
    rows, _ = domain.plan_subscription(old, detail(("MPN-A", 12, "21.00")), T1, CATALOG)
    old.update(rows)
    [c] = domain.detect_line_changes(old, detail(("MPN-A", 12, "21.00"), ("MPN-B", 5, "4.00")), T1, CATALOG)
    assert (c.mpn, c.change, c.line["quantity"], c.previous["quantity"], c.line["line_version"]) == \
        ("MPN-B", "status", 5, 0, 3)


def test_a_subscription_gone_at_the_vendor_removes_every_line():
    old = snapshot_of(detail(("MPN-A", 12, "21.00"), ("MPN-B", 3, "4.00")))
    changes = domain.detect_line_changes(old, None, T1, CATALOG)
    assert {(c.mpn, c.line["status"], c.line["quantity"]) for c in changes} == {("MPN-A", "removed", 0),
                                                                               ("MPN-B", "removed", 0)}


def test_quantity_0_at_the_vendor_is_a_quantity_change_not_a_removal():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    [c] = domain.detect_line_changes(old, detail(("MPN-A", 0, "21.00")), T1, CATALOG)
    assert (c.change, c.line["status"], c.line["quantity"]) == ("quantity", "active", 0)


def test_a_renamed_line_is_written_without_an_event():
    old = snapshot_of(detail(("MPN-A", 12, "21.00")))
    renamed = detail(("MPN-A", 12, "21.00"))
    renamed["products"][0]["name"] = "Microsoft 365 Business Premium (NCE)"
    rows, changes = domain.plan_subscription(old, renamed, T1, CATALOG)
    assert changes == [] and rows["MPN-A"]["name"] == "Microsoft 365 Business Premium (NCE)"
    assert rows["MPN-A"]["line_version"] == 1 and rows["MPN-A"]["seen_at"] == T0


def test_two_lines_with_one_mpn_cannot_be_a_snapshot():
    with pytest.raises(domain.InvalidDetail) as err:
        domain.plan_subscription({}, detail(("MPN-A", 1, "1.00"), ("MPN-A", 2, "1.00")), T0, CATALOG)
    assert err.value.field == "products[1].mpn" and "twice" in err.value.reason


def test_unknown_product_gives_no_cost_and_usd():
    [c] = domain.detect_line_changes({}, detail(("MPN-X", 1, "5.00")), T0, CATALOG)
    assert c.line["unit_cost"] is None and c.line["currency"] == "USD"
    assert domain.line_event(c)["unit_cost"] is None


def test_reprice_lines_after_a_catalog_cost_move():
    lines = [{**row, "subscription_id": sid} for sid in ("S1", "S2")
             for row in snapshot_of(detail(("MPN-A", 4, "21.00"), sid=sid)).values()]
    lines.append({**lines[0], "subscription_id": "S3", "status": "removed", "quantity": 0})
    changes = domain.reprice_lines(lines, {"mpn": "MPN-A", "unit_cost": Decimal("17.5"), "currency": "USD"}, T1)
    assert [(c.subscription_id, c.change, c.line["unit_cost"], c.line["line_version"]) for c in changes] == \
        [("S1", "price", Decimal("17.5000"), 2), ("S2", "price", Decimal("17.5000"), 2)]
    assert domain.reprice_lines(lines[:2], {"mpn": "MPN-A", "unit_cost": Decimal("18.70"), "currency": "USD"},
                                T1) == []


# --- money, products ---------------------------------------------------------------------------
def test_money_keeps_four_places_and_shows_cents_when_it_can():
    assert domain.money("22") == Decimal("22.0000") and domain.money(22.0) == domain.money("22.00")
    assert domain.money("0.00125") == Decimal("0.0013")  # half-up at the 4th place
    assert str(domain.money_out("22.0000")) == "22.00" and str(domain.money_out("0.0125")) == "0.0125"
    assert domain.money(None) is None and domain.money_out(None) is None


PRODUCT = {"id": "3000001", "mpn": "MPN-A", "name": "Business Premium", "vendor": "Microsoft",
           "serviceName": "Microsoft 365", "unitPrice": "22.00", "unitCost": "18.70",
           "prices": [{"currency": "EUR", "amount": "20.24"}, {"currency": "USD", "amount": "22.00"}],
           "costs": [], "billingPeriod": {"type": "month", "duration": 1},
           "subscriptionPeriod": {"type": "year", "duration": 1}, "billingModel": "prepaid"}


def product(**changes):
    return schemas.validate(schemas.PRODUCT, {**PRODUCT, **changes})


def test_product_snapshot_and_its_event():
    snap = domain.product_snapshot(product())
    assert snap["currency"] == "USD"  # the price entry matching unitPrice, not the first one
    assert snap["billing_period"] == "P1M" and snap["unit_cost"] == Decimal("18.7000")
    event = make_event("marketplace", "product_changed", "t", **domain.product_event(snap))
    assert (event["mpn"], event["unit_price"], event["unit_cost"], event["billing_period"]) == \
        ("MPN-A", "22.00", "18.70", "P1M")


def test_product_changes():
    before = domain.product_snapshot(product())
    assert domain.product_changed(None, before)
    assert not domain.product_changed(before, domain.product_snapshot(product(unitPrice=22.0)))
    assert not domain.product_changed(before, domain.product_snapshot(product(serviceName="M365")))
    renamed = domain.product_snapshot(product(name="Business Premium (NCE)"))
    assert domain.product_changed(before, renamed) and not domain.product_cost_moved(before, renamed)
    dearer = domain.product_snapshot(product(unitCost="19.00"))
    assert domain.product_changed(before, dearer) and domain.product_cost_moved(before, dearer)
    assert not domain.product_cost_moved(None, dearer)  # a new product has no lines to re-price


@pytest.mark.parametrize("period, code", [
    ({"type": "month", "duration": 1}, "P1M"), ({"type": "year", "duration": 1}, "P1Y"),
    ({"type": "Month", "duration": 3}, "P3M"), ({"type": "fortnight", "duration": 1}, "1 fortnight"),
    (None, None)])
def test_billing_period_codes(period, code):
    assert domain.billing_period_code(period) == code


def test_product_currency_fallbacks():
    assert domain.product_currency({"unitPrice": Decimal("5"), "prices": [{"currency": "eur", "amount": "4"}]}) == "EUR"
    assert domain.product_currency({"unitPrice": None, "prices": []}) == "USD"


# --- which details to fetch ----------------------------------------------------------------------
SUMMARY = {"id": "S1", "lastModifiedDate": T0}


@pytest.mark.parametrize("mark, full, full_since, expected", [
    (None, False, None, True),  # new to us
    (domain.SubscriptionMark(T0), False, None, False),  # in step: skip
    (domain.SubscriptionMark(T0 - dt.timedelta(seconds=1)), False, None, True),  # moved
    (domain.SubscriptionMark(None), False, None, True),  # never applied
    (domain.SubscriptionMark(T0, T0, unlisted_at=T0), False, None, True),  # back in the listing
    (domain.SubscriptionMark(T0, T0), True, None, True),  # full: everything
    (domain.SubscriptionMark(T0, T1), True, T0, False),  # resumed full: already fetched since it began
    (domain.SubscriptionMark(T0, T0 - dt.timedelta(hours=1)), True, T0, True),  # resumed full: not yet
    # fetched within the stamp's second: a later change in that second keeps the stamp, so once more
    (domain.SubscriptionMark(T0, T0 + dt.timedelta(seconds=0.9)), False, None, True),
    (domain.SubscriptionMark(T0, T0 + dt.timedelta(seconds=1.99)), False, None, True),
    (domain.SubscriptionMark(T0, T0 - dt.timedelta(seconds=3)), False, None, True),  # vendor clock ahead
    (domain.SubscriptionMark(T0, T0 + dt.timedelta(seconds=2)), False, None, False),  # settled
    (domain.SubscriptionMark(T0, T0 + dt.timedelta(minutes=5)), False, None, False),
])
def test_needs_detail(mark, full, full_since, expected):
    assert domain.needs_detail(SUMMARY, mark, full=full, full_since=full_since) is expected


def test_needs_detail_compares_instants_not_spellings():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert not domain.needs_detail(SUMMARY, domain.SubscriptionMark(T0.astimezone(plus_two)))


# --- scheduling --------------------------------------------------------------------------------
NOW = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.timezone.utc)


def runs(latest=None, first=None, last_full=None, active=False):
    return domain.TenantRuns(active=active, latest=latest, first_queued_at=first, last_full_queued_at=last_full)


def ago(**kw):
    return NOW - dt.timedelta(**kw)


def test_a_tenant_never_synced_is_due_at_once():
    assert domain.sync_due(NOW, runs()) == domain.Due("incremental", "schedule")


def test_nothing_is_queued_while_a_run_is_queued_or_running():
    assert domain.sync_due(NOW, runs({"outcome": "running", "queued_at": ago(days=3)}, ago(days=9), active=True)) is None


def test_incremental_every_interval_after_the_last_run_was_queued():
    latest = {"kind": "incremental", "outcome": "ok", "queued_at": ago(minutes=14)}
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=12))) is None
    latest["queued_at"] = ago(minutes=15)
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=12))) == domain.Due("incremental", "schedule")
    latest["outcome"] = "failed"  # an outage is retried at the normal pace
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=12))).kind == "incremental"


def test_nightly_full_run_once_after_the_hour_and_caught_up_when_missed():
    latest = {"kind": "incremental", "outcome": "ok", "queued_at": ago(minutes=1)}
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=12)), full_hour=2) is None  # 02:00 done
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=13)), full_hour=2) == domain.Due("full", "nightly")
    assert domain.sync_due(NOW, runs(latest, ago(days=9), None), full_hour=2).kind == "full"
    # before today's hour, yesterday's slot counts
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=13)), full_hour=15) is None
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=24)), full_hour=15).kind == "full"


def test_a_tenant_whose_first_run_came_after_the_slot_waits_for_the_next_night():
    latest = {"kind": "incremental", "outcome": "ok", "queued_at": ago(minutes=1)}
    assert domain.sync_due(NOW, runs(latest, ago(hours=1), None), full_hour=2) is None


def test_a_throttled_run_resumes_after_the_vendors_wait():
    latest = {"kind": "incremental", "outcome": "throttled", "queued_at": ago(minutes=10),
              "finished_at": ago(seconds=100), "retry_after": 120}
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=1))) is None
    latest["retry_after"] = 90
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=1))) == domain.Due("incremental", "resume")
    latest["retry_after"] = None  # at least throttle_retry_seconds
    assert domain.sync_due(NOW, runs(latest, ago(days=9), ago(hours=1)), throttle_retry_seconds=120) is None


def test_a_throttled_full_run_resumes_as_full_from_where_it_began():
    began = ago(hours=2)
    latest = {"kind": "full", "outcome": "throttled", "queued_at": began, "finished_at": ago(minutes=5),
              "retry_after": 30, "full_since": began}
    assert domain.sync_due(NOW, runs(latest, ago(days=9), began)) == domain.Due("full", "resume", began)


def test_run_outcome():
    assert domain.run_outcome({"quarantined": 0, "details_failed": 0}) == "ok"
    assert domain.run_outcome({"quarantined": 1}) == "partial"
    assert domain.run_outcome({"details_failed": 2}) == "partial"
