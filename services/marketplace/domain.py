"""Marketplace rules with no I/O of their own: what counts as a change worth announcing, and when a
tenant's next sync is due.

Records come in as validated vendor dicts (services/marketplace/schemas.py: camelCase keys, money
as Decimal, dates as aware UTC datetimes). Snapshots (what we keep and compare) are snake_case
dicts shaped like the table rows in models.py.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Mapping

CUSTOMER_FIELDS = ("name", "status", "domain")
PRODUCT_FIELDS = ("name", "vendor", "unit_price", "unit_cost", "currency", "billing_period")
LINE_FIELDS = ("customer_id", "name", "quantity", "status", "unit_price", "unit_cost", "currency", "renewal_date")
# docs/design/sync-and-mapping.md: when several fields move at once, `change` names the first of these
CHANGE_ORDER = ("status", "quantity", "price", "renewal")
DEFAULT_CURRENCY = "USD"
MONEY_PLACES = Decimal("0.0001")
CENT = Decimal("0.01")
_PERIOD_UNITS = {"year": "Y", "years": "Y", "month": "M", "months": "M", "week": "W", "weeks": "W",
                 "day": "D", "days": "D"}


class InvalidDetail(ValueError):
    """A subscription detail that validated field by field but cannot be a snapshot (e.g. two lines
    with one MPN). Quarantined like a malformed record."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# --- values ------------------------------------------------------------------------------------
def money(value) -> Decimal | None:
    """An amount as stored (Numeric(18, 4)): quantized half-up to 4 places, so "22.00", 22.0 and
    Decimal("22.0000") are the same value and storing never makes a value look changed."""
    if value is None:
        return None
    return Decimal(str(value)).quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


def money_out(value) -> Decimal | None:
    """An amount for events and screens: two places when the sub-cent digits are zero ("22.00"),
    otherwise the four we keep ("0.0125")."""
    amount = money(value)
    if amount is None:
        return None
    return amount.quantize(CENT) if amount == amount.quantize(CENT) else amount


def billing_period_code(period) -> str | None:
    """{"type": "month", "duration": 1} -> "P1M" (ISO 8601 duration); unknown units keep their words."""
    if not period:
        return None
    unit = str(period.get("type") or "").strip().lower()
    duration = period.get("duration")
    if unit in _PERIOD_UNITS and isinstance(duration, int):
        return f"P{duration}{_PERIOD_UNITS[unit]}"
    return f"{duration} {unit}".strip()[:20] or None


def utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


# --- customers ---------------------------------------------------------------------------------
def customer_snapshot(record):
    """The part of a marketplace customer record we keep and compare."""
    return {"name": record["name"].strip(), "status": record.get("status") or "active",
            "domain": (record.get("domain") or None)}


def customer_changed(previous, current):
    """True when a customer is new or one of the fields we bill by moved."""
    if previous is None:
        return True
    return any(previous.get(f) != current.get(f) for f in CUSTOMER_FIELDS)


# --- products ----------------------------------------------------------------------------------
def product_currency(record) -> str:
    """The currency of the product's unitPrice: the price entry with that amount, else the first
    price entry, else USD (the vendor's unitPrice carries no currency of its own)."""
    prices = record.get("prices") or []
    unit_price = record.get("unitPrice")
    for entry in prices:
        if unit_price is not None and money(entry.get("amount")) == money(unit_price):
            return str(entry["currency"]).upper()[:3]
    if prices:
        return str(prices[0]["currency"]).upper()[:3]
    return DEFAULT_CURRENCY


def product_snapshot(record) -> dict:
    return {"mpn": record["mpn"], "product_id": str(record["id"]), "name": record["name"].strip(),
            "vendor": record.get("vendor"), "service_name": record.get("serviceName"),
            "unit_price": money(record.get("unitPrice")), "unit_cost": money(record.get("unitCost")),
            "currency": product_currency(record), "billing_period": billing_period_code(record.get("billingPeriod")),
            "billing_model": record.get("billingModel")}


