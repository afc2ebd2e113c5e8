"""The desired schedule of one contract line, built from LineDesired events (pure, no I/O).

A LineDesired event says "from effective_date on, this contract line says quantity Q at price
P" and carries a desired_version that grows per line. The mapping service sends one event per
breakpoint of its schedule, so one line can have several pending breakpoints (an increase today,
a decrease from the next period). The schedule is what you get by applying every event in
version order, each one replacing the tail of the schedule from its date on:

    apply_event([], e1: 2026-11-20 -> 12, v1)          -> [11-20: 12]
    apply_event(..., e2: 2026-12-01 -> 8, v2)          -> [11-20: 12, 12-01: 8]
    apply_event(..., e3: 2026-11-25 -> 15, v3)         -> [11-20: 12, 11-25: 15]   (v3 drops 12-01)

Events may arrive out of order (several consumers): applying them in version order gives the same
result whatever the arrival order, and an event that a newer one already covers is dropped.

Breakpoints are JSON-ready dicts: {"date": "YYYY-MM-DD", "quantity": int, "unit_price": str,
"unit_cost": str, "version": int, "company_id": str|None}.

Step functions (``expected``): lists of [date_iso, value], sorted, "from this date on"; used for
what we believe the PSA shows.
"""
import datetime as dt
import decimal

MAX_BREAKPOINTS = 48


def _day(value):
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _money(value):
    if value is None:
        return None
    return format(decimal.Decimal(str(value)), "f")


def breakpoint_from_event(event):
    """The breakpoint a (loaded or dumped) LineDesired event stands for."""
    return {"date": _day(event["effective_date"]).isoformat(), "quantity": int(event["quantity"]),
            "unit_price": _money(event.get("unit_price")), "unit_cost": _money(event.get("unit_cost")),
            "version": int(event["desired_version"]), "company_id": event.get("company_id")}


def apply_event(breakpoints, bp):
    """(new breakpoints, accepted): fold bp into the schedule in version order.

    accepted is False when the event changes nothing: a duplicate version, or a newer event with
    an earlier or equal date already covers it.
    """
    if any(b["version"] == bp["version"] for b in breakpoints):
        return list(breakpoints), False
    out = []
    for e in sorted([*breakpoints, bp], key=lambda b: b["version"]):
        out = [b for b in out if b["date"] < e["date"]] + [e]
    out.sort(key=lambda b: b["date"])
    accepted = any(b["version"] == bp["version"] for b in out)
    return out, accepted


def prune(breakpoints, keep_from):
    """Drop breakpoints that no longer matter: everything before the last breakpoint on or
    before ``keep_from`` (that one defines the state at keep_from), and the oldest beyond
    MAX_BREAKPOINTS."""
    if keep_from is None or not breakpoints:
        return list(breakpoints)[-MAX_BREAKPOINTS:]
    day = _day(keep_from).isoformat()
    base = max((i for i, b in enumerate(breakpoints) if b["date"] <= day), default=0)
    return list(breakpoints[base:])[-MAX_BREAKPOINTS:]


def desired_at(breakpoints, day):
    """The breakpoint in force on ``day`` (None before the first)."""
    iso = _day(day).isoformat()
    found = None
    for b in breakpoints:
        if b["date"] <= iso:
            found = b
        else:
            break
    return found


def pending(breakpoints, pending_from):
    if pending_from is None:
        return []
    iso = _day(pending_from).isoformat()
    return [b for b in breakpoints if b["date"] >= iso]


def final(breakpoints):
    return breakpoints[-1] if breakpoints else None


# --- step functions -------------------------------------------------------------------------
def step_at(steps, day):
    """Value of a step function on ``day``; None before its first step (or no steps)."""
    if not steps:
        return None
    iso = _day(day).isoformat()
    value = None
    for start, v in steps:
        if start <= iso:
            value = v
        else:
            break
    return value


def merge_steps(old, new):
    """``new`` replaces ``old`` from new's first date on."""
    if not new:
        return list(old or [])
    first = new[0][0]
    return [list(s) for s in (old or []) if s[0] < first] + [list(s) for s in new]
