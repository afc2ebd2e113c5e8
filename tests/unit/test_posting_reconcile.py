"""When a tenant's nightly PSA re-read is due (common/posting/reconcile.py)."""
import datetime as dt

from common.posting.reconcile import due

UTC = dt.timezone.utc


def at(day, hour):
    return dt.datetime(2026, 11, day, hour, 5, tzinfo=UTC)


def test_due_once_a_day_after_the_hour():
    assert not due(at(25, 2), None, 3)                          # before the hour: not yet
    assert due(at(25, 3), None, 3)                              # never ran: due
    assert due(at(25, 3), dt.date(2026, 11, 24), 3)             # ran yesterday: due again
    assert not due(at(25, 23), dt.date(2026, 11, 25), 3)        # ran today: not again
    assert due(at(26, 9), dt.date(2026, 11, 24), 3)             # a missed night is caught up later in the day


def test_hour_24_never_starts_by_itself():
    assert not any(due(at(25, h), None, 24) for h in range(24))


def test_lines_behind_the_mapping_services_schedule_are_asked_for_again():
    from common.posting.reconcile import behind

    theirs = [["C1", "S1", 4], ["C1", "S2", 2], ["C2", "S1", 7], ["C3", "S1", 1]]
    ours = {("C1", "S1"): 4, ("C1", "S2"): 1, ("C2", "S1"): 9}
    # in step; one event missed; ours ahead (a newer event already here); never heard of at all
    assert behind(theirs, ours) == [["C1", "S2"], ["C3", "S1"]]
    assert behind([], ours) == []