def product_changed(previous, current) -> bool:
    if previous is None:
        return True
    return any(_same_kind(previous.get(f)) != _same_kind(current.get(f)) for f in PRODUCT_FIELDS)


def product_cost_moved(previous, current) -> bool:
    """The catalog cost (or its currency) of a known product moved: its lines' unit_cost moves too."""
    return previous is not None and (money(previous.get("unit_cost")) != money(current.get("unit_cost"))
                                     or previous.get("currency") != current.get("currency"))


def product_event(snapshot) -> dict:
    """The `product_changed` payload (common/events.py ProductChanged) of a product snapshot."""
    return {"mpn": snapshot["mpn"], "name": snapshot["name"], "vendor": snapshot.get("vendor"),
            "unit_price": money_out(snapshot.get("unit_price")), "unit_cost": money_out(snapshot.get("unit_cost")),
            "currency": snapshot.get("currency") or DEFAULT_CURRENCY, "billing_period": snapshot.get("billing_period")}


def _same_kind(value):
    return money(value) if isinstance(value, (Decimal, float, int)) and not isinstance(value, bool) else value


# --- subscription lines ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LineChange:
    """One changed line: `line` is its full new state (what the event carries), `previous` the
    snapshot it replaces (None for a new line)."""

    subscription_id: str
    mpn: str
    change: str
    line: dict
    previous: dict | None


