"""Marketplace rules with no I/O of their own: what counts as a change worth announcing."""

CUSTOMER_FIELDS = ("name", "status", "domain")


def customer_snapshot(record):
    """The part of a marketplace customer record we keep and compare."""
    return {"name": record["name"].strip(), "status": record.get("status") or "active",
            "domain": (record.get("domain") or None)}


def customer_changed(previous, current):
    """True when a customer is new or one of the fields we bill by moved."""
    if previous is None:
        return True
    return any(previous.get(f) != current.get(f) for f in CUSTOMER_FIELDS)
