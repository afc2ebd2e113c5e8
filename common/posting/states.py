r"""Ledger states of one planned PSA operation, and which moves between them are allowed.

    planned -> posting -> posted
                      \-> failed -> posting (retried with backoff) ... -> dead
                      \-> dead (the vendor refused it, or the last attempt failed)
    planned | failed | dead | held -> superseded (a newer plan no longer needs it)
    held: the PSA line was edited by hand and the tenant holds such lines for review.

``posting`` is also "outcome unknown": a row left in it (timeout, dropped response, the replica
died mid-call) is never re-sent as is - the next cycle re-reads the PSA and either confirms it
(posted) or marks it failed and plans again.
"""
PLANNED = "planned"
POSTING = "posting"
POSTED = "posted"
FAILED = "failed"
DEAD = "dead"
HELD = "held"
SUPERSEDED = "superseded"

STATES = (PLANNED, POSTING, POSTED, FAILED, DEAD, HELD, SUPERSEDED)
OPEN = (PLANNED, POSTING, FAILED, HELD)           # still wants something to happen
FAILURE_LOG = (DEAD, FAILED, HELD)                 # what the failure log lists
RETRYABLE = (DEAD, FAILED, HELD)                   # what retry() accepts
REPLACEABLE = (PLANNED, FAILED, DEAD, HELD)        # what a newer plan may supersede

TRANSITIONS = {
    PLANNED: {POSTING, SUPERSEDED, HELD},
    POSTING: {POSTED, FAILED, DEAD, PLANNED},      # PLANNED: the request provably never left
    FAILED: {POSTING, DEAD, SUPERSEDED, PLANNED, HELD},
    DEAD: {PLANNED, SUPERSEDED},                   # retry() or a newer plan
    HELD: {SUPERSEDED, PLANNED},
    POSTED: set(),
    SUPERSEDED: {PLANNED},                         # the same op is needed again (never applied)
}


def can_move(old, new):
    return new in TRANSITIONS.get(old, set())


# group status (posting_groups.status): what the portal shows per contract line
IN_SYNC = "in_sync"
PENDING = "pending"
WAITING = "waiting"       # failed attempt or budget: retried at due_at
LINE_HELD = "held"
LINE_FAILED = "failed"    # a dead operation: needs a person (retry)
GROUP_STATUSES = (IN_SYNC, PENDING, WAITING, LINE_HELD, LINE_FAILED)