def line_states(detail, catalog: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """The current state of every line of a validated subscription detail, by MPN (no version yet).

    The detail has no cost or currency: both come from the catalog product with that MPN
    (unit_cost None and USD when the product is unknown). A line's status is its subscription's.
    """
    catalog = catalog or {}
    states: dict[str, dict] = {}
    for index, item in enumerate(detail["products"]):
        mpn = item["mpn"]
        if mpn in states:
            raise InvalidDetail(f"products[{index}].mpn", f"MPN {mpn} appears twice in one subscription")
        product = catalog.get(mpn) or {}
        states[mpn] = {
            "customer_id": str(detail["customerId"]),
            "name": item.get("name") or product.get("name"),
            "quantity": int(item["quantity"]),
            "status": detail["status"],
            "unit_price": money(item.get("unitPrice")),
            "unit_cost": money(product.get("unit_cost")),
            "currency": product.get("currency") or DEFAULT_CURRENCY,
            "renewal_date": utc(detail.get("renewalDate")),
        }
    return states


def vanished_state(old: dict) -> dict:
    """A line that is no longer in its subscription's detail (or whose subscription is gone)."""
    return {**{f: old.get(f) for f in LINE_FIELDS}, "status": "removed", "quantity": 0}


def change_kind(old: dict | None, new: dict) -> str | None:
    """new | status | quantity | price | renewal (first that moved, in that order) | resync (only
    the customer moved) | None (nothing an event carries moved)."""
    if old is None:
        return "new"
    moved = {
        "status": old.get("status") != new.get("status"),
        "quantity": old.get("quantity") != new.get("quantity"),
        "price": (money(old.get("unit_price")) != money(new.get("unit_price"))
                  or money(old.get("unit_cost")) != money(new.get("unit_cost"))
                  or (old.get("currency") or DEFAULT_CURRENCY) != (new.get("currency") or DEFAULT_CURRENCY)),
        "renewal": utc(old.get("renewal_date")) != utc(new.get("renewal_date")),
    }
    for kind in CHANGE_ORDER:
        if moved[kind]:
            return kind
    if old.get("customer_id") != new.get("customer_id"):
        return "resync"  # the line moved to another customer: consumers re-read the full state
    return None


def plan_subscription(old_lines: Mapping[str, dict], detail, seen_at: dt.datetime,
                      catalog: Mapping[str, dict] | None = None,
                      subscription_id: str | None = None) -> tuple[dict[str, dict], list[LineChange]]:
    """What to write for one fetched subscription: (rows by MPN, changes).

    rows: every line whose stored row must be written (changed, or only its name moved), with
    line_version and seen_at set; changes: one LineChange per line whose event-carried state moved,
    version + 1 each. `detail=None` means the subscription is gone: every line becomes removed/0.
    """
    if subscription_id is None:
        subscription_id = detail["id"] if detail is not None else \
            next((old["subscription_id"] for old in old_lines.values()), "")
    sid = str(subscription_id)
    current = line_states(detail, catalog) if detail is not None else {}
    for mpn, old in old_lines.items():
        if mpn not in current:
            current[mpn] = vanished_state(old)
    rows: dict[str, dict] = {}
    changes: list[LineChange] = []
    for mpn, state in current.items():
        old = old_lines.get(mpn)
        kind = change_kind(old, state)
        if kind is not None:
            row = {**state, "subscription_id": sid, "mpn": mpn,
                   "line_version": (old["line_version"] + 1) if old else 1, "seen_at": seen_at}
            rows[mpn] = row
            changes.append(LineChange(sid, mpn, kind, row, dict(old) if old else None))
        elif old.get("name") != state.get("name") and state.get("name") is not None:
            rows[mpn] = {**old, "name": state["name"], "subscription_id": sid, "mpn": mpn}
    return rows, changes


def detect_line_changes(old_lines: Mapping[str, dict], detail, seen_at: dt.datetime,
                        catalog: Mapping[str, dict] | None = None) -> list[LineChange]:
    """The changed lines of one subscription detail against its snapshot (see plan_subscription)."""
    return plan_subscription(old_lines, detail, seen_at, catalog)[1]


def reprice_lines(lines: list[dict], product: dict, seen_at: dt.datetime) -> list[LineChange]:
    """The catalog cost of a product moved: each of its lines (rows with subscription_id and mpn)
    whose unit_cost or currency now differs gets a `price` change. Removed lines stay as they are."""
    changes = []
    for old in lines:
        if old.get("status") == "removed":
            continue
        new = {**{f: old.get(f) for f in LINE_FIELDS}, "unit_cost": money(product.get("unit_cost")),
               "currency": product.get("currency") or DEFAULT_CURRENCY}
        kind = change_kind(old, new)
        if kind is None:
            continue
        row = {**new, "subscription_id": old["subscription_id"], "mpn": old["mpn"],
               "line_version": old["line_version"] + 1, "seen_at": seen_at}
        changes.append(LineChange(old["subscription_id"], old["mpn"], kind, row, dict(old)))
    return changes


def line_event(change: LineChange) -> dict:
    """The `subscription_line_changed` payload (common/events.py SubscriptionLineChanged)."""
    line = change.line
    seen = line["seen_at"]
    return {
        "subscription_id": change.subscription_id, "mpn": change.mpn, "customer_id": line["customer_id"],
        "change": change.change, "status": line["status"], "quantity": line["quantity"],
        "previous_quantity": change.previous["quantity"] if change.previous else None,
        "unit_price": money_out(line.get("unit_price")), "unit_cost": money_out(line.get("unit_cost")),
        "currency": line.get("currency") or DEFAULT_CURRENCY,
        "seen_at": seen.isoformat(timespec="milliseconds") if isinstance(seen, dt.datetime) else str(seen),
        "line_version": line["line_version"],
    }


# --- which subscriptions to fetch ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SubscriptionMark:
    """How far our snapshot of one subscription got."""

    last_modified: dt.datetime | None
    detail_fetched_at: dt.datetime | None = None
    unlisted_at: dt.datetime | None = None


# lastModifiedDate has whole seconds: a second change within the second of one we already fetched
# keeps the same stamp. A detail fetched less than this long after its stamp is fetched once more on
# the next run (one extra GET per change, never more: that fetch is stamped well after). 2 s, not 1,
# leaves room for the vendor's clock running ahead of ours.
SAME_STAMP_SECONDS = 2.0


def needs_detail(summary, mark: SubscriptionMark | None, *, full: bool = False,
                 full_since: dt.datetime | None = None) -> bool:
    """Fetch the detail (rate-limited: ~60 a minute) only when the subscription is new to us, its
    lastModifiedDate moved, our last fetch was within SAME_STAMP_SECONDS of that stamp (a later
    change in the same second would look unchanged), it had dropped out of the listing, or a full
    run has not fetched it yet (a resumed full run skips what it already fetched since `full_since`)."""
    if mark is None or mark.last_modified is None or mark.unlisted_at is not None:
        return True
    if utc(mark.last_modified) != utc(summary["lastModifiedDate"]):
        return True
    if (mark.detail_fetched_at is not None and utc(mark.detail_fetched_at) - utc(mark.last_modified)
            < dt.timedelta(seconds=SAME_STAMP_SECONDS)):
        return True
    if full:
        fetched = utc(mark.detail_fetched_at)
        return not (full_since is not None and fetched is not None and fetched >= utc(full_since))
    return False


# --- scheduling --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TenantRuns:
    """What the scheduler knows of one tenant's runs."""

    active: bool = False  # a run is queued or running
    latest: Mapping | None = None  # the newest run: kind, outcome, queued_at, finished_at, retry_after, full_since
    first_queued_at: dt.datetime | None = None
    last_full_queued_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Due:
    kind: str  # incremental | full
    trigger: str  # schedule | nightly | resume
    full_since: dt.datetime | None = None


def nightly_slot(now: dt.datetime, full_hour: int) -> dt.datetime:
    """The latest FULL_SYNC_HOUR_UTC instant at or before now."""
    now = utc(now)
    slot = now.replace(hour=full_hour, minute=0, second=0, microsecond=0)
    return slot if slot <= now else slot - dt.timedelta(days=1)


def sync_due(now: dt.datetime, runs: TenantRuns, *, interval_minutes: float = 15, full_hour: int = 2,
             throttle_retry_seconds: float = 60) -> Due | None:
    """The run to queue for a tenant now, if any.

    - one at a time: nothing while a run is queued or running;
    - a tenant never synced: an incremental run (the first sync fetches every detail anyway);
    - a throttled run resumes (same kind; a full run keeps its full_since, so it does not start over)
      once the vendor's Retry-After (at least `throttle_retry_seconds`) has passed;
    - the nightly full run: once per day after FULL_SYNC_HOUR_UTC (caught up later if missed), for
      tenants whose first run is older than tonight's slot;
    - otherwise an incremental run every `interval_minutes` after the last one was queued.
    """
    if runs.active:
        return None
    latest = runs.latest
    if latest is None:
        return Due("incremental", "schedule")
    now = utc(now)
    if latest.get("outcome") == "throttled":
        finished = utc(latest.get("finished_at") or latest.get("queued_at"))
        wait = max(float(latest.get("retry_after") or 0), throttle_retry_seconds)
        if now >= finished + dt.timedelta(seconds=wait):
            if latest.get("kind") == "full":
                return Due("full", "resume", utc(latest.get("full_since")))
            return Due("incremental", "resume")
        return None
    slot = nightly_slot(now, full_hour)
    first = utc(runs.first_queued_at)
    last_full = utc(runs.last_full_queued_at)
    if first is not None and first < slot and (last_full is None or last_full < slot):
        return Due("full", "nightly")
    if now >= utc(latest["queued_at"]) + dt.timedelta(minutes=interval_minutes):
        return Due("incremental", "schedule")
    return None


def run_outcome(counts: Mapping[str, int]) -> str:
    """A run that went to the end: `partial` when it refused a record or could not read a detail."""
    return "partial" if counts.get("quarantined") or counts.get("details_failed") else "ok"
